// plan_e2e_test.cpp: `loom plan` through the CLI. Its memory lines are the ones `loom train`
// prints at start for the same config (same functions, same graphs); it prints a report for
// every config in configs/, and for the GPT-2 configs on an H200, alone and eight of them
// (ZeRO-1 then shards the moments).
#include <gtest/gtest.h>

#include <filesystem>

#include "tests/support/helpers.h"

namespace loom::test {
namespace {

// The report's category lines (all but the total, whose free memory moves with the machine).
std::vector<std::string> category_lines(const std::string& out) {
  std::vector<std::string> lines;
  std::istringstream in(out);
  for (std::string l; std::getline(in, l);)
    for (const char* c : {"  weights ", "  master weights ", "  gradients ", "  optimizer moments ", "  activations ",
                          "  workspace "})
      if (l.rfind(c, 0) == 0) lines.push_back(l);
  return lines;
}

TEST(Plan, MemoryMatchesTrainsStartupReport) {
  TempDir t;
  const std::string data = prepare_tiny_data(t.str());
  std::ofstream(t / "c.toml") << tiny_config(data, t / "run", 1);
  for (const std::vector<std::string>& ov :
       {std::vector<std::string>{},
        {"--train.batch_size", "3", "--model.d_model", "48"},
        {"--train.recompute", "block"}}) {
    std::vector<std::string> train = {"train", "--config", t / "c.toml", "--checkpoint.every", "1"};
    std::vector<std::string> plan = {"plan", "--config", t / "c.toml", "--device", "cpu", "--mfu", "0.5"};
    train.insert(train.end(), ov.begin(), ov.end());
    plan.insert(plan.end(), ov.begin(), ov.end());
    std::filesystem::remove_all(t / "run");
    const RunResult tr = run_loom(train), pr = run_loom(plan);
    ASSERT_EQ(tr.rc, 0) << tr.err;
    ASSERT_EQ(pr.rc, 0) << pr.err;
    const auto a = category_lines(tr.out), b = category_lines(pr.out);
    EXPECT_EQ(a.size(), 6u) << tr.out;
    EXPECT_EQ(a, b) << "train:\n" << tr.out << "\nplan:\n" << pr.out;
    // The start line that the report replaced is gone.
    EXPECT_EQ(tr.out.find("without reuse)\n"), std::string::npos) << tr.out;
    EXPECT_NE(tr.out.find("  total "), std::string::npos) << tr.out;
    EXPECT_NE(tr.out.find("free (MemAvailable): leaves "), std::string::npos) << tr.out;
  }
}

TEST(Plan, ReportsEveryConfig) {
  const std::string src = LOOM_SOURCE_DIR;
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(src + "/configs")) {
    if (e.path().extension() != ".toml") continue;
    ++n;
    const std::string name = e.path().stem().string();
    // The GPT-2 configs are far too large to time a step of here: --mfu skips that.
    const bool gpt2 = name.rfind("gpt2-", 0) == 0;
    std::vector<std::string> args = {"plan", "--config", e.path().string()};
    if (gpt2) args.insert(args.end(), {"--mfu", "0.5"});
    const RunResult r = run_loom(args, src);
    ASSERT_EQ(r.rc, 0) << name << ": " << r.err;
    EXPECT_NE(r.out.find("loom plan | "), std::string::npos) << name << ": " << r.out;
    if (name == "ngram") continue;  // counting: nothing to plan but the note
    for (const char* needle : {"parameters: ", "FLOPs per ", "memory per rank on cpu", "  total ",
                               "largest micro-batch per rank", "compute-optimal: ", "Hoffmann et al. 2022", "planned: ",
                               "time: "})
      EXPECT_NE(r.out.find(needle), std::string::npos) << name << ": '" << needle << "' not in\n" << r.out;
    if (!gpt2) continue;
    for (const char* gpus : {"1", "8"}) {
      const RunResult g = run_loom({"plan", "--config", e.path().string(), "--device", "h200", "--gpus", gpus}, src);
      ASSERT_EQ(g.rc, 0) << name << " x" << gpus << ": " << g.err;
      EXPECT_NE(g.out.find("memory per rank on NVIDIA H200 SXM"), std::string::npos) << g.out;
      EXPECT_NE(g.out.find("largest micro-batch per GPU that fits"), std::string::npos) << g.out;
      EXPECT_NE(g.out.find("recompute block "), std::string::npos) << g.out;
      EXPECT_NE(g.out.find("x MFU 0.40"), std::string::npos) << g.out;
      EXPECT_EQ(g.out.find("does not fit"), std::string::npos) << name << " x" << gpus << " is meant to fit:\n" << g.out;
      EXPECT_EQ(g.out.find("ZeRO-1: this rank's 1/8") != std::string::npos, std::string(gpus) == "8") << g.out;
    }
  }
  EXPECT_GE(n, 11);
}

TEST(Plan, TokensAndHoursSetThePlannedRun) {
  TempDir t;
  std::ofstream(t / "c.toml") << tiny_config(t / "no-data", t / "run");
  const RunResult a = run_loom({"plan", "--config", t / "c.toml", "--device", "h100", "--tokens", "2e9"});
  ASSERT_EQ(a.rc, 0) << a.err;
  EXPECT_NE(a.out.find("planned: 2e+09 tokens (--tokens)"), std::string::npos) << a.out;
  EXPECT_NE(a.out.find("vocabulary 50257 (GPT-2's BPE) assumed"), std::string::npos) << a.out;
  const RunResult h = run_loom({"plan", "--config", t / "c.toml", "--device", "a100", "--gpus", "2", "--hours", "1",
                                "--mfu", "0.25", "--vocab", "300"});
  ASSERT_EQ(h.rc, 0) << h.err;
  EXPECT_NE(h.out.find(" V=300 "), std::string::npos) << h.out;
  EXPECT_NE(h.out.find("(--hours 1 at the rate below)"), std::string::npos) << h.out;
  EXPECT_NE(h.out.find("(2 x NVIDIA A100 80GB: 312.0 TFLOP/s dense bf16 x MFU 0.25 (--mfu))"), std::string::npos)
      << h.out;
  // One hour at the stated rate: 2 x 312 TFLOP/s x 0.25 = 156 TFLOP/s.
  EXPECT_NE(h.out.find("at 156 TFLOP/s"), std::string::npos) << h.out;
  EXPECT_NE(h.out.find("= 60.0 min"), std::string::npos) << h.out;
}

}  // namespace
}  // namespace loom::test
