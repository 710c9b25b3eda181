// span_kinds_test.cpp: the kinds of span-corruption target tokens and their left neighbours
// (checked against where span_corrupt took each token from), and the counting baselines
// (Witten-Bell's formula by hand on a tiny split; every distribution sums to 1).
#include <gtest/gtest.h>

#include <cmath>

#include "core/rng.h"
#include "engine/data/prepare_pairs.h"
#include "launch/run/span_kinds.h"
#include "tests/support/seeded_test.h"

namespace loom::test {
namespace {

class SpanKinds : public SeededTest {};

TEST_F(SpanKinds, EveryTargetTokenGetsItsKindAndItsNeighbourInTheLine) {
  SEED_TRACE();
  Rng& rng = rng_;
  const PairVocab v{50, 100};
  std::vector<uint32_t> line, source, target;
  int64_t starts = 0, insides = 0;
  for (int trial = 0; trial < 300; ++trial) {
    line.resize(2 + rng.below(60));
    for (auto& x : line) x = static_cast<uint32_t>(rng.below(v.base));
    span_corrupt(line, v, 0.05 + 0.5 * rng.uniform_double(), 1.0 + 4.0 * rng.uniform_double(), rng, source, target);
    // Where each target token came from: walk the source, giving sentinel k's span the line
    // positions that follow the tokens before it.
    std::vector<int64_t> from;  // line position of each span token, in target order
    size_t at = 0, t = 0;
    for (uint32_t x : source) {
      if (!v.is_sentinel(x)) {
        ASSERT_EQ(x, line[at]);
        ++at;
        continue;
      }
      ASSERT_EQ(target[t++], x);
      while (t < target.size() && !v.is_sentinel(target[t])) {
        ASSERT_EQ(target[t], line[at]);
        from.push_back(static_cast<int64_t>(at++));
        ++t;
      }
    }
    ASSERT_EQ(at, line.size());
    std::vector<int32_t> s(source.begin(), source.end()), y(target.begin(), target.end());
    y.push_back(static_cast<int32_t>(v.eos()));
    const std::vector<SpanToken> k = span_token_kinds(s, y, v);
    ASSERT_EQ(k.size(), y.size());
    EXPECT_EQ(k.back().kind, SpanTokenKind::Eos);
    size_t span_token = 0;
    for (size_t i = 0; i + 1 < y.size(); ++i) {
      if (v.is_sentinel(static_cast<uint32_t>(y[i]))) {
        EXPECT_EQ(k[i].kind, SpanTokenKind::Sentinel) << i;
        continue;
      }
      const int64_t pos = from.at(span_token++);
      const bool first = v.is_sentinel(static_cast<uint32_t>(y[i - 1]));
      EXPECT_EQ(k[i].kind, first ? SpanTokenKind::SpanStart : SpanTokenKind::SpanInside) << i;
      EXPECT_EQ(k[i].left, pos == 0 ? v.bos() : line[static_cast<size_t>(pos - 1)]) << "token " << i << " at " << pos;
      (first ? starts : insides) += 1;
    }
    EXPECT_EQ(span_token, from.size());
  }
  EXPECT_GT(starts, 300);  // every trial has a span start, and most have insides too
  EXPECT_GT(insides, 300);
}

TEST_F(SpanKinds, BaselinesAreWittenBellOverTheTrainLines) {
  TempDir& dir = dir_;
  const PairVocab v{8, 100};
  const uint32_t s0 = v.sentinel(0), s1 = v.sentinel(1);
  {
    PairWriter w(dir.str(), "train", v.size());
    // Lines 1 2 3 and 1 2 4 5: spans [2] and [1], then [4] and [5].
    w.append(std::vector<uint32_t>{1, s0, 3}, std::vector<uint32_t>{s0, 2});
    w.append(std::vector<uint32_t>{s0, 2, s1, 5}, std::vector<uint32_t>{s0, 1, s1, 4});
    w.append(std::vector<uint32_t>{s0, 7}, std::vector<uint32_t>{s0, 6});  // past the pairs counted
    w.finish();
  }
  const SpanBaselines b(PairSplit(dir.str(), "train"), 2, v);
  // The first 2 pairs' 7 tokens: 1 x2, 2 x2, 3, 4, 5; add-one over the 8 tokens of the vocabulary.
  auto pu = [](double c) { return (c + 1) / (7 + 8); };
  EXPECT_NEAR(b.log_unigram(1), std::log(pu(2)), 1e-12);
  EXPECT_NEAR(b.log_unigram(3), std::log(pu(1)), 1e-12);
  EXPECT_NEAR(b.log_unigram(7), std::log(pu(0)), 1e-12);
  // After 2: 3 once and 4 once (2 bigrams, 2 types); after BOS: 1 twice (1 type); 7 never left.
  EXPECT_NEAR(b.log_bigram(2, 3), std::log((1 + 2 * pu(1)) / (2 + 2)), 1e-12);
  EXPECT_NEAR(b.log_bigram(2, 1), std::log((0 + 2 * pu(2)) / (2 + 2)), 1e-12);
  EXPECT_NEAR(b.log_bigram(v.bos(), 1), std::log((2 + 1 * pu(2)) / (2 + 1)), 1e-12);
  EXPECT_NEAR(b.log_bigram(7, 5), std::log(pu(1)), 1e-12);
  for (uint32_t left : {1u, 2u, 4u, 5u, 7u, v.bos()}) {
    double sum = 0;
    for (uint32_t y = 0; y < v.base; ++y) sum += std::exp(b.log_bigram(left, y));
    EXPECT_NEAR(sum, 1.0, 1e-12) << "after " << left;
  }
  double sum = 0;
  for (uint32_t y = 0; y < v.base; ++y) sum += std::exp(b.log_unigram(y));
  EXPECT_NEAR(sum, 1.0, 1e-12);
}

}  // namespace
}  // namespace loom::test
