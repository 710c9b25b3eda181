// mfu_e2e_test.cpp: a CPU training run reports its model FLOPs utilisation against the
// sgemm ceiling measured in the same run: in the banner, in the step lines and in every
// metrics.jsonl line, always in (0, 1]; `loom bench train` prints it too.
#include <gtest/gtest.h>

#include "tests/support/helpers.h"

namespace loom::test {
namespace {

TEST(Mfu, TrainReportsItOnCpu) {
  TempDir t;
  const std::string data = prepare_tiny_data(t.str());
  std::ofstream(t / "c.toml") << tiny_config(data, t / "run", 6);
  const RunResult r = run_loom({"train", "--config", t / "c.toml", "--log.every", "1"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("MFU: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("sgemm ceiling measured now"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| MFU "), std::string::npos) << r.out;
  const auto m = read_metrics(t / "run");
  ASSERT_EQ(m.size(), 6u);
  for (const auto& j : m) {
    ASSERT_TRUE(j.contains("mfu")) << j.dump();
    EXPECT_GT(j["mfu"].get<double>(), 0.0) << j.dump();
    EXPECT_LE(j["mfu"].get<double>(), 1.0) << j.dump();
  }
}

TEST(Mfu, BenchTrainPrintsIt) {
  const RunResult r = run_loom({"bench", "train", "--device", "cpu", "--n-layer", "1", "--d-model", "32", "--n-head",
                                "2", "--vocab", "64", "--batch", "2", "--seq-len", "16", "--steps", "2", "--warmup",
                                "1"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("MFU "), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("MFU n/a"), std::string::npos) << r.out;
}

// The profile times the optimizer's passes beside the ops, and the CPU report bounds the step's
// share of the ceiling by the optimizer's bytes at the bandwidth measured in the same run.
TEST(Mfu, BenchTrainProfilesTheOptimizerAndBoundsTheStep) {
  const RunResult r = run_loom({"bench", "train", "--device", "cpu", "--n-layer", "1", "--d-model", "32", "--n-head",
                                "2", "--vocab", "64", "--batch", "2", "--seq-len", "16", "--steps", "2", "--warmup",
                                "1", "--op-profile"});
  ASSERT_EQ(r.rc, 0) << r.err;
  for (const char* row : {"optimizer: zero", "optimizer: norm", "optimizer: adamw", "linear_bwd"})
    EXPECT_NE(r.out.find(row), std::string::npos) << row << "\n" << r.out;
  const size_t at = r.out.find("bound at this shape: the optimizer moves ");
  ASSERT_NE(at, std::string::npos) << r.out;
  const std::string line = r.out.substr(at, r.out.find('\n', at) - at);
  // 36 bytes a parameter: the tiny model's parameter count from the banner.
  const size_t p = r.out.find(" parameters");
  ASSERT_NE(p, std::string::npos);
  const long long params = std::stoll(r.out.substr(r.out.rfind(' ', p - 1) + 1));
  const double mb = std::stod(line.substr(std::string("bound at this shape: the optimizer moves ").size()));
  EXPECT_NEAR(mb, 36.0 * params / 1e6, 0.5 + 1e-3 * mb) << line;
  const size_t most = line.find("at most ");
  ASSERT_NE(most, std::string::npos) << line;
  const double share = std::stod(line.substr(most + 8));
  EXPECT_GT(share, 0) << line;
  EXPECT_LE(share, 100) << line;
}

}  // namespace
}  // namespace loom::test
