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

// One prepared data folder for the suite; each run trains the tiny config in a folder of it.
class RecomputeE2E : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    data_ = prepare_tiny_data(dir_->str());
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string run_dir(const std::string& name) { return *dir_ / name; }
  // In process, quiet; `stop_after` > 0 interrupts the run there.
  static TrainResult train_tiny(const std::string& name, const std::string& recompute, int64_t stop_after = 0,
                                bool resume = false) {
    TrainOptions o;
    o.quiet = true;
    o.stop_after = stop_after;
    o.resume = resume;
    return train(tiny(data_, run_dir(name), recompute), o);
  }
  static TempDir* dir_;
  static std::string data_;
};
TempDir* RecomputeE2E::dir_ = nullptr;
std::string RecomputeE2E::data_;

TEST_F(RecomputeE2E, BlockTrainsBitIdenticalToNone) {
  train_tiny("none", "none");
  std::ofstream(*dir_ / "tiny.toml") << tiny_config(data_, run_dir("block"), kSteps);
  const RunResult r = run_loom({"train", "--config", *dir_ / "tiny.toml", "--train.recompute", "block"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(read_bytes(run_dir("block") + "/config.toml").find("recompute = 'block'"), std::string::npos)
      << "the run folder's config does not record the setting";
  expect_same_metrics(run_dir("none"), run_dir("block"));
  // The losses moved: the runs compared above trained.
  const auto m = read_metrics(run_dir("block"));
  EXPECT_LT(m.back()["loss"].get<double>(), m.front()["loss"].get<double>() - 0.5);
}

TEST_F(RecomputeE2E, ResumeWithRecomputeIsBitExact) {
  train_tiny("full", "block");
  ASSERT_TRUE(train_tiny("resumed", "block", 13).interrupted);  // between checkpoints: the stop checkpoints
  train_tiny("resumed", "block", 0, true);
  expect_same_metrics(run_dir("full"), run_dir("resumed"));
}

}  // namespace
}  // namespace loom::test
