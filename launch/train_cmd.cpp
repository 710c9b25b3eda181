// train_cmd.cpp: `loom train --config FILE [--device D] [--resume] [--profile-steps A:B]
// [--section.key value ...]` (launch/run/trainer.h). The ranks of a data-parallel job come
// from the environment (loom launch, torchrun, srun, mpirun: launch/run/run_comm.h).
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "core/check.h"
#include "launch/command.h"
#include "launch/run/run_comm.h"
#include "launch/run/trainer.h"

namespace loom {

namespace {

class TrainCommand final : public Command {
 public:
  explicit TrainCommand(CLI::App& app)
      : Command(app.add_subcommand("train", "pretrain a model; any config key can be overridden as --section.key "
                                            "value")) {
    cmd_->add_option("--config", config_, "TOML config (configs/default.toml, configs/tiny.toml, ...)")->required();
    cmd_->add_option("--device", device_, "auto | cpu | cuda (overrides the config's device)");
    cmd_->add_flag("--resume", resume_, "continue the run in log.run_dir from its latest checkpoint");
    cmd_->add_option("--profile-steps", profile_,
                     "A:B: bracket steps A..B with cudaProfilerStart/Stop (nsys --capture-range=cudaProfilerApi)");
    cmd_->allow_extras();
    cmd_->footer("config keys: " + [] {
      std::string s;
      for (const auto& k : config_keys()) s += (s.empty() ? "" : ", ") + k;
      return s;
    }());
  }
  int run() override {
    Overrides ov = parse_overrides(cmd_->remaining());
    if (!device_.empty()) ov.emplace_back("device", device_);
    Config cfg = load_config(config_, ov);
    TrainOptions opt;
    opt.resume = resume_;
    if (!profile_.empty()) {
      long long a = 0, b = 0;
      char tail = 0;
      LOOM_USER_CHECK(std::sscanf(profile_.c_str(), "%lld:%lld%c", &a, &b, &tail) == 2 && a >= 1 && b >= a,
                      "--profile-steps: expected A:B with 1 <= A <= B, got '", profile_, "'");
      opt.profile_from = a;
      opt.profile_to = b;
    }
    if (const char* f = std::getenv("LOOM_FAULT_NONFINITE"); f && *f) {
      // RANK:STEP[,STEP...]: a fault drill (tests), never set in a real run.
      const std::string v = f;
      const auto colon = v.find(':');
      LOOM_USER_CHECK(colon != std::string::npos, "LOOM_FAULT_NONFINITE: expected RANK:STEP[,STEP...], got '", v, "'");
      opt.fault_rank = std::atoi(v.substr(0, colon).c_str());
      for (size_t i = colon + 1; i < v.size();) {
        const size_t e = std::min(v.find(',', i), v.size());
        opt.fault_steps.push_back(std::atoll(v.substr(i, e - i).c_str()));
        i = e + 1;
      }
    }
    const std::unique_ptr<Comm> comm = comm_for_run(cfg);
    opt.comm = comm.get();
    train(cfg, opt);  // an interrupted run has checkpointed: success (exit 0) as well
    return 0;
  }

 private:
  std::string config_, device_, profile_;
  bool resume_ = false;
};

}  // namespace

std::unique_ptr<Command> add_train_command(CLI::App& app) { return std::make_unique<TrainCommand>(app); }

}  // namespace loom
