// env_badinput_test.cpp: environment variables and the config keys whose bad values used to
// overflow or abort instead of being refused: LOOM_COMM_TIMEOUT / LOOM_BUCKET_MB of inf or
// garbage on a two-rank job, a LoRA rank above the width, an ffnn context past its bound, and
// train.recompute not a setting or on a kind without segments - each one line naming the
// variable or key, exit 2.
#include <gtest/gtest.h>

#include <cstdlib>

#include "tests/support/helpers.h"

namespace loom::test {
namespace {

class EnvBadInput : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    data_ = prepare_tiny_data(dir_->str());
    std::ofstream(*dir_ / "c.toml") << tiny_config(data_, *dir_ / "run", 2);
  }
  static void TearDownTestSuite() { delete dir_; }
  static TempDir* dir_;
  static std::string data_;
};
TempDir* EnvBadInput::dir_ = nullptr;
std::string EnvBadInput::data_;

TEST_F(EnvBadInput, TimeoutsAndBucketSizesMustBeFiniteNumbers) {
  for (const char* var : {"LOOM_COMM_TIMEOUT", "LOOM_BUCKET_MB"})
    for (const char* value : {"inf", "nan", "1e999", "-3", "abc", "5s"}) {
      setenv(var, value, 1);
      TempDir run;
      const RunResult r = run_loom({"launch", "--nproc-per-node", "2", "--", "train", "--config", *dir_ / "c.toml",
                                    "--log.run_dir", run.str()});
      unsetenv(var);
      EXPECT_EQ(r.rc, 2) << var << "=" << value << "\n" << r.out << r.err;
      EXPECT_NE(r.err.find(std::string("loom: error: ") + var), std::string::npos) << var << "=" << value << "\n"
                                                                                    << r.err;
    }
}

TEST_F(EnvBadInput, LoraRankAndContextOutsideTheirBounds) {
  expect_user_error(run_loom({"train", "--config", *dir_ / "c.toml", "--lora.rank", "1000000"}), "lora.rank");
  expect_user_error(run_loom({"train", "--config", *dir_ / "c.toml", "--lora.rank", "64"}), "lora.rank");
  expect_user_error(run_loom({"train", "--config", *dir_ / "c.toml", "--model.kind", "ffnn", "--model.context",
                              "100000"}),
                    "model.context");
}

TEST_F(EnvBadInput, RecomputeSettingAndKind) {
  expect_user_error(run_loom({"train", "--config", *dir_ / "c.toml", "--train.recompute", "sometimes"}),
                    "train.recompute");
  // Only kinds that name segments (gpt) take a setting other than none.
  expect_user_error(run_loom({"train", "--config", *dir_ / "c.toml", "--model.kind", "lstm", "--train.recompute",
                              "block"}),
                    "train.recompute");
  expect_user_error(run_loom({"bench", "train", "--recompute", "sometimes"}), "--recompute");
  expect_user_error(run_loom({"bench", "train", "--model", "lstm", "--recompute", "mlp"}), "--recompute");
}

}  // namespace
}  // namespace loom::test
