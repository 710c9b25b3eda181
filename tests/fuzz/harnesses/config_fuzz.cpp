// config_fuzz.cpp: parse_config_text on a TOML text and command-line overrides (the input's
// two parts; overrides one "key=value" a line). A config it accepts must read back from the
// resolved TOML that a run folder saves (config_to_toml), to the same config.
#include "fuzz_support.h"
#include "launch/run/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loom;
  const auto parts = fuzz::split_parts(data, size, 2);
  Overrides overrides;
  std::string_view rest = parts[1];
  while (!rest.empty()) {
    const size_t nl = rest.find('\n');
    const std::string_view line = rest.substr(0, nl);
    rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
    if (line.empty()) continue;
    const size_t eq = line.find('=');
    overrides.emplace_back(std::string(line.substr(0, eq)), eq == std::string_view::npos ? "" : std::string(line.substr(eq + 1)));
  }
  Config c;
  if (!fuzz::accepts([&] { c = parse_config_text(parts[0], "fuzz.toml", overrides); })) return 0;
  const std::string resolved = config_to_toml(c);
  Config again;
  fuzz::require(fuzz::accepts([&] { again = parse_config_text(resolved, "config.toml", {}); }),
                "the resolved config does not read back:\n" + resolved);
  fuzz::require(config_to_toml(again) == resolved, "the resolved config reads back different:\n" + resolved);
  return 0;
}
