// fault_test.cpp: faults during data-parallel training. A non-finite loss on one rank makes
// every rank skip that step together, logged with the rank in metrics.jsonl; K skips in a row
// abort the job naming the step and the rank. A checkpoint written by two ranks resumes on
// one rank with the same global batch (through gradient accumulation): the same windows,
// none repeated or skipped, and the same losses within float tolerance.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>

#include "tests/support/helpers.h"

namespace loom::test {
namespace {

class Faults : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    data_ = prepare_tiny_data(dir_->str());
  }
  static void TearDownTestSuite() { delete dir_; }
  static TempDir* dir_;
  static std::string data_;
};
TempDir* Faults::dir_ = nullptr;
std::string Faults::data_;

TEST_F(Faults, NonFiniteOnOneRankIsSkippedByEveryRankTogether) {
  TempDir d;
  std::ofstream(d / "c.toml") << tiny_config(data_, d / "run", 8);
  setenv("LOOM_FAULT_NONFINITE", "1:3", 1);
  const RunResult r = run_loom({"launch", "--nproc-per-node", "2", "--", "train", "--config", d / "c.toml"});
  unsetenv("LOOM_FAULT_NONFINITE");
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("step 3: non-finite loss or gradient norm on rank 1; update skipped on every rank"),
            std::string::npos)
      << r.out;
  const auto m = read_metrics(d / "run");
  ASSERT_EQ(m.size(), 8u);
  for (const auto& j : m) {
    const bool three = j["step"] == 3;
    EXPECT_EQ(j.contains("skipped"), three) << j.dump();
    if (three) EXPECT_EQ(j["bad_rank"], 1) << j.dump();
    if (!three) EXPECT_TRUE(std::isfinite(j["loss"].get<double>())) << j.dump();
  }
  // Both ranks hold the same weights afterwards: the skip was agreed, so neither updated.
  const auto a = read_bytes(d / "run/latest/model.safetensors");
  EXPECT_FALSE(a.empty());
}

TEST_F(Faults, SkipsInARowAbortNamingStepAndRank) {
  TempDir d;
  std::ofstream(d / "c.toml") << tiny_config(data_, d / "run", 8);
  setenv("LOOM_FAULT_NONFINITE", "1:2,3,4", 1);
  const RunResult r = run_loom({"launch", "--nproc-per-node", "2", "--", "train", "--config", d / "c.toml",
                                "--train.max_bad_steps", "3"});
  unsetenv("LOOM_FAULT_NONFINITE");
  EXPECT_EQ(r.rc, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("step 4: loss or gradient norm not finite on rank 1 for 3 steps in a row"), std::string::npos)
      << r.err;
}

TEST_F(Faults, TwoRankCheckpointResumesOnOneRankWithTheSameGlobalBatch) {
  TempDir d;
  std::ofstream(d / "c.toml") << tiny_config(data_, d / "ref", 10);
  // Uninterrupted: two ranks, 8 sequences a step.
  ASSERT_EQ(run_loom({"launch", "--nproc-per-node", "2", "--", "train", "--config", d / "c.toml"}).rc, 0);
  // Interrupted after step 5 on two ranks, resumed on one rank with 4 sequences x 2 micro-batches.
  const RunResult a = run_loom({"launch", "--nproc-per-node", "2", "--", "train", "--config", d / "c.toml",
                                "--log.run_dir", d / "moved", "--train.steps", "5", "--checkpoint.every", "5"});
  ASSERT_EQ(a.rc, 0) << a.err;
  const RunResult b = run_loom({"train", "--config", d / "c.toml", "--log.run_dir", d / "moved", "--resume",
                                "--train.batch_size", "4", "--train.grad_accum", "2"});
  ASSERT_EQ(b.rc, 0) << b.err;
  const auto ref = read_metrics(d / "ref"), moved = read_metrics(d / "moved");
  ASSERT_EQ(ref.size(), moved.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    EXPECT_EQ(ref[i]["step"], moved[i]["step"]);
    EXPECT_EQ(ref[i]["tokens"], moved[i]["tokens"]) << "tokens consumed differ at step " << ref[i]["step"];
    EXPECT_NEAR(ref[i]["loss"].get<double>(), moved[i]["loss"].get<double>(), 2e-4) << "step " << ref[i]["step"];
  }
}

}  // namespace
}  // namespace loom::test
