// run_folder.cpp: see run_folder.h.
#include "launch/run/run_folder.h"

#include <algorithm>
#include <filesystem>

#include "engine/io/atomic_file.h"

namespace fs = std::filesystem;

namespace loom {

namespace {
volatile std::sig_atomic_t g_stop_signal = 0;
void on_stop_signal(int s) { g_stop_signal = s; }
}  // namespace

RunFolder::RunFolder(const Config& cfg, bool resume, Comm& comm) : comm_(comm), dir_(cfg.log.run_dir) {
  const fs::path run_dir(dir_);
  std::error_code ec;
  if (!resume)
    LOOM_USER_CHECK(!fs::exists(run_dir / "latest", ec), dir_,
                    ": already holds a run (latest checkpoint present); use --resume to continue it or choose "
                    "another --log.run_dir");
  if (comm.rank() == 0) {
    fs::create_directories(run_dir, ec);
    LOOM_USER_CHECK(!ec, dir_, ": cannot create run folder: ", ec.message());
    write_file_atomic((run_dir / "config.toml").string(), config_to_toml(cfg));
    metrics_.open(run_dir / "metrics.jsonl", resume ? std::ios::app : std::ios::trunc);
    LOOM_USER_CHECK(metrics_, (run_dir / "metrics.jsonl").string(), ": cannot write");
  }
  g_stop_signal = 0;
  old_int_ = std::signal(SIGINT, on_stop_signal);
  old_term_ = std::signal(SIGTERM, on_stop_signal);
}

RunFolder::~RunFolder() {
  std::signal(SIGINT, old_int_);
  std::signal(SIGTERM, old_term_);
}

void RunFolder::log(const nlohmann::json& j) {
  if (comm_.rank() != 0) return;
  metrics_ << j.dump() << "\n";
  metrics_.flush();
}

std::string RunFolder::checkpoint(const Config& cfg, const std::string& tokenizer, const std::vector<float>& params,
                                  const std::vector<float>& m, const std::vector<float>& v, const TrainProgress& p,
                                  const CheckpointExtra& extra) {
  std::string dir;
  if (comm_.rank() == 0) dir = save_checkpoint(dir_, cfg, tokenizer, params, m, v, p, cfg.checkpoint.keep, extra);
  if (comm_.world() > 1) comm_.barrier(std::max(600.0, comm_timeout_s()));  // rank 0 may take a while to write
  return dir;
}

int RunFolder::signal() const { return g_stop_signal; }

bool RunFolder::agree_stop(bool here) {
  return comm_.world() > 1 ? comm_.allreduce_scalar(here ? 1.0 : 0.0) > 0 : here;
}

}  // namespace loom
