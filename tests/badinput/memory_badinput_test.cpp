// memory_badinput_test.cpp: a training run too big for this machine's memory stops before its
// first step with one line saying what would fit (exit 2; the planner's numbers against the real
// MemAvailable, no limit faked), and `loom plan`'s flags on bad input are one line naming the
// flag, exit 2.
#include <gtest/gtest.h>

#include "tests/support/helpers.h"

namespace loom::test {
namespace {

TEST(MemoryBadInput, RunTooBigForThisMachineStopsBeforeTheFirstStep) {
  TempDir t;
  std::ofstream(t / "c.toml") << tiny_config(prepare_tiny_data(t.str()), t / "run", 5);
  // At B=256 x T=1024 x C=2048 x 8 layers the training arena alone is well over 100 TiB.
  const RunResult r = run_loom({"train", "--config", t / "c.toml", "--model.d_model", "2048", "--model.n_head", "16",
                                "--model.n_layer", "8", "--model.seq_len", "1024", "--train.batch_size", "256"});
  expect_user_error(r, "train.batch_size: this run needs ");
  EXPECT_NE(r.err.find(" are free (MemAvailable); to fit: "), std::string::npos) << r.err;
  EXPECT_EQ(r.out.find("step 1"), std::string::npos) << r.out;
  EXPECT_TRUE(read_metrics(t / "run").empty());
  EXPECT_FALSE(fs::exists(t / "run/latest"));
}

class PlanBadInput : public ::testing::Test {
 protected:
  void SetUp() override { std::ofstream(t_ / "c.toml") << tiny_config(t_ / "no-data", t_ / "run"); }
  RunResult plan(std::vector<std::string> args) {
    args.insert(args.begin(), {"plan", "--config", t_ / "c.toml"});
    return run_loom(args);
  }
  TempDir t_;
};

TEST_F(PlanBadInput, UnknownDeviceListsTheKnownOnes) {
  const RunResult r = plan({"--device", "tpu"});
  expect_user_error(r, "--device: unknown device 'tpu' (known: cpu, b200, ");
  EXPECT_NE(r.err.find("h200"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("a100-40gb"), std::string::npos) << r.err;
}

TEST_F(PlanBadInput, BadNumbers) {
  expect_user_error(plan({"--gpus", "0"}), "--gpus: 0 is not in [1, 4096]");
  expect_user_error(plan({"--gpus", "100000"}), "--gpus: ");
  expect_user_error(plan({"--gpus", "many"}), "--gpus");
  expect_user_error(plan({"--tokens", "-5"}), "--tokens: ");
  expect_user_error(plan({"--tokens", "nan"}), "--tokens: ");
  expect_user_error(plan({"--tokens", "1e30"}), "--tokens: ");
  expect_user_error(plan({"--hours", "0"}), "--hours: ");
  expect_user_error(plan({"--hours", "inf"}), "--hours: ");
  expect_user_error(plan({"--mfu", "1.5"}), "--mfu: 1.5 is not in (0, 1]");
  expect_user_error(plan({"--mfu", "0"}), "--mfu: ");
  expect_user_error(plan({"--vocab", "1"}), "--vocab: ");
  expect_user_error(plan({"--tokens", "1e9", "--hours", "2"}), "--tokens, --hours: give one of them, not both");
  // Ranks that do not divide the batch (8) are the config's key.
  expect_user_error(plan({"--device", "h100", "--gpus", "3"}), "train.batch_size: 8 is not divisible by the 3 ranks");
}

TEST_F(PlanBadInput, BadConfig) {
  expect_user_error(run_loom({"plan", "--config", t_ / "missing.toml"}), "missing.toml");
  expect_user_error(plan({"--train.recompute", "everything"}), "train.recompute");
  expect_user_error(plan({"--model.n_layer", "0"}), "model.n_layer");
}

}  // namespace
}  // namespace loom::test
