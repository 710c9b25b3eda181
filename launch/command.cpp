// command.cpp: the helpers commands share (command.h).
#include "launch/command.h"

#include <CLI/CLI.hpp>
#include <unistd.h>

#include <cstdio>

#include "core/check.h"

namespace loom {

bool Command::parsed() const { return cmd_->parsed(); }

CLI::App& command_group(CLI::App& app, const std::string& name, const std::string& help) {
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; }))
    if (sub->get_name() == name) return *sub;
  CLI::App* group = app.add_subcommand(name, help);
  group->require_subcommand(1);
  return *group;
}

CLI::App& bench_group(CLI::App& app) { return command_group(app, "bench", "benchmarks"); }

Overrides parse_overrides(const std::vector<std::string>& extras) {
  Overrides o;
  for (size_t i = 0; i < extras.size(); ++i) {
    const std::string& a = extras[i];
    LOOM_USER_CHECK(a.rfind("--", 0) == 0 && a.size() > 2, "unexpected argument '", a,
                    "' (config overrides look like --section.key value)");
    std::string key = a.substr(2), value;
    const auto eq = key.find('=');
    if (eq != std::string::npos) {
      value = key.substr(eq + 1);
      key = key.substr(0, eq);
    } else {
      LOOM_USER_CHECK(i + 1 < extras.size(), a, ": missing value");
      value = extras[++i];
    }
    o.emplace_back(key, value);
  }
  return o;
}

bool on_terminal() { return isatty(fileno(stderr)) && isatty(fileno(stdout)); }

}  // namespace loom
