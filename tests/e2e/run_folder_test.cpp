// run_folder_test.cpp: a run folder belongs to one run at a time, and nothing a crash, a full
// disk or a hostile file system throws at it loses or corrupts a checkpoint: the lock and its
// error, stale temporary files removed at start, a failed checkpoint write leaving nothing
// behind and the previous checkpoint whole, temporary files never following a planted symlink,
// a shard truncated under a running loader, pruning by step number past 8 digits, and
// checkpoint state files that lie.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "engine/data/shard.h"
#include "engine/io/atomic_file.h"
#include "launch/run/checkpoint.h"
#include "tests/support/helpers.h"

namespace loom::test {
namespace {

// A tiny run folder with `steps` steps done (checkpoint every step).
std::string trained_run(const TempDir& t, int steps, const std::string& name = "run") {
  const std::string data = prepare_tiny_data(t.str());
  std::ofstream(t / (name + ".toml")) << tiny_config(data, t / name, steps);
  const RunResult r = run_loom({"train", "--config", t / (name + ".toml"), "--checkpoint.every", "1"});
  EXPECT_EQ(r.rc, 0) << r.err;
  return t / name;
}

TEST(RunFolder, SecondRunOnTheSameFolderIsRefusedNamingTheHolder) {
  TempDir t;
  const std::string data = prepare_tiny_data(t.str());
  std::ofstream(t / "c.toml") << tiny_config(data, t / "run", 100000);
  // The first run holds the folder until it is stopped.
  const pid_t first = fork();
  ASSERT_GE(first, 0);
  if (first == 0) {
    const std::string cfg = t / "c.toml";
    execl(loom_binary().c_str(), "loom", "train", "--config", cfg.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // Wait until it has locked the folder (it writes config.toml right after locking).
  for (int i = 0; i < 400 && !fs::exists(t / "run/config.toml"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  const RunResult second = run_loom({"train", "--config", t / "c.toml", "--resume"});
  kill(first, SIGTERM);  // finishes its step, checkpoints, exits 0
  int st = 0;
  waitpid(first, &st, 0);
  expect_user_error(second, "in use by another run (pid " + std::to_string(first));
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << st;
  // Released with the process: the folder can be resumed now.
  const RunResult third = run_loom({"train", "--config", t / "c.toml", "--resume", "--train.steps", "1"});
  EXPECT_EQ(third.rc, 0) << third.err;
}

TEST(RunFolder, StaleTemporariesAreRemovedAtStart) {
  TempDir t;
  const std::string run = trained_run(t, 2);
  fs::create_directories(run + "/checkpoints/step_00000003.tmp-999999-0");
  std::ofstream(run + "/checkpoints/step_00000003.tmp-999999-0/model.safetensors") << std::string(4096, 'x');
  std::ofstream(run + "/config.toml.tmp-999999-1") << "x";
  const RunResult r = run_loom({"train", "--config", t / "run.toml", "--resume", "--train.steps", "3"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_FALSE(fs::exists(run + "/checkpoints/step_00000003.tmp-999999-0"));
  EXPECT_FALSE(fs::exists(run + "/config.toml.tmp-999999-1"));
  EXPECT_TRUE(fs::exists(run + "/checkpoints/step_00000003/model.safetensors"));
}

TEST(RunFolder, FailedCheckpointWriteLeavesNothingAndTheRunResumes) {
  TempDir t;
  const std::string run = trained_run(t, 2);
  // A file-size limit stands in for a full disk: the next checkpoint's model file cannot be
  // written (EFBIG; SIGXFSZ ignored so the write fails instead of killing the process).
  const std::string cmd = "trap '' XFSZ; ulimit -f 8; exec '" + loom_binary() + "' train --config '" +
                          (t / "run.toml") + "' --resume --train.steps 4 --checkpoint.every 1 >'" + (t / "o") +
                          "' 2>'" + (t / "e") + "'";
  const int st = std::system(cmd.c_str());
  EXPECT_EQ(WEXITSTATUS(st), 2) << read_bytes(t / "e");
  EXPECT_NE(read_bytes(t / "e").find("loom: error: "), std::string::npos) << read_bytes(t / "e");
  for (const auto& e : fs::directory_iterator(run + "/checkpoints"))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
  EXPECT_EQ(fs::read_symlink(run + "/latest").filename().string(), "step_00000002");
  const RunResult again = run_loom({"train", "--config", t / "run.toml", "--resume", "--train.steps", "4"});
  EXPECT_EQ(again.rc, 0) << again.err;
}

TEST(RunFolder, TemporaryFilesNeverFollowAPlantedSymlink) {
  TempDir t;
  const std::string victim = t / "victim", target = t / "out.txt";
  std::ofstream(victim) << "precious";
  // The next temporary names this process will use, each planted as a symlink to the victim.
  const std::string seen = temp_sibling(target, ".tmp-");
  const std::string stem = seen.substr(0, seen.rfind('-') + 1);
  const long next = std::stol(seen.substr(seen.rfind('-') + 1)) + 1;
  for (long k = next; k < next + 64; ++k) fs::create_symlink(victim, stem + std::to_string(k));
  try {
    write_file_atomic(target, "new contents");
  } catch (const UserError&) {
    // Refusing is fine; writing through the link is not.
  }
  EXPECT_EQ(read_bytes(victim), "precious");
}

TEST(RunFolder, ShardTruncatedWhileInUseIsAnErrorNotABusError) {
  TempDir t;
  std::vector<uint32_t> tokens(50000);
  Rng r(3);
  for (auto& x : tokens) x = static_cast<uint32_t>(1 + r.below(255));
  write_shard(t / "s.bin", tokens, 256);
  Shard s(t / "s.bin");
  WindowLoader loader(s, 64, 1);
  std::vector<int32_t> x(8 * 64), y(x.size());
  loader.next_batch(8, 0, 1, x.data(), y.data());
  fs::resize_file(t / "s.bin", 1000);
  try {
    for (int i = 0; i < 100; ++i) loader.next_batch(8, 0, 1, x.data(), y.data());
    ADD_FAILURE() << "reading a truncated shard did not fail";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find(t / "s.bin"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("shorter than when it was opened"), std::string::npos) << e.what();
  }
}

TEST(RunFolder, PruningKeepsTheNewestByStepNumberPastEightDigits) {
  TempDir t;
  const std::string run = trained_run(t, 1);
  const CheckpointData ck = load_checkpoint(run, true);
  Config cfg = parse_config_text(ck.config_toml, "config.toml", {});
  cfg.model = ck.model;
  TrainProgress p = ck.progress;
  for (int64_t step : {99999999LL, 100000000LL, 100000001LL}) {
    p.step = step;
    save_checkpoint(run, cfg, ck.tokenizer, ck.params, ck.m, ck.v, p, 2);
  }
  EXPECT_FALSE(fs::exists(run + "/checkpoints/step_99999999"));
  EXPECT_TRUE(fs::exists(run + "/checkpoints/step_100000000"));
  EXPECT_TRUE(fs::exists(run + "/checkpoints/step_100000001"));
  EXPECT_EQ(fs::read_symlink(run + "/latest").filename().string(), "step_100000001");
}

TEST(RunFolder, LyingStateFilesAndSymlinkLoopsAreOneLineErrors) {
  TempDir t;
  const std::string run = trained_run(t, 1);
  const std::string state = run + "/latest/state.json";
  const std::string good = read_bytes(state);
  for (const std::string bad :
       {std::string("{\"step\": -100, \"tokens_seen\": 0, \"skipped_steps\": 0, \"loader_rng\": [\"1\",\"2\",\"3\",\"4\"]}"),
        std::string("{\"step\": 1e30, \"tokens_seen\": 0, \"skipped_steps\": 0, \"loader_rng\": [\"1\",\"2\",\"3\",\"4\"]}"),
        std::string("{\"step\": 1, \"tokens_seen\": 0, \"skipped_steps\": 5, \"loader_rng\": [\"1\",\"2\",\"3\",\"4\"]}"),
        std::string("{\"step\": 1, \"tokens_seen\": 0, \"skipped_steps\": 0, \"loader_rng\": [\"1\",\"x\",\"3\",\"4\"]}"),
        std::string("[1, 2]")}) {
    std::ofstream(state) << bad;
    expect_user_error(run_loom({"train", "--config", t / "run.toml", "--resume", "--train.steps", "2"}),
                      "state.json: invalid state file");
  }
  std::ofstream(state) << good;
  TempDir loop;
  fs::create_symlink("latest", loop / "latest");
  expect_user_error(run_loom({"sample", "--checkpoint", loop.str(), "--prompt", "a"}), loop.str());
}

}  // namespace
}  // namespace loom::test
