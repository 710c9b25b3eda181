// train_e2e_test.cpp: a tiny GPT end to end: loss falls, resume is bit-exact, seeded sampling
// repeats, the KV cache agrees with the full forward pass, and the CLI writes a run folder.
#include <gtest/gtest.h>

#include <csignal>
#include <nlohmann/json.hpp>

#include "launch/run/checkpoint.h"
#include "launch/run/trainer.h"
#include "tests/support/helpers.h"
#include "tests/support/tiny_models.h"

namespace loom::test {
namespace {

Config tiny(const std::string& data, const std::string& run, int steps = 40) {
  return parse_config_text(tiny_config(data, run, steps), "tiny.toml", {});
}

TEST(E2E, TinyGptLossFalls) {
  TempDir d;
  const std::string data = prepare_tiny_data(d.str());
  TrainOptions o;
  o.quiet = true;
  TrainResult r = train(tiny(data, d / "run", 60), o);
  auto m = read_metrics(d / "run");
  ASSERT_EQ(m.size(), 60u);
  const double first = m.front()["loss"], last = m.back()["loss"];
  EXPECT_NEAR(first, std::log(256.0), 0.3) << "initial loss should be about ln(256)";
  EXPECT_LT(last, first - 1.5) << "loss did not fall: " << first << " -> " << last;
  EXPECT_GT(r.last_val_loss, 0);
  EXPECT_LT(r.last_val_loss, first - 1.5);
  EXPECT_TRUE(fs::exists(d / "run/latest/model.safetensors"));
  EXPECT_TRUE(fs::exists(d / "run/config.toml"));
}

TEST(E2E, ResumeIsBitExact) {
  TempDir d;
  const std::string data = prepare_tiny_data(d.str());
  TrainOptions o;
  o.quiet = true;
  train(tiny(data, d / "full", 30), o);
  o.stop_after = 13;  // not a checkpoint multiple: the stop itself must checkpoint
  TrainResult part = train(tiny(data, d / "resumed", 30), o);
  ASSERT_TRUE(part.interrupted);
  // A crash mid-write of a later checkpoint leaves a temporary folder; it must not matter.
  fs::create_directories(d / "resumed/checkpoints/step_00000020.tmp-999");
  std::ofstream(d / "resumed/checkpoints/step_00000020.tmp-999/model.safetensors") << "partial";
  o.stop_after = 0;
  o.resume = true;
  train(tiny(data, d / "resumed", 30), o);
  auto a = read_metrics(d / "full"), b = read_metrics(d / "resumed");
  ASSERT_EQ(a.size(), 30u);
  ASSERT_EQ(b.size(), 30u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i]["step"], b[i]["step"]);
    EXPECT_EQ(a[i]["loss"].get<double>(), b[i]["loss"].get<double>()) << "step " << i + 1;
    EXPECT_EQ(a[i]["grad_norm"].get<double>(), b[i]["grad_norm"].get<double>()) << "step " << i + 1;
    if (a[i].contains("val_loss")) EXPECT_EQ(a[i]["val_loss"].get<double>(), b[i]["val_loss"].get<double>());
  }
  EXPECT_EQ(read_bytes(d / "full/latest/model.safetensors"), read_bytes(d / "resumed/latest/model.safetensors"));
  EXPECT_EQ(read_bytes(d / "full/latest/optim.safetensors"), read_bytes(d / "resumed/latest/optim.safetensors"));
}

TEST(E2E, KvCacheMatchesFullForward) {
  expect_decoder_matches_full_forward({.n_layer = 2, .n_head = 2, .d_model = 16, .seq_len = 12, .vocab = 29}, 5);
}

TEST(E2E, SeededSamplingRepeatsAndCliWorks) {
  TempDir d;
  const std::string data = prepare_tiny_data(d.str());
  std::ofstream(d / "tiny.toml") << tiny_config(data, d / "run", 20);
  RunResult t = run_loom({"train", "--config", d / "tiny.toml", "--log.every", "5", "--train.eval_every=10"});
  ASSERT_EQ(t.rc, 0) << t.err;
  EXPECT_NE(t.out.find("step 20/20"), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("val "), std::string::npos);
  auto s = [&](const std::string& seed) {
    return run_loom({"sample", "--checkpoint", d / "run", "--prompt", "The lord", "--max-new-tokens", "40", "--seed",
                     seed, "--top-k", "20", "--top-p", "0.95", "--temperature", "0.9"});
  };
  RunResult a = s("1"), b = s("1"), c = s("2");
  ASSERT_EQ(a.rc, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.out, c.out);
  EXPECT_EQ(a.out.rfind("The lord", 0), 0u);
  EXPECT_GE(a.out.size(), 40u + 8u);
  RunResult g1 = run_loom({"sample", "--checkpoint", d / "run/latest", "--prompt", "The", "--greedy", "--max-new-tokens", "30"});
  RunResult g2 = run_loom({"sample", "--checkpoint", d / "run/latest", "--prompt", "The", "--greedy", "--max-new-tokens", "30", "--seed", "9"});
  ASSERT_EQ(g1.rc, 0) << g1.err;
  EXPECT_EQ(g1.out, g2.out) << "greedy decoding must not depend on the seed";
  RunResult e = run_loom({"eval", "--checkpoint", d / "run", "--batches", "3"});
  ASSERT_EQ(e.rc, 0) << e.err;
  EXPECT_NE(e.out.find("perplexity"), std::string::npos);
}

TEST(E2E, SigtermCheckpointsAndResumeFinishes) {
  TempDir d;
  const std::string data = prepare_tiny_data(d.str());
  std::ofstream(d / "tiny.toml") << tiny_config(data, d / "run", 100000);
  const std::string cmd = "exec '" + loom_binary() + "' train --config '" + (d / "tiny.toml") + "' >'" + (d / "log") +
                          "' 2>&1";
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // Wait until some steps ran, then ask it to stop as a scheduler would.
  for (int i = 0; i < 600 && read_metrics(d / "run").size() < 3; ++i) usleep(50000);
  kill(pid, SIGTERM);
  int st = 0;
  waitpid(pid, &st, 0);
  ASSERT_TRUE(WIFEXITED(st)) << read_bytes(d / "log");
  EXPECT_EQ(WEXITSTATUS(st), 0) << read_bytes(d / "log");
  EXPECT_NE(read_bytes(d / "log").find("SIGTERM"), std::string::npos) << read_bytes(d / "log");
  ASSERT_TRUE(fs::exists(d / "run/latest/model.safetensors"));
  const auto steps_before = read_metrics(d / "run").size();
  RunResult r = run_loom({"train", "--config", d / "tiny.toml", "--resume", "--train.steps", std::to_string(steps_before + 3)});
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(read_metrics(d / "run").size(), steps_before + 3);
}

}  // namespace
}  // namespace loom::test
