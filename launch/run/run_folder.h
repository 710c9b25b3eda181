// run_folder.h: the run folder (log.run_dir) as one run owns it: config.toml, metrics.jsonl,
// tb/ (TensorBoard event files: tensorboard.h), checkpoints/ and latest (checkpoint.h), and the
// run's stop signals. The lead rank locks the
// folder for the whole run (flock on <run_dir>/.lock, released when the process ends however
// it ends) and writes; every rank takes part in the collective parts (checkpoint barrier,
// stop agreement).
#pragma once
#include <csignal>
#include <fstream>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/comm/comm.h"
#include "launch/run/checkpoint.h"
#include "launch/run/config.h"
#include "launch/run/tensorboard.h"

namespace loom {

class RunFolder {
 public:
  // The lead rank creates the folder and locks it: a second run on the same folder is a
  // UserError naming the holder (pid, host). A fresh run needs a folder without a run in it
  // (no `latest`). What an interrupted writer left (temporary files and folders) is removed.
  // SIGINT and SIGTERM are caught from here on: the loop finishes its step, checkpoints and
  // stops.
  RunFolder(const Config& cfg, bool resume, Comm& comm);
  // After the checkpoint to resume (if any) is loaded: writes config.toml and opens
  // metrics.jsonl. Resuming from step `resume_step` keeps the lines of steps up to it (the
  // steps after it will be run again) and drops a torn last line; a fresh run starts it empty.
  // Unless log.tensorboard is false, also opens a new TensorBoard event file in tb/.
  void open_logs(const Config& cfg, int64_t resume_step);
  ~RunFolder();
  RunFolder(const RunFolder&) = delete;
  RunFolder& operator=(const RunFolder&) = delete;

  const std::string& dir() const { return dir_; }
  // One line of metrics.jsonl, and its scalars into the event file (lead rank only; others
  // ignore it).
  void log(const nlohmann::json& j);
  // Writes a checkpoint (lead rank), then every rank waits for it. Returns its folder.
  std::string checkpoint(const Config& cfg, const std::string& tokenizer, const std::vector<float>& params,
                         const std::vector<float>& m, const std::vector<float>& v, const TrainProgress& p,
                         const CheckpointExtra& extra);
  // The signal that asked this process to stop (0: none).
  int signal() const;
  // Whether the ranks stop after this step: any rank wanting to stops them all, so that every
  // rank stops at the same step (a signal may reach them at different steps).
  bool agree_stop(bool here);

 private:
  void lock();

  Comm& comm_;
  std::string dir_;
  int lock_fd_ = -1;
  std::ofstream metrics_;
  std::unique_ptr<TensorBoardLog> events_;
  using Handler = void (*)(int);
  Handler old_int_ = nullptr, old_term_ = nullptr;
};

}  // namespace loom
