// mfu_e2e_test.cpp: a CPU training run reports its model FLOPs utilisation against the
// sgemm ceiling measured in the same run: in the banner, in the step lines and in every
// metrics.jsonl line, always in (0, 1]; `loom bench train` prints it too. A pair kind's MFU
// counts its FLOPs per target token on the step's target tokens, not on every real token.
#include <gtest/gtest.h>

#include <regex>

#include "tests/support/helpers.h"
#include "tests/support/pair_tasks.h"

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

// Sorting pairs have sources as long as their targets (+ EOS each), so a step's target tokens
// are half its real tokens: the MFU, turned back into tokens by the banner's FLOPs per target
// token and the ceiling, must give that half (counted on every real token it gave all of them).
TEST(Mfu, PairKindsCountTheirTargetTokens) {
  TempDir t;
  const std::string data = prepare_pairs(t, "sort", 600);
  std::ofstream(t / "c.toml") << encdec_config(data, t / "run", 4);
  const RunResult r = run_loom({"train", "--config", t / "c.toml", "--log.every", "1"});
  ASSERT_EQ(r.rc, 0) << r.err;
  std::smatch fm;
  ASSERT_TRUE(std::regex_search(r.out, fm, std::regex(R"(MFU: (\S+) FLOP/target token against)"))) << r.out;
  const double flops_per_target = std::stod(fm[1]);
  // The ceiling the last step was measured against: the last one printed (measured again when beaten).
  double ceiling = 0;
  const std::regex gf(R"(: ([0-9.]+) GFLOP/s)");
  for (auto it = std::sregex_iterator(r.out.begin(), r.out.end(), gf); it != std::sregex_iterator(); ++it)
    ceiling = std::stod((*it)[1]) * 1e9;
  ASSERT_GT(ceiling, 0) << r.out;
  const auto m = read_metrics(t / "run");
  ASSERT_EQ(m.size(), 4u);
  const nlohmann::json& last = m.back();
  ASSERT_TRUE(last.contains("mfu")) << last.dump();
  const double step_tokens = last["tokens"].get<double>() - m[m.size() - 2]["tokens"].get<double>();
  const double targets = last["mfu"].get<double>() * ceiling * last["ms"].get<double>() / 1000 / flops_per_target;
  // %.3g of the FLOPs and %.1f of the ceiling: a few parts in a thousand.
  EXPECT_NEAR(targets, step_tokens / 2, 0.02 * step_tokens) << r.out << last.dump();
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
