// command.cpp: the helpers commands share (command.h).
#include "launch/command.h"

#include <CLI/CLI.hpp>
#include <unistd.h>

#include <cstdio>

#include "core/check.h"
#include "launch/run/checkpoint.h"

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

std::string checkpoint_data_path(const CheckpointData& ck, const std::string& data_flag) {
  if (!data_flag.empty()) return data_flag;
  LOOM_USER_CHECK(!ck.config_toml.empty(), ck.dir, ": no config.toml; pass --data");
  return parse_config_text(ck.config_toml, ck.dir + "/config.toml", {}).data.path;
}

const std::vector<const char*>& KnnFlags::names() {
  static const std::vector<const char*> n = {"--knn",       "--knn-k",     "--knn-lambda", "--knn-temperature",
                                             "--knn-probe", "--knn-gate"};
  return n;
}

void KnnFlags::add(CLI::App& cmd, const std::function<void(CLI::Option*)>& each) {
  auto added = [&](CLI::Option* o) {
    if (each) each(o);
  };
  added(cmd.add_option("--knn", file,
                       "sequence-to-sequence checkpoints: mix this datastore's neighbours (loom knn) into each "
                       "decoding step"));
  added(cmd.add_option("--knn-k", options.k, "with --knn: neighbours asked for a step")->capture_default_str());
  added(cmd.add_option("--knn-lambda", options.lambda, "with --knn: the neighbours' share of the mixture")
            ->capture_default_str());
  added(cmd.add_option("--knn-temperature", options.temperature,
                       "with --knn: neighbour i weighs exp(-squared distance / this)")
            ->capture_default_str());
  added(cmd.add_option("--knn-probe", options.probe, "with --knn: lists of keys scanned a step (all of them: exact search)")
            ->capture_default_str());
  added(cmd.add_option("--knn-gate", options.gate,
                       "with --knn: the share is lambda exp(-nearest squared distance / (this x |state|^2)); 0: lambda")
            ->capture_default_str());
}

void KnnFlags::check(const CLI::App& cmd) const {
  for (const char* f : names())
    LOOM_USER_CHECK(cmd.count(f) == 0 || !file.empty(), f, ": needs --knn FILE");
  check_knn_options(options);
}

std::unique_ptr<KnnStore> KnnFlags::load(const CheckpointData& ck) const {
  if (file.empty()) return nullptr;
  return std::make_unique<KnnStore>(KnnStore::load(file, ck.model, ck.params));
}

}  // namespace loom
