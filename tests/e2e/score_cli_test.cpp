// score_cli_test.cpp: `loom score` prints sacreBLEU's lines for sacreBLEU's README example (two
// references, one of them with Windows line ends and no final newline), and each metric alone.
#include <gtest/gtest.h>

#include "tests/support/helpers.h"

namespace loom::test {
namespace {

TEST(ScoreCli, ReadmeExampleAsSacrebleuPrintsIt) {
  TempDir t;
  write_bytes(t / "hyp.txt", "The dog bit the man.\nIt wasn't surprising.\nThe man had just bitten him.\n");
  write_bytes(t / "r1.txt", "The dog bit the man.\nIt was not unexpected.\nThe man bit him first.\n");
  write_bytes(t / "r2.txt", "The dog had bit the man.\r\nNo one was surprised.\r\nThe man had bitten the dog.");
  RunResult all = run_loom({"score", "--hyp", t / "hyp.txt", "--ref", t / "r1.txt", "--ref", t / "r2.txt"});
  ASSERT_EQ(all.rc, 0) << all.err;
  // sacreBLEU 2.6.0 on the same files (its version field is ours: the n-gram order).
  EXPECT_EQ(all.out,
            "BLEU|nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp|order:4 = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 "
            "ratio = 0.944 hyp_len = 17 ref_len = 18)\n"
            "chrF2|nrefs:2|case:mixed|eff:yes|nc:6|nw:0|space:no = 59.73\n");
  RunResult chrf = run_loom({"score", "--hyp", t / "hyp.txt", "--ref", t / "r1.txt", "--metric", "chrf"});
  ASSERT_EQ(chrf.rc, 0) << chrf.err;
  EXPECT_EQ(chrf.out.rfind("chrF2|nrefs:1|", 0), 0u) << chrf.out;
  EXPECT_EQ(std::count(chrf.out.begin(), chrf.out.end(), '\n'), 1) << chrf.out;
  RunResult bleu = run_loom({"score", "--hyp", t / "hyp.txt", "--ref", t / "r1.txt", "--ref", t / "r2.txt", "--metric",
                             "bleu", "--tokenize", "none", "--smooth", "floor"});
  ASSERT_EQ(bleu.rc, 0) << bleu.err;
  EXPECT_EQ(bleu.out.rfind("BLEU|nrefs:2|case:mixed|eff:no|tok:none|smooth:floor[0.10]|order:4 = 49.19 ", 0), 0u)
      << bleu.out;
}

}  // namespace
}  // namespace loom::test
