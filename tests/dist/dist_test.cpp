// dist_test.cpp: data parallelism on CPU ranks (Gloo). Two ranks on global batch G train like
// one rank on G (GPT and LSTM, through `loom launch`); ZeRO-1 equals plain data parallelism; a
// checkpoint written by two ranks resumes under two ranks bit-exactly; a killed rank ends the
// job with an error naming it, within 60 s; a missing rank 0 is a rendezvous error naming
// MASTER_ADDR:MASTER_PORT.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>
#include <thread>

#include "engine/comm/comm.h"
#include "engine/data/corpus.h"
#include "launch/run/checkpoint.h"
#include "launch/run/trainer.h"
#include "tests/support/helpers.h"

namespace loom::test {
namespace {

// Worst |a - b| - rtol |b| over the final weights of two runs.
double weight_excess(const std::string& a, const std::string& b, double rtol, double* worst_abs) {
  const CheckpointData ca = load_checkpoint(a, false), cb = load_checkpoint(b, false);
  EXPECT_EQ(ca.params.size(), cb.params.size());
  double excess = -1e30;
  *worst_abs = 0;
  for (size_t i = 0; i < std::min(ca.params.size(), cb.params.size()); ++i) {
    const double d = std::fabs(ca.params[i] - cb.params[i]);
    EXPECT_FALSE(std::isnan(d)) << i;
    *worst_abs = std::max(*worst_abs, d);
    excess = std::max(excess, d - rtol * std::fabs(cb.params[i]));
  }
  return excess;
}

// Same per-step losses (fp32 reduction order: the sum of two half-batch gradients is not the
// full-batch gradient bit for bit) and the same final weights.
void expect_same_training(const std::string& one, const std::string& two, double atol) {
  const auto a = read_metrics(one), b = read_metrics(two);
  ASSERT_EQ(a.size(), b.size());
  ASSERT_FALSE(a.empty());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i]["step"], b[i]["step"]);
    EXPECT_NEAR(a[i]["loss"].get<double>(), b[i]["loss"].get<double>(), atol) << "step " << a[i]["step"];
    if (a[i].contains("val_loss")) {
      EXPECT_NEAR(a[i]["val_loss"].get<double>(), b[i]["val_loss"].get<double>(), atol);
    }
  }
  double worst = 0;
  EXPECT_LE(weight_excess(one + "/latest", two + "/latest", 1e-3, &worst), atol) << "worst |diff| " << worst;
}

std::string write_config(const TempDir& d, const std::string& name, const std::string& text) {
  std::ofstream(d / name) << text;
  return d / name;
}

class Dist : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // The ranks these tests start themselves (threads, or processes with torchrun's variables)
    // share this secret; `loom launch` makes its own.
    setenv("LOOM_JOB_SECRET", "dist-test-secret-0123456789abcdef", 1);
    dir_ = new TempDir;
    data_ = prepare_tiny_data(dir_->str());
  }
  static void TearDownTestSuite() { delete dir_; }
  static TempDir* dir_;
  static std::string data_;
};
TempDir* Dist::dir_ = nullptr;
std::string Dist::data_;

TEST_F(Dist, TwoRanksTrainLikeOneGpt) {
  TempDir d;
  const std::string cfg = write_config(d, "tiny.toml", tiny_config(data_, d / "one", 12));
  const auto t0 = std::chrono::steady_clock::now();
  RunResult r1 = run_loom({"train", "--config", cfg});
  ASSERT_EQ(r1.rc, 0) << r1.err;
  // Small buckets, so the gradients go out in several pieces during backward.
  setenv("LOOM_BUCKET_MB", "0.02", 1);
  RunResult r2 = run_loom({"launch", "--nproc-per-node", "2", "--", "train", "--config", cfg, "--log.run_dir", d / "two"});
  unsetenv("LOOM_BUCKET_MB");
  ASSERT_EQ(r2.rc, 0) << r2.out << r2.err;
  EXPECT_NE(r2.out.find("[rank 0] step 12/12"), std::string::npos) << r2.out;
  EXPECT_NE(r2.out.find("data parallel: 2 ranks (gloo)"), std::string::npos) << r2.out;
  EXPECT_EQ(r2.out.find("bucket(s)") != std::string::npos && r2.out.find("in 1 bucket(s)") == std::string::npos, true)
      << "expected several buckets: " << r2.out;
  expect_same_training(d / "one", d / "two", 2e-5);
  std::printf("(1 rank + 2 ranks: %.1f s)\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}

TEST_F(Dist, TwoRanksTrainLikeOneLstm) {
  TempDir d;
  std::string text = tiny_config(data_, d / "one", 12);
  text.replace(text.find("kind = \"gpt\""), 12, "kind = \"lstm\"");
  const std::string cfg = write_config(d, "lstm.toml", text);
  RunResult r1 = run_loom({"train", "--config", cfg});
  ASSERT_EQ(r1.rc, 0) << r1.err;
  RunResult r2 = run_loom({"launch", "--nproc-per-node", "2", "--", "train", "--config", cfg, "--log.run_dir", d / "two"});
  ASSERT_EQ(r2.rc, 0) << r2.out << r2.err;
  expect_same_training(d / "one", d / "two", 2e-5);
  // The checkpoint holds every stream's state, as one rank's does.
  const CheckpointData a = load_checkpoint(d / "one/latest", true), b = load_checkpoint(d / "two/latest", true);
  ASSERT_EQ(a.rnn_state.size(), b.rnn_state.size());
  ASSERT_FALSE(a.rnn_state.empty());
  for (size_t i = 0; i < a.rnn_state.size(); ++i) ASSERT_NEAR(a.rnn_state[i], b.rnn_state[i], 1e-4) << i;
}

// Two ranks as two threads of this process, each with its own Gloo communicator.
void train_two_ranks(const Config& cfg, TrainOptions opt) {
  const int port = 20000 + static_cast<int>(getpid() % 20000);
  std::vector<std::thread> ts;
  std::vector<std::string> errors(2);
  for (int r = 0; r < 2; ++r)
    ts.emplace_back([&, r] {
      try {
        auto comm = make_gloo_comm(r, 2, "127.0.0.1", port);
        TrainOptions o = opt;
        o.comm = comm.get();
        o.quiet = true;
        train(cfg, o);
        comm->barrier(0);
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(r)] = e.what();
      }
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(errors[0], "");
  EXPECT_EQ(errors[1], "");
}

Config parse(const std::string& text) { return parse_config_text(text, "test.toml", {}); }

TEST_F(Dist, TwoRankCheckpointResumesBitExactly) {
  for (int zero : {0, 1}) {
    TempDir d;
    const std::string z = "\n[dist]\nzero = " + std::to_string(zero) + "\n";
    train_two_ranks(parse(tiny_config(data_, d / "full", 20) + z), {});
    TrainOptions o;
    o.stop_after = 7;  // not a checkpoint multiple: the stop itself checkpoints
    train_two_ranks(parse(tiny_config(data_, d / "resumed", 20) + z), o);
    o.stop_after = 0;
    o.resume = true;
    train_two_ranks(parse(tiny_config(data_, d / "resumed", 20) + z), o);
    const auto a = read_metrics(d / "full"), b = read_metrics(d / "resumed");
    ASSERT_EQ(a.size(), b.size()) << "zero " << zero;
    for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i]["loss"], b[i]["loss"]) << "zero " << zero << " step " << i + 1;
    EXPECT_EQ(read_bytes(d / "full/latest/model.safetensors"), read_bytes(d / "resumed/latest/model.safetensors")) << zero;
    EXPECT_EQ(read_bytes(d / "full/latest/optim.safetensors"), read_bytes(d / "resumed/latest/optim.safetensors")) << zero;
  }
}

TEST_F(Dist, ZeroOneEqualsPlainDataParallelism) {
  TempDir d;
  train_two_ranks(parse(tiny_config(data_, d / "dp", 12)), {});
  train_two_ranks(parse(tiny_config(data_, d / "zero", 12) + "\n[dist]\nzero = 1\n"), {});
  expect_same_training(d / "dp", d / "zero", 2e-5);
  // The moments were gathered from the shards into a whole optimizer state.
  const CheckpointData a = load_checkpoint(d / "dp/latest", true), b = load_checkpoint(d / "zero/latest", true);
  ASSERT_EQ(a.m.size(), b.m.size());
  double worst = 0;
  for (size_t i = 0; i < a.m.size(); ++i) worst = std::max(worst, std::fabs(double(a.m[i]) - b.m[i]));
  EXPECT_LE(worst, 1e-5);
}

TEST_F(Dist, KilledRankEndsTheJobNamingIt) {
  TempDir d;
  const std::string cfg = write_config(d, "tiny.toml", tiny_config(data_, d / "run", 100000));
  // Two ranks started by hand (torchrun variables), so the survivor's own report is visible.
  const int port = 40000 + static_cast<int>(getpid() % 20000);
  pid_t pids[2];
  for (int r = 0; r < 2; ++r) {
    pids[r] = fork();
    ASSERT_GE(pids[r], 0);
    if (pids[r] == 0) {
      setenv("RANK", std::to_string(r).c_str(), 1);
      setenv("WORLD_SIZE", "2", 1);
      setenv("MASTER_ADDR", "127.0.0.1", 1);
      setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      setenv("OMP_NUM_THREADS", "1", 1);
      const std::string out = d / ("rank" + std::to_string(r) + ".err");
      freopen(out.c_str(), "w", stderr);
      freopen("/dev/null", "w", stdout);
      execl(loom_binary().c_str(), "loom", "train", "--config", cfg.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  // Wait until training runs, then kill rank 1.
  for (int i = 0; i < 600 && read_metrics(d / "run").size() < 3; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_GE(read_metrics(d / "run").size(), 3u) << read_bytes(d / "rank0.err");
  kill(pids[1], SIGKILL);
  waitpid(pids[1], nullptr, 0);
  const auto t0 = std::chrono::steady_clock::now();
  int st = 0;
  while (waitpid(pids[0], &st, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(60)) {
      kill(pids[0], SIGKILL);
      waitpid(pids[0], &st, 0);
      FAIL() << "rank 0 still running 60 s after rank 1 died";
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string err = read_bytes(d / "rank0.err");
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) != 0) << err;
  EXPECT_NE(err.find("lost rank 1"), std::string::npos) << err;
  std::printf("(rank 0 exited %.1f s after rank 1 was killed: %s)\n", s, err.c_str());
}

TEST_F(Dist, LaunchStopsTheJobWhenARankDies) {
  TempDir d;
  const std::string cfg = write_config(d, "tiny.toml", tiny_config(data_, d / "run", 100000));
  // The launcher prints each rank's pid; kill rank 1 once training runs.
  const std::string log = d / "launch.log";
  const std::string cmd = "'" + loom_binary() + "' launch --nproc-per-node 2 -- train --config '" + cfg + "' >'" + log +
                          "' 2>&1 & echo $!";
  FILE* p = popen(cmd.c_str(), "r");
  int launcher = 0;
  ASSERT_EQ(fscanf(p, "%d", &launcher), 1);
  pclose(p);
  int victim = 0;
  for (int i = 0; i < 600 && (victim == 0 || read_metrics(d / "run").size() < 2); ++i) {
    const std::string text = read_bytes(log);
    const auto at = text.find("[launch] rank 1: pid ");
    if (at != std::string::npos) victim = std::atoi(text.c_str() + at + 21);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_GT(victim, 0) << read_bytes(log);
  kill(victim, SIGKILL);
  const auto t0 = std::chrono::steady_clock::now();
  while (kill(launcher, 0) == 0) {
    // (The launcher is not our child: it was started by the shell above and re-parented.)
    if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(60)) {
      kill(launcher, SIGKILL);
      FAIL() << "launcher still running 60 s after rank 1 died: " << read_bytes(log);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const std::string text = read_bytes(log);
  EXPECT_NE(text.find("[launch] rank 1 (pid " + std::to_string(victim) + ") was killed by signal 9"), std::string::npos)
      << text;
  EXPECT_NE(text.find("[launch] job failed: rank 1"), std::string::npos) << text;
}

TEST_F(Dist, MissingRankZeroIsARendezvousErrorNamingTheAddress) {
  TempDir d;
  const std::string cfg = write_config(d, "tiny.toml", tiny_config(data_, d / "run", 5));
  setenv("RANK", "1", 1);
  setenv("WORLD_SIZE", "2", 1);
  setenv("MASTER_ADDR", "127.0.0.1", 1);
  setenv("MASTER_PORT", "9", 1);  // nobody listens there
  setenv("LOOM_RENDEZVOUS_TIMEOUT", "1", 1);
  RunResult r = run_loom({"train", "--config", cfg});
  for (const char* v : {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOOM_RENDEZVOUS_TIMEOUT"}) unsetenv(v);
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("MASTER_ADDR:MASTER_PORT = 127.0.0.1:9"), std::string::npos) << r.err;
}

TEST_F(Dist, NgramRefusesSeveralRanks) {
  TempDir d;
  std::string text = tiny_config(data_, d / "run", 5);
  text.replace(text.find("kind = \"gpt\""), 12, "kind = \"ngram\"\norder = 3");
  const std::string cfg = write_config(d, "ngram.toml", text);
  RunResult r = run_loom({"launch", "--nproc-per-node", "2", "--", "train", "--config", cfg});
  EXPECT_EQ(r.rc, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("no data-parallel mode"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace loom::test
