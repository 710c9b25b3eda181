// crash_resume_test.cpp: nothing is lost on a crash. A run is killed with SIGKILL at random
// moments - inside steps, inside checkpoint writes - and resumed each time; the finished run's
// losses, validation losses and final weights equal an uninterrupted run's bit for bit (CPU).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <thread>

#include "tests/support/helpers.h"

namespace loom::test {
namespace {

// step -> the metrics line without timings (the last line written for that step wins: a
// resumed run repeats the steps after its checkpoint).
std::map<int64_t, std::string> losses(const std::string& run_dir) {
  std::map<int64_t, std::string> by_step;
  for (auto j : read_metrics(run_dir)) {
    for (const char* k : {"ms", "tokens_per_s", "mfu"}) j.erase(k);
    by_step[j["step"].get<int64_t>()] = j.dump();
  }
  return by_step;
}

TEST(CrashResume, SigkillAtRandomMomentsThenResumeEqualsAnUninterruptedRun) {
  TempDir t;
  const std::string data = prepare_tiny_data(t.str(), 300000, 5);
  const int steps = 40;
  // Every step checkpoints, so kills land in writes as often as in steps.
  auto config = [&](const std::string& run) {
    std::ofstream(t / (run + ".toml")) << tiny_config(data, t / run, steps);
    return t / (run + ".toml");
  };
  const std::vector<std::string> common = {"--checkpoint.every", "1", "--checkpoint.keep", "2"};
  std::vector<std::string> ref_args = {"train", "--config", config("ref")};
  ref_args.insert(ref_args.end(), common.begin(), common.end());
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_EQ(run_loom(ref_args).rc, 0);
  const double run_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  const std::string cfg = config("crash");
  Rng rng(20261204);
  int kills = 0;
  for (int attempt = 0; attempt < 8 && kills < 4; ++attempt) {
    const bool resume = fs::exists(t / "crash/latest");
    // The steps this attempt has left, from the checkpoint it resumes.
    int done_steps = 0;
    if (resume) done_steps = std::stoi(fs::read_symlink(t / "crash/latest").filename().string().substr(5));
    if (done_steps >= steps - 2) break;
    std::vector<std::string> args = {"train", "--config", cfg};
    args.insert(args.end(), common.begin(), common.end());
    if (resume) args.push_back("--resume");
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      const int devnull = ::open("/dev/null", O_WRONLY);
      dup2(devnull, 1);
      dup2(devnull, 2);
      std::vector<char*> argv{const_cast<char*>("loom")};
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(loom_binary().c_str(), argv.data());
      _exit(127);
    }
    // Kill on progress, not on the clock (the machine's speed varies): once the run has
    // logged a randomly chosen step, wait a random part of a step - landing inside the next
    // step or inside the checkpoint write that follows every step - and kill it.
    // (At least two steps past the checkpoint: a killed run's log may hold one step more than
    // its last checkpoint until the resumed run trims it.)
    const int64_t target = done_steps + 2 + static_cast<int64_t>(rng.below(static_cast<uint64_t>((steps - done_steps) / 3)));
    const double step_s = run_s / steps;
    bool exited = false;
    int st = 0;
    while (!exited) {
      const auto m = read_metrics(t / "crash");
      if (!m.empty() && m.back()["step"].get<int64_t>() >= target) break;
      exited = waitpid(pid, &st, WNOHANG) == pid;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    if (exited) continue;
    std::this_thread::sleep_for(std::chrono::duration<double>(step_s * rng.uniform_double()));
    const bool killed = kill(pid, SIGKILL) == 0;
    waitpid(pid, &st, 0);
    if (killed && WIFSIGNALED(st)) ++kills;
  }
  EXPECT_GE(kills, 3) << "too few kills landed inside the run";
  std::printf("(%d runs killed with SIGKILL, then resumed)\n", kills);
  // Finish the run.
  std::vector<std::string> finish = {"train", "--config", cfg};
  finish.insert(finish.end(), common.begin(), common.end());
  if (fs::exists(t / "crash/latest")) finish.push_back("--resume");
  const RunResult done = run_loom(finish);
  ASSERT_EQ(done.rc, 0) << done.err;

  const auto want = losses(t / "ref"), got = losses(t / "crash");
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [step, line] : want) EXPECT_EQ(got.at(step), line) << "step " << step;
  EXPECT_EQ(read_bytes(t / "crash/latest/model.safetensors"), read_bytes(t / "ref/latest/model.safetensors"));
  // Nothing half-written stays behind.
  for (const auto& e : fs::directory_iterator(t / "crash/checkpoints"))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
}

}  // namespace
}  // namespace loom::test
