// mc_eval_test.cpp: the parts of launch/run/mc_eval.h that need no model: how a task file's
// two formats read, how a row is cut to the window, and the three choice rules on losses
// from a scorer that makes them up.
#include <gtest/gtest.h>

#include <fstream>
#include <map>

#include "core/rng.h"
#include "launch/run/mc_eval.h"
#include "tests/support/helpers.h"

namespace loom::test {
namespace {

std::vector<int32_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }

McTask read(const std::string& path, const std::string& lines, int seq_len = 64) {
  std::ofstream(path) << lines;
  return read_mc_task(path, *make_tokenizer("byte"), 256, seq_len, "t");
}

TEST(McTaskFile, ReadsBothFormats) {
  TempDir d;
  const McTask t = read(d / "t.jsonl",
                        // HellaSwag's own line: ctx wins over ctx_a / ctx_b, other fields ignored.
                        R"({"ind": 4, "activity_label": "Cooking", "ctx_a": "x", "ctx_b": "y", "ctx": "She stirs the pot.",)"
                        R"( "endings": ["It boils.", "It flies.", "It sings.", "It reads."], "label": 0, "split": "val"})"
                        "\n\n"  // a blank line is skipped
                        R"({"context": "One two", "endings": ["three", "four"], "label": "1"})"
                        "\n"
                        R"({"ctx_a": "A man", "ctx_b": "walks in.", "endings": ["He sits.", "He flies."], "label": 1})"
                        "\n");
  ASSERT_EQ(t.examples.size(), 3u);
  const McExample& a = t.examples[0];
  EXPECT_EQ(a.line, 1);
  EXPECT_EQ(a.label, 0);
  EXPECT_EQ(a.context, bytes_of("She stirs the pot."));
  ASSERT_EQ(a.endings.size(), 4u);
  EXPECT_EQ(a.endings[1], bytes_of(" It flies.")) << "an ending is read after a space, as llm.c's hellaswag.py does";
  EXPECT_EQ(a.ending_bytes[1], 10);
  const McExample& b = t.examples[1];
  EXPECT_EQ(b.line, 3);
  EXPECT_EQ(b.label, 1) << "Hugging Face's string label";
  EXPECT_EQ(b.context, bytes_of("One two"));
  EXPECT_EQ(t.examples[2].context, bytes_of("A man walks in.")) << "ctx_a + \" \" + ctx_b";
  EXPECT_EQ(t.cut, 0);
  EXPECT_EQ(t.cut_note(), "");
}

TEST(McTaskFile, RowsKeepTheLastWindowOfTokens) {
  TempDir d;
  // seq_len 8: a row holds at most 9 tokens, the model reads 8 of them.
  const McTask t = read(d / "t.jsonl",
                        R"({"context": "abcdefghijkl", "endings": ["xy", "uvwxyz0123"], "label": 0})"
                        "\n"
                        R"({"context": "ab", "endings": ["cd", "ef"], "label": 1})"
                        "\n",
                        8);
  EXPECT_EQ(t.cut, 1);
  EXPECT_NE(t.cut_note().find("1 of 2 examples"), std::string::npos) << t.cut_note();
  const McExample& a = t.examples[0];
  EXPECT_TRUE(a.cut);
  EXPECT_EQ(a.context, bytes_of("efghijkl")) << "the context keeps its last seq_len tokens";
  const TokenRow r0 = a.row(0, 8);
  EXPECT_EQ(r0.tokens, bytes_of("ghijkl xy"));
  EXPECT_EQ(r0.first, 6) << "the ending's tokens are scored, nothing of the context";
  // An ending longer than the window: no context left, its first token has nothing before it.
  const TokenRow r1 = a.row(1, 8);
  EXPECT_EQ(r1.tokens, bytes_of("vwxyz0123"));
  EXPECT_EQ(r1.first, 1);
  const TokenRow r2 = t.examples[1].row(1, 8);
  EXPECT_EQ(r2.tokens, bytes_of("ab ef"));
  EXPECT_EQ(r2.first, 2);
  EXPECT_FALSE(t.examples[1].cut);
}

// Losses made up per (row, ending): whatever `table` says for each row's tokens.
class TableScorer final : public RowScorer {
 public:
  std::map<std::vector<int32_t>, RowLoss> table;
  int calls = 0;
  std::vector<RowLoss> score(std::span<const TokenRow> rows) override {
    ++calls;
    std::vector<RowLoss> out;
    for (const TokenRow& r : rows) out.push_back(table.at(r.tokens));
    return out;
  }
};

TEST(McScore, ThreeRulesAndTheirCounts) {
  TempDir d;
  // Endings " a", " bbbb", " cc" of 2, 5 and 3 bytes; the scorer says they were 2, 2 and 3
  // tokens (as a BPE might cut them), so that the mean per token and per byte differ:
  //   x: sums 2.0 4.5 2.4 -> means 1.0 2.25 0.8 (" cc"), sum " a", per byte 1.0 0.9 0.8 (" cc")
  //   y: sums 1.8 4.0 3.3 -> means 0.9 2.0 1.1 (" a"),   sum " a", per byte 0.9 0.8 1.1 (" bbbb")
  //   z: all sums 3.0     -> means 1.5 1.5 1.0 (" cc"),  sum " a" (the first on a tie),
  //                          per byte 1.5 0.6 1.0 (" bbbb")
  const McTask t = read(d / "t.jsonl",
                        R"({"context": "x", "endings": ["a", "bbbb", "cc"], "label": 2})"
                        "\n"
                        R"({"context": "y", "endings": ["a", "bbbb", "cc"], "label": 0})"
                        "\n"
                        R"({"context": "z", "endings": ["a", "bbbb", "cc"], "label": 1})"
                        "\n");
  TableScorer s;
  auto set = [&](const std::string& ctx, double a, double b, double c) {
    s.table[bytes_of(ctx + " a")] = RowLoss{a, 2};
    s.table[bytes_of(ctx + " bbbb")] = RowLoss{b, 2};
    s.table[bytes_of(ctx + " cc")] = RowLoss{c, 3};
  };
  set("x", 2.0, 4.5, 2.4);
  set("y", 1.8, 4.0, 3.3);
  set("z", 3.0, 3.0, 3.0);
  SingleComm comm;
  const McResult r = score_mc(t, s, comm);
  ASSERT_EQ(r.scores.size(), 3u);
  const int want[3][3] = {{2, 0, 2}, {0, 0, 1}, {2, 0, 1}};  // choice, choice_sum, choice_bytes
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(r.scores[i].choice, want[i][0]) << "example " << i;
    EXPECT_EQ(r.scores[i].choice_sum, want[i][1]) << "example " << i;
    EXPECT_EQ(r.scores[i].choice_bytes, want[i][2]) << "example " << i;
  }
  EXPECT_EQ(r.examples, 3);
  EXPECT_EQ(r.correct, 2);        // x, y
  EXPECT_EQ(r.correct_sum, 1);    // y
  EXPECT_EQ(r.correct_bytes, 2);  // x, z
  EXPECT_DOUBLE_EQ(r.chance, 1.0 / 3);
  EXPECT_NE(r.summary().find("acc       0.6667 (2/3)"), std::string::npos) << r.summary();
  EXPECT_NE(r.summary().find("acc_sum   0.3333 (1/3)"), std::string::npos) << r.summary();
}

TEST(McScore, ManyExamplesInChunksKeepTheirOrder) {
  TempDir d;
  // More examples than one call of the scorer takes; each example's right ending has the
  // lowest loss, so every one must be counted right whatever the chunking.
  Rng rng(5);
  std::string lines;
  TableScorer s;
  const int n = 150;
  for (int i = 0; i < n; ++i) {
    const int label = static_cast<int>(rng.below(4));
    const std::string ctx = std::to_string(i) + "c";
    lines += nlohmann::json{{"context", ctx}, {"endings", {"e0", "e1", "e2", "e3"}}, {"label", label}}.dump() + "\n";
    for (int k = 0; k < 4; ++k) s.table[bytes_of(ctx + " e" + std::to_string(k))] = RowLoss{k == label ? 1.0 : 2.0 + k, 3};
  }
  const McTask t = read(d / "t.jsonl", lines);
  SingleComm comm;
  const McResult r = score_mc(t, s, comm);
  EXPECT_GT(s.calls, 1);
  EXPECT_EQ(r.correct, n);
  EXPECT_EQ(r.correct_sum, n);
  EXPECT_EQ(r.correct_bytes, n);
}

}  // namespace
}  // namespace loom::test
