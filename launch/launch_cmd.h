// launch_cmd.h: `loom launch` (start the ranks of one node, torchrun-style) and `loom bench
// comm` (all-reduce bus bandwidth), plus the communicator `loom train` builds from the
// environment. docs/distributed.md is the user's guide.
#pragma once
#include <CLI/CLI.hpp>
#include <memory>
#include <string>
#include <vector>

#include "engine/comm/comm.h"
#include "engine/train/config.h"

namespace loom {

// The exit code of a rank whose collective failed because another rank was lost (CommError);
// `loom launch` reports the rank that failed first for another reason.
constexpr int kCommLostExit = 3;

class LaunchCli {
 public:
  // Adds `launch` to app and `comm` to the bench subcommand.
  LaunchCli(CLI::App& app, CLI::App& bench);
  // After parsing: the exit code of whichever of the two ran, or -1 when neither was given.
  int run() const;

 private:
  CLI::App *launch_ = nullptr, *bench_ = nullptr;
  int nproc_ = 1, nnodes_ = 1, node_rank_ = 0, port_ = 0;
  std::string addr_ = "127.0.0.1";
  std::vector<std::string> cmd_;
  std::string bench_device_ = "cpu";
  std::vector<double> bench_mib_{0.0625, 1, 4, 16, 64};
  int bench_iters_ = 10, bench_nproc_ = 2;
};

// The communicator of a training run, from the environment (rank discovery order in comm.h).
// With several ranks, device = "auto" is resolved here (cuda when NCCL and a GPU are present),
// since every rank must agree before the backend is made.
std::unique_ptr<Comm> comm_for_train(Config& cfg);

}  // namespace loom
