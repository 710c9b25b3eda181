// recompute_e2e_test.cpp: train.recompute end to end on the CPU. A tiny GPT trained with
// recomputed blocks (set on the command line) writes the same metrics, bit for bit, and the
// same final weights as without; an interrupted run with recomputation resumes bit-exactly.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "launch/run/config.h"
#include "launch/run/trainer.h"
#include "tests/support/helpers.h"

namespace loom::test {
namespace {

constexpr int kSteps = 20;

Config tiny(const std::string& data, const std::string& run, const std::string& recompute) {
  return parse_config_text(tiny_config(data, run, kSteps), "tiny.toml", {{"train.recompute", recompute}});
}

// Every step's loss and gradient norm, and the validations, the same to the last bit.
void expect_same_metrics(const std::string& a_dir, const std::string& b_dir) {
  const auto a = read_metrics(a_dir), b = read_metrics(b_dir);
  ASSERT_EQ(a.size(), static_cast<size_t>(kSteps));
  ASSERT_EQ(b.size(), a.size());
  int validations = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i]["loss"].get<double>(), b[i]["loss"].get<double>()) << "step " << i + 1;
    EXPECT_EQ(a[i]["grad_norm"].get<double>(), b[i]["grad_norm"].get<double>()) << "step " << i + 1;
    ASSERT_EQ(a[i].contains("val_loss"), b[i].contains("val_loss"));
    if (a[i].contains("val_loss")) {
      EXPECT_EQ(a[i]["val_loss"].get<double>(), b[i]["val_loss"].get<double>()) << "step " << i + 1;
      ++validations;
    }
  }
  EXPECT_GT(validations, 0);
  EXPECT_EQ(read_bytes(a_dir + "/latest/model.safetensors"), read_bytes(b_dir + "/latest/model.safetensors"));
  EXPECT_EQ(read_bytes(a_dir + "/latest/optim.safetensors"), read_bytes(b_dir + "/latest/optim.safetensors"));
}

TEST(RecomputeE2E, BlockTrainsBitIdenticalToNone) {
  TempDir d;
  const std::string data = prepare_tiny_data(d.str());
  TrainOptions o;
  o.quiet = true;
  train(tiny(data, d / "none", "none"), o);
  std::ofstream(d / "tiny.toml") << tiny_config(data, d / "block", kSteps);
  const RunResult r = run_loom({"train", "--config", d / "tiny.toml", "--train.recompute", "block"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(read_bytes(d / "block/config.toml").find("recompute = 'block'"), std::string::npos)
      << "the run folder's config does not record the setting";
  expect_same_metrics(d / "none", d / "block");
  // The losses moved: the runs compared above trained.
  const auto m = read_metrics(d / "block");
  EXPECT_LT(m.back()["loss"].get<double>(), m.front()["loss"].get<double>() - 0.5);
}

TEST(RecomputeE2E, ResumeWithRecomputeIsBitExact) {
  TempDir d;
  const std::string data = prepare_tiny_data(d.str());
  TrainOptions o;
  o.quiet = true;
  train(tiny(data, d / "full", "block"), o);
  o.stop_after = 13;  // between checkpoints: the stop itself checkpoints
  ASSERT_TRUE(train(tiny(data, d / "resumed", "block"), o).interrupted);
  o.stop_after = 0;
  o.resume = true;
  train(tiny(data, d / "resumed", "block"), o);
  expect_same_metrics(d / "full", d / "resumed");
}

}  // namespace
}  // namespace loom::test
