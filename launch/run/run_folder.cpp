// run_folder.cpp: see run_folder.h.
#include "launch/run/run_folder.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
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
  if (comm.rank() == 0) {
    fs::create_directories(run_dir, ec);
    LOOM_USER_CHECK(!ec, dir_, ": cannot create run folder: ", ec.message());
    lock();
  }
  if (!resume)
    LOOM_USER_CHECK(!fs::exists(run_dir / "latest", ec) && !fs::is_symlink(run_dir / "latest", ec), dir_,
                    ": already holds a run (latest checkpoint present); use --resume to continue it or choose "
                    "another --log.run_dir");
  if (comm.rank() == 0) {
    remove_stale_temps(dir_);
    if (fs::is_directory(run_dir / "checkpoints", ec)) remove_stale_temps((run_dir / "checkpoints").string());
  }
  g_stop_signal = 0;
  old_int_ = std::signal(SIGINT, on_stop_signal);
  old_term_ = std::signal(SIGTERM, on_stop_signal);
}

void RunFolder::lock() {
  const std::string path = dir_ + "/.lock";
  lock_fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
  LOOM_USER_CHECK(lock_fd_ >= 0, path, ": cannot open the run folder's lock: ", std::strerror(errno));
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char holder[256] = {};
    const ssize_t n = ::pread(lock_fd_, holder, sizeof holder - 1, 0);
    std::string who = n > 0 ? std::string(holder, static_cast<size_t>(n)) : std::string("unknown");
    while (!who.empty() && (who.back() == '\n' || who.back() == ' ')) who.pop_back();
    ::close(lock_fd_);
    lock_fd_ = -1;
    LOOM_USER_CHECK(err != EWOULDBLOCK, dir_, ": in use by another run (", who,
                    "); wait for it to end or choose another --log.run_dir");
    user_error(path, ": cannot lock the run folder: ", std::strerror(err));
  }
  char host[128] = "?";
  ::gethostname(host, sizeof host - 1);
  const std::string me = "pid " + std::to_string(::getpid()) + " on " + host + "\n";
  if (::ftruncate(lock_fd_, 0) != 0 || ::pwrite(lock_fd_, me.data(), me.size(), 0) != static_cast<ssize_t>(me.size()))
    user_error(path, ": cannot write the run folder's lock: ", std::strerror(errno));
}

void RunFolder::open_logs(const Config& cfg, int64_t resume_step) {
  if (comm_.rank() != 0) return;
  const fs::path run_dir(dir_);
  write_file_atomic((run_dir / "config.toml").string(), config_to_toml(cfg));
  const std::string path = (run_dir / "metrics.jsonl").string();
  if (resume_step >= 0) {
    // Keep what the checkpoint covers; a crash may have left later steps (run again now) and
    // a torn last line.
    std::ifstream in(path);
    std::string kept, line;
    while (std::getline(in, line)) {
      const auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) continue;
      if (j["step"].get<int64_t>() <= resume_step) kept += line + "\n";
    }
    write_file_atomic(path, kept);
  }
  metrics_.open(path, resume_step >= 0 ? std::ios::app : std::ios::trunc);
  LOOM_USER_CHECK(metrics_, path, ": cannot write");
  if (cfg.log.tensorboard) events_ = open_tensorboard_log((run_dir / "tb").string(), config_to_toml(cfg), resume_step);
}

RunFolder::~RunFolder() {
  std::signal(SIGINT, old_int_);
  std::signal(SIGTERM, old_term_);
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

void RunFolder::log(const nlohmann::json& j) {
  if (comm_.rank() != 0) return;
  metrics_ << j.dump() << "\n";
  metrics_.flush();
  if (events_) events_->log(j);
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
