// bleu_chrf_test.cpp: BLEU and chrF (launch/run/bleu_chrf.h) against published numbers: the
// examples of sacreBLEU's own test suite (test/test_bleu.py, test_sentence_bleu.py,
// test_chrf.py), and random corpora whose scores sacreBLEU 2.6.0 computed from the same
// generator (Lcg and random_corpus below, mirrored line for line in a Python script).
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <tuple>
#include <string>
#include <vector>

#include "launch/run/bleu_chrf.h"

namespace loom {
namespace {

using Lines = std::vector<std::string>;

const Lines kHyps = {"The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."};
const std::vector<Lines> kRefs = {
    {"The dog bit the man.", "It was not unexpected.", "The man bit him first."},
    {"The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."}};

TEST(Bleu, SacrebleuCorpusExamples) {
  EXPECT_NEAR(corpus_bleu(kHyps, kRefs).score, 48.530827, 1e-6);
  EXPECT_NEAR(corpus_bleu(kHyps, kRefs, {.smooth = BleuSmooth::None}).score, 48.530827, 1e-6);
  EXPECT_NEAR(corpus_bleu(kHyps, kRefs, {.tokenize_13a = false}).score, 49.1919566, 1e-6);
  // Empty hypotheses are kept (and score 0).
  EXPECT_EQ(corpus_bleu({"", "", ""}, kRefs).score, 0.0);
  const std::vector<std::pair<int, double>> by_order = {{1, 77.65}, {2, 60.50}, {3, 53.93},
                                                        {4, 48.53}, {5, 46.14}, {6, 43.28}};
  for (const auto& [n, want] : by_order) EXPECT_NEAR(corpus_bleu(kHyps, kRefs, {.max_order = n}).score, want, 0.005) << n;
}

TEST(Bleu, SignatureLine) {
  const BleuScore s = corpus_bleu(kHyps, kRefs);
  EXPECT_EQ(s.line.substr(0, s.line.find(" = ")), "BLEU|nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp|order:4");
  EXPECT_NE(s.line.find(" = 48.53 "), std::string::npos) << s.line;
  EXPECT_NE(s.line.find("hyp_len = " + std::to_string(s.sys_len) + " ref_len = " + std::to_string(s.ref_len) + ")"),
            std::string::npos)
      << s.line;
}

// sacreBLEU's raw_corpus_bleu: no tokenisation, floor smoothing, effective order.
BleuOptions raw(double floor) {
  return {.tokenize_13a = false, .smooth = BleuSmooth::Floor, .smooth_value = floor, .effective_order = true};
}

TEST(Bleu, SacrebleuRawAndEffectiveOrder) {
  EXPECT_NEAR(corpus_bleu({"this is a test", "another test"}, {{"ref1", "ref2"}}, raw(0.01)).score, 0.0, 1e-6);
  EXPECT_NEAR(corpus_bleu({"this is a test"}, {{"this is a test"}}, raw(0.01)).score, 100.0, 1e-6);
  EXPECT_NEAR(corpus_bleu({"this is a fest"}, {{"this is a test"}}, raw(0.01)).score, 22.3606797749979, 1e-6);
  EXPECT_NEAR(corpus_bleu({"test"}, {{"a test"}}, raw(0.01)).score, 36.78794411714425, 1e-6);
  EXPECT_NEAR(corpus_bleu({"a little test"}, {{"a test"}}, raw(0.01)).score, 3.218297948685433, 1e-6);
  // Offsets: floor 0 and the default 0.1.
  const Lines h = {"am I am a character sequence"};
  const std::vector<Lines> r = {{"I am a symbol string sequence a a"}};
  EXPECT_NEAR(corpus_bleu(h, r, raw(0.0)).score, 0.0, 1e-6);
  EXPECT_NEAR(corpus_bleu(h, r, raw(-1)).score, 15.55722182, 1e-6);
  const BleuScore st = corpus_bleu(h, r, raw(0.01));
  EXPECT_EQ(st.correct, (std::vector<double>{4, 2, 1, 0}));
  EXPECT_EQ(st.total, (std::vector<double>{6, 5, 4, 3}));
}

TEST(Bleu, SacrebleuFromStatistics) {
  EXPECT_NEAR(bleu_from_stats({9, 7, 5, 3}, {10, 8, 6, 4}, 11, 11, {.smooth = BleuSmooth::None}).score, 83.75922397,
              1e-6);
  // Degenerate statistics give 0, never NaN.
  BleuOptions floor{.smooth = BleuSmooth::Floor};
  for (const auto& [c, t, sys, ref, v] : std::vector<std::tuple<std::vector<double>, std::vector<double>, int, int, double>>{
           {{0, 0, 0, 0}, {4, 4, 2, 1}, 0, 1, 0.0},
           {{0, 0, 0, 0}, {10, 11, 12, 0}, 14, 10, 0.0},
           {{0, 0, 0, 0}, {0, 0, 0, 0}, 0, 0, 0.0},
           {{6, 5, 4, 0}, {6, 5, 4, 3}, 6, 6, 0.0},
           {{0, 0, 0, 0}, {0, 0, 0, 0}, 0, 0, 0.1},
           {{0, 0, 0, 0}, {0, 0, 0, 0}, 1, 5, 0.01}}) {
    floor.smooth_value = v;
    EXPECT_EQ(bleu_from_stats(c, t, sys, ref, floor).score, 0.0);
  }
}

// test_sentence_bleu.py: one segment, effective order, each smoothing.
TEST(Bleu, SacrebleuSentenceSmoothing) {
  const Lines sys = {"Producția de zahăr primă va fi exprimată în ceea ce privește zahărul alb;"};
  const std::vector<Lines> ref = {{"producţia de zahăr brut se exprimă în zahăr alb;"}};
  auto sent = [&](BleuSmooth m, double v, bool tok13a = true) {
    return corpus_bleu(sys, ref, {.tokenize_13a = tok13a, .smooth = m, .smooth_value = v, .effective_order = true}).score;
  };
  EXPECT_NEAR(sent(BleuSmooth::Exp, -1), 8.493, 1e-3);
  EXPECT_NEAR(sent(BleuSmooth::None, -1), 0.0, 1e-3);
  EXPECT_NEAR(sent(BleuSmooth::Floor, -1), 4.51688, 1e-3);
  EXPECT_NEAR(sent(BleuSmooth::Floor, 0.5), 10.10, 1e-3);
  EXPECT_NEAR(sent(BleuSmooth::AddK, -1), 14.882, 1e-3);
  EXPECT_NEAR(sent(BleuSmooth::AddK, 2), 21.389, 1e-3);
  EXPECT_NEAR(sent(BleuSmooth::Exp, -1, false), 7.347, 1e-3);
  for (BleuSmooth m : {BleuSmooth::Exp, BleuSmooth::None, BleuSmooth::Floor, BleuSmooth::AddK})
    EXPECT_EQ(corpus_bleu({"this is a cat"}, {{"okay thanks"}}, {.smooth = m, .effective_order = true}).score, 0.0);
}

TEST(Bleu, Tokenize13a) {
  EXPECT_EQ(tokenize_13a("The dog bit the man."), "The dog bit the man .");
  EXPECT_EQ(tokenize_13a("It wasn't 1,000.5 (x-ray) 10-12 &amp; &quot;q&quot;<skipped>!"),
            "It wasn't 1,000.5 ( x-ray ) 10 - 12 & \" q \" !");
  EXPECT_EQ(tokenize_13a("e.g. U.S. ...\u00a0Zürich"), "e . g . U . S . . . . Zürich");
}

TEST(Utf8, DecodesAndRejects) {
  EXPECT_EQ(utf8_to_u32("aé€𝄞"), std::u32string(U"aé€𝄞"));
  for (const char* bad : {"\xff", "a\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\x80"})
    EXPECT_FALSE(utf8_to_u32(bad).has_value()) << bad;
}

TEST(Chrf, SacrebleuExamples) {
  // test_chrf.py's cases run with beta 3 and epsilon smoothing (chrF++.py's).
  const ChrfOptions eps{.beta = 3, .eps_smoothing = true};
  const std::vector<std::tuple<Lines, Lines, double>> cases = {
      {{"abcdefg"}, {"hijklmnop"}, 0.0},
      {{"a"}, {"b"}, 0.0},
      {{""}, {"b"}, 0.0},
      {{""}, {"ref"}, 0.0},
      {{""}, {"reference"}, 0.0},
      {{"aa"}, {"ab"}, 8.3333},
      {{"a", "b"}, {"a", "c"}, 8.3333},
      {{"a"}, {"a"}, 16.6667},
      {{"a b c"}, {"a b c"}, 50.0},
      {{"a b c"}, {"abc"}, 50.0},
      {{" risk assessment must be made of those who are qualified and expertise in the sector - these are the "
        "scientists ."},
       {"risk assessment has to be undertaken by those who are qualified and expert in that area - that is the "
        "scientists ."},
       63.361730},
      {{" Die    Beziehung zwischen  Obama und Netanjahu ist nicht gerade  freundlich. "},
       {"Das Verhältnis zwischen Obama und Netanyahu ist nicht gerade freundschaftlich."},
       64.1302698},
      {{"Niemand hat die Absicht, eine Mauer zu errichten"}, {"Niemand hat die Absicht, eine Mauer zu errichten"}, 100.0}};
  for (const auto& [h, r, want] : cases) EXPECT_NEAR(corpus_chrf(h, {r}, eps).score, want, 1e-4) << h[0];
  // sacreBLEU 2's own smoothing: the effective order.
  const ChrfOptions eff{.beta = 3};
  const std::vector<std::tuple<Lines, Lines, double>> eff_cases = {
      {{"a"}, {"a"}, 100.0}, {{""}, {"reference"}, 0.0}, {{"a b c"}, {"a b c"}, 100.0}, {{"a b c"}, {"abc"}, 100.0},
      {{""}, {"c"}, 0.0},    {{"a", "b"}, {"a", "c"}, 50.0}, {{"aa"}, {"ab"}, 25.0}};
  for (const auto& [h, r, want] : eff_cases) EXPECT_NEAR(corpus_chrf(h, {r}, eff).score, want, 1e-4) << h[0];
  // Whitespace kept.
  const ChrfOptions space{.beta = 3, .whitespace = true};
  EXPECT_NEAR(corpus_chrf({"Die Beziehung zwischen Obama und Netanjahu ist nicht gerade freundlich."},
                          {{"Das Verhältnis zwischen Obama und Netanyahu ist nicht gerade freundschaftlich."}}, space)
                  .score,
              67.3481606, 1e-4);
  // Sentence level, chrF2 with epsilon smoothing; the characters are code points, not bytes.
  const ChrfOptions sent{.eps_smoothing = true};
  EXPECT_NEAR(corpus_chrf({"Co nás nejvíc trápí, protože lékaři si vybírají, kdo bude žít a kdo zemře."},
                          {{"Nejvíce smutní jsme z toho, že musíme rozhodovat o tom, kdo bude žít a kdo zemře."}}, sent)
                  .score,
              39.14078509, 1e-4);
  EXPECT_NEAR(corpus_chrf({"Lapali po dechu, jejich životy skončily dřív, než skutečně začaly."},
                          {{"Lapali po dechu a pak jejich život skončil - dřív, než skutečně mohl začít, připomněli."}},
                          sent)
                  .score,
              57.15704367, 1e-4);
  EXPECT_EQ(corpus_chrf({"a"}, {{"a"}}).line, "chrF2|nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no = 100.00");
}

// The generator of the cross-check, mirrored in Python: a 64-bit LCG (Knuth's MMIX constants).
struct Lcg {
  uint64_t x;
  uint64_t next(uint64_t n) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    return (x >> 33) % n;
  }
};

const std::vector<std::string> kWords = {
    "the", "dog", "bit", "man", "a", "It", "was", "not", "3.5", "1,000", "end.", "well,", "(hi)", "don't", "x-ray",
    "2-3", "&amp;", "&quot;q&quot;", "été", "naïve", "Zürich", "\u2014", "...", "?", "!", "$5", "10-12", "e.g.", "U.S.",
    "a/b", "<skipped>", " ", "\t", "\u00a0x"};

std::vector<size_t> edit(Lcg& g, const std::vector<size_t>& idx) {
  std::vector<size_t> out;
  for (size_t i : idx) {
    const uint64_t r = g.next(10);
    if (r < 7) {
      out.push_back(i);
    } else if (r < 9) {
      out.push_back(g.next(kWords.size()));
    }
  }
  if (g.next(4) == 0) out.push_back(g.next(kWords.size()));
  return out;
}

std::string join(const std::vector<size_t>& idx) {
  std::string s;
  for (size_t k = 0; k < idx.size(); ++k) s += (k ? " " : "") + kWords[idx[k]];
  return s;
}

// Hypotheses and two reference streams, 40 segments: the reference is random words, the
// hypothesis and the second reference are edits of it.
void random_corpus(uint64_t seed, Lines& hyps, Lines& r1, Lines& r2) {
  Lcg g{seed};
  for (int s = 0; s < 40; ++s) {
    std::vector<size_t> ref(g.next(16));
    for (auto& i : ref) i = g.next(kWords.size());
    const auto hyp = edit(g, ref);
    const auto ref2 = edit(g, ref);
    hyps.push_back(join(hyp));
    r1.push_back(join(ref));
    r2.push_back(join(ref2));
  }
}

TEST(BleuChrf, RandomCorporaMatchSacrebleu) {
  // seed: BLEU 1 ref, BLEU 2 refs, BLEU tok:none, chrF2 1 ref, chrF2 2 refs (sacreBLEU 2.6.0).
  const std::vector<std::array<double, 6>> want = {
      {1, 52.8129249223, 57.0661465497, 39.6069520839, 54.8791655527, 55.9496480627},
      {2, 61.6981358393, 64.4685483750, 48.8590724216, 65.9214972085, 66.3721940832},
      {3, 60.0282158928, 65.0602682849, 48.8769464417, 62.1539665808, 62.4434005838}};
  for (const auto& w : want) {
    Lines h, a, b;
    random_corpus(static_cast<uint64_t>(w[0]), h, a, b);
    EXPECT_NEAR(corpus_bleu(h, {a}).score, w[1], 1e-8) << w[0];
    EXPECT_NEAR(corpus_bleu(h, {a, b}).score, w[2], 1e-8) << w[0];
    EXPECT_NEAR(corpus_bleu(h, {a}, {.tokenize_13a = false}).score, w[3], 1e-8) << w[0];
    EXPECT_NEAR(corpus_chrf(h, {a}).score, w[4], 1e-8) << w[0];
    EXPECT_NEAR(corpus_chrf(h, {a, b}).score, w[5], 1e-8) << w[0];
  }
}

}  // namespace
}  // namespace loom
