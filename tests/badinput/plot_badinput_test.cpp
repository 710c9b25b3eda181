// plot_badinput_test.cpp: `loom plot` on bad input -- missing folders and files, metrics
// without a number to plot, lines too long or too deep, an unknown picture type, absurd
// sizes, a file it cannot write -- is one line naming the file or flag, exit 2.
#include <gtest/gtest.h>

#include "tests/support/helpers.h"

namespace loom::test {
namespace {

class PlotBadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(t_ / "good");
    std::ofstream(t_ / "good/metrics.jsonl") << "{\"step\":1,\"tokens\":256,\"loss\":5.5,\"lr\":0.001}\n"
                                                "{\"step\":2,\"tokens\":512,\"loss\":5.1,\"lr\":0.001,\"val_loss\":5.2}\n";
  }
  // A run folder holding `metrics` as its metrics.jsonl.
  std::string run_with(const std::string& name, const std::string& metrics) {
    fs::create_directories(t_ / name);
    write_bytes(t_ / name + "/metrics.jsonl", metrics);
    return t_ / name;
  }
  RunResult plot(std::vector<std::string> args) {
    args.insert(args.begin(), "plot");
    return run_loom(args);
  }
  TempDir t_;
};

TEST_F(PlotBadInput, TheGoodRunPlots) {  // so that each case below fails for its own reason
  RunResult r = plot({t_ / "good", "--out", t_ / "ok.png"});
  EXPECT_EQ(r.rc, 0) << r.err;
}

TEST_F(PlotBadInput, MissingFolderOrMetrics) {
  expect_user_error(plot({t_ / "good", t_ / "absent", "--out", t_ / "x.png"}), t_ / "absent: no such run folder");
  fs::create_directories(t_ / "empty");
  expect_user_error(plot({t_ / "empty", "--out", t_ / "x.png"}), t_ / "empty/metrics.jsonl: not found");
  EXPECT_FALSE(fs::exists(t_ / "x.png"));
}

TEST_F(PlotBadInput, MetricsWithoutANumberToPlot) {
  for (const std::string& m : {std::string(""), std::string("not json\n{\"step\":1}\n"),
                               std::string("{\"step\":1,\"loss\":\"5.5\"}\n{\"step\":\"2\",\"loss\":5}\n[1,2]\n"),
                               std::string("{\"step\":1,\"loss\":null,\"val_loss\":null,\"lr\":0.1}\n"),
                               std::string("\0\0\0\n", 4)}) {
    const std::string run = run_with("nonum", m);
    expect_user_error(plot({run, "--out", t_ / "x.svg"}), run + "/metrics.jsonl: no line with a number");
  }
}

TEST_F(PlotBadInput, LinesTooLongOrTooDeep) {
  const std::string long_run = run_with("long", "{\"step\":1,\"loss\":2}\n{\"pad\":\"" + std::string(100000, 'x') + "\"}\n");
  expect_user_error(plot({long_run, "--out", t_ / "x.png"}), long_run + "/metrics.jsonl: line 2 is longer than");
  const std::string deep_run = run_with("deep", std::string(100000, '[') + "\n");
  expect_user_error(plot({deep_run, "--out", t_ / "x.png"}), deep_run + "/metrics.jsonl: line 1");
}

TEST_F(PlotBadInput, UnknownPictureType) {
  expect_user_error(plot({t_ / "good", "--out", t_ / "curves.jpg"}), "curves.jpg: unknown picture type");
  expect_user_error(plot({t_ / "good", "--out", t_ / "curves"}), "curves: unknown picture type");
}

TEST_F(PlotBadInput, BadSizes) {
  expect_user_error(plot({t_ / "good", "--out", t_ / "x.png", "--width", "10"}), "--width: 10 is out of range");
  expect_user_error(plot({t_ / "good", "--out", t_ / "x.png", "--height", "100000"}), "--height: 100000 is out of range");
  expect_user_error(plot({t_ / "good", "--out", t_ / "x.png", "--width", "-5"}), "--width");
  expect_user_error(plot({t_ / "good", "--out", t_ / "x.png", "--height", "big"}), "--height");
}

TEST_F(PlotBadInput, BadAxisOrNoTokens) {
  expect_user_error(plot({t_ / "good", "--out", t_ / "x.png", "--x", "time"}), "--x");
  const std::string run = run_with("notokens", "{\"step\":1,\"loss\":2}\n");
  expect_user_error(plot({run, "--out", t_ / "x.png", "--x", "tokens"}), run + "/metrics.jsonl: no \"tokens\"");
}

TEST_F(PlotBadInput, LogScaleWithoutAPositiveLoss) {
  const std::string run = run_with("zero", "{\"step\":1,\"loss\":0}\n");
  expect_user_error(plot({run, "--out", t_ / "x.png", "--log"}), "--log: no positive loss");
}

// Numbers no run logs, but a file can hold: still a picture, in bounded time, or (a log scale
// with nothing positive, tokens missing) the one-line error.
TEST_F(PlotBadInput, ExtremeNumbersStillDraw) {
  const std::vector<std::string> files = {
      "{\"step\":1,\"loss\":1e17}\n{\"step\":2,\"loss\":1.00000000000000016e17}\n",
      "{\"step\":1,\"loss\":1e-300,\"lr\":1e308}\n{\"step\":9223372036854775807,\"loss\":1e300,\"tokens\":-5}\n",
      "{\"step\":-3,\"loss\":-1.7e308,\"val_loss\":1.7e308,\"lr\":-1,\"tokens\":1.7e308}\n"};
  for (const std::string& m : files) {
    const std::string run = run_with("extreme", m);
    EXPECT_EQ(plot({run, "--out", t_ / "x.svg"}).rc, 0) << m;
    for (const std::vector<std::string>& opt : {std::vector<std::string>{"--log"}, {"--x", "tokens"}}) {
      std::vector<std::string> args = {run, "--out", t_ / "x.png"};
      args.insert(args.end(), opt.begin(), opt.end());
      RunResult r = plot(args);
      if (r.rc != 0) expect_user_error(r, opt[0] == "--log" ? "--log" : "tokens");
    }
  }
}

TEST_F(PlotBadInput, UnwritableOutput) {
  expect_user_error(plot({t_ / "good", "--out", t_ / "no/such/folder/x.png"}), t_ / "no/such/folder/x.png");
}

}  // namespace
}  // namespace loom::test
