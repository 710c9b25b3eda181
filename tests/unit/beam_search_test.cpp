// beam_search_test.cpp: beam search (launch/run/beam_search.h) on hand-built distributions
// whose best sequence is known, and on every model kind through the sampler's Decoder: a saved
// decoder state forks a prefix, beam 1 is greedy decoding, and a hypothesis's reported
// log-probability is the one the model's own forward pass gives the sequence.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "tests/support/tiny_models.h"

namespace loom::test {
namespace {

// A next-token table over a 3-token vocabulary {0, 1, 2 = EOS}, keyed by the prefix.
using Table = std::map<std::vector<int32_t>, std::vector<double>>;

NextLogProbs from_table(const Table& t, int* calls = nullptr) {
  return [&t, calls](const std::vector<BeamRow>& rows) {
    std::vector<std::vector<double>> out;
    for (const BeamRow& r : rows) {
      const auto it = t.find(*r.prefix);
      EXPECT_NE(it, t.end()) << "a prefix the table does not hold";
      std::vector<double> lp;
      for (double p : it->second) lp.push_back(std::log(p));
      out.push_back(lp);
    }
    if (calls) ++*calls;
    return out;
  };
}

// Greedy takes 0 (p 0.6) and then has only 0.4-likely tokens: 0.6 * 0.4 = 0.24. Beam 2 keeps 1
// (p 0.4) too, whose continuation 1 has p 0.9: 0.36, the best sequence.
const Table kGarden = {
    {{}, {0.6, 0.4, 0.0}},
    {{0}, {0.4, 0.3, 0.3}},
    {{1}, {0.05, 0.9, 0.05}},
    {{0, 0}, {0.2, 0.2, 0.6}},
    {{0, 1}, {0.2, 0.2, 0.6}},
    {{0, 2}, {1, 1, 1}},  // never asked: 2 is EOS
    {{1, 1}, {0.1, 0.1, 0.8}},
    {{1, 0}, {0.1, 0.1, 0.8}},
};

TEST(BeamSearch, FindsTheBestSequenceGreedyMisses) {
  BeamOptions o{.beam = 1, .max_len = 2};
  const auto greedy = beam_search(from_table(kGarden), o);
  ASSERT_EQ(greedy.size(), 1u);
  EXPECT_EQ(greedy[0].tokens, (std::vector<int32_t>{0, 0}));
  EXPECT_NEAR(greedy[0].log_prob, std::log(0.6 * 0.4), 1e-12);
  EXPECT_FALSE(greedy[0].ended);
  o.beam = 2;
  const auto best = beam_search(from_table(kGarden), o);
  ASSERT_EQ(best.size(), 1u);
  EXPECT_EQ(best[0].tokens, (std::vector<int32_t>{1, 1}));
  EXPECT_NEAR(best[0].log_prob, std::log(0.4 * 0.9), 1e-12);
  EXPECT_EQ(best[0].score, best[0].log_prob) << "no length penalty: the score is the log-probability";
}

TEST(BeamSearch, NBestInOrderWithEos) {
  // Three steps allowed, EOS = 2. After step 2 the live hypotheses are 1 1 (.36), 0 0 (.24),
  // 0 1 (.18; 0 EOS ties with it at .18 but ranks 4th of the candidates, so it is dropped);
  // step 3 ends all three with EOS.
  BeamOptions o{.beam = 3, .n_best = 3, .max_len = 3, .eos = 2};
  int calls = 0;
  const auto all = beam_search(from_table(kGarden, &calls), o);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].tokens, (std::vector<int32_t>{1, 1, 2}));
  EXPECT_NEAR(all[0].log_prob, std::log(0.4 * 0.9 * 0.8), 1e-12);
  EXPECT_EQ(all[1].tokens, (std::vector<int32_t>{0, 0, 2}));
  EXPECT_NEAR(all[1].log_prob, std::log(0.6 * 0.4 * 0.6), 1e-12);
  EXPECT_EQ(all[2].tokens, (std::vector<int32_t>{0, 1, 2}));
  EXPECT_NEAR(all[2].log_prob, std::log(0.6 * 0.3 * 0.6), 1e-12);
  for (const auto& h : all) EXPECT_TRUE(h.ended);
  for (size_t i = 1; i < all.size(); ++i) EXPECT_GT(all[i - 1].score, all[i].score);
  EXPECT_EQ(calls, 3);
  // n-best 2 is the first two of the same search.
  o.n_best = 2;
  const auto two = beam_search(from_table(kGarden), o);
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[1].tokens, all[1].tokens);
}

TEST(BeamSearch, StopsWhenFinishedBeatEveryLiveHypothesis) {
  // EOS first with p 0.9: beam 1 finishes it at once and never asks for a second step, though
  // max_len allows 50 (a live hypothesis has at most log 0.1).
  const Table t = {{{}, {0.05, 0.05, 0.9}}};
  int calls = 0;
  const auto h = beam_search(from_table(t, &calls), {.beam = 1, .max_len = 50, .eos = 2});
  ASSERT_EQ(h.size(), 1u);
  EXPECT_EQ(h[0].tokens, (std::vector<int32_t>{2}));
  EXPECT_TRUE(h[0].ended);
  EXPECT_EQ(calls, 1);
}

TEST(BeamSearch, LengthPenaltyFavoursLongerHypotheses) {
  // EOS at once has p .4 (1 token); 0 1 EOS has .5 * .75 * .94 = .3525 (3 tokens). By
  // log-probability the short one wins; GNMT's penalty with alpha 1 divides the long one's by
  // 8/6 and the short one's by 1: -0.782 against -0.916.
  const Table t = {
      {{}, {0.5, 0.1, 0.4}},           {{0}, {0.05, 0.75, 0.2}},      {{1}, {0.3, 0.3, 0.4}},
      {{0, 1}, {0.04, 0.02, 0.94}},    {{1, 0}, {0.3, 0.3, 0.4}},
  };
  BeamOptions o{.beam = 2, .max_len = 3, .eos = 2};
  const auto plain = beam_search(from_table(t), o);
  EXPECT_EQ(plain[0].tokens, (std::vector<int32_t>{2}));
  EXPECT_NEAR(plain[0].score, std::log(0.4), 1e-12);
  o.length_penalty = 1.0;
  const auto h = beam_search(from_table(t), o);
  EXPECT_EQ(h[0].tokens, (std::vector<int32_t>{0, 1, 2}));
  EXPECT_NEAR(h[0].log_prob, std::log(0.5 * 0.75 * 0.94), 1e-12);
  EXPECT_NEAR(h[0].score, std::log(0.5 * 0.75 * 0.94) / (8.0 / 6.0), 1e-12);
  EXPECT_NEAR(gnmt_length_penalty(3, 1.0), 8.0 / 6.0, 1e-15);
  EXPECT_NEAR(gnmt_length_penalty(7, 0.6), std::pow(2.0, 0.6), 1e-15);
}

TEST(BeamSearch, LogSoftmaxSumsToOne) {
  const std::vector<float> logits = {3.5f, -1.25f, 0.5f, 80.0f};
  const auto lp = log_softmax(logits);
  double sum = 0;
  for (double l : lp) sum += std::exp(l);
  EXPECT_NEAR(sum, 1.0, 1e-12);
  EXPECT_NEAR(lp[0] - lp[1], 4.75, 1e-12);
}

const ModelConfig kTiny = {.n_layer = 2, .n_head = 2, .d_model = 16, .context = 3, .order = 3, .seq_len = 12,
                           .vocab = 23};

ModelConfig tiny(const char* kind) {
  ModelConfig c = kTiny;
  c.kind = kind;
  return c;
}

// Natural-log probability of `gen` after `prompt` from the kind's full forward pass (the Eval
// graph, or the n-gram model's log_prob of each prefix).
double full_log_prob(const ModelConfig& c, uint64_t seed, const std::vector<int32_t>& prompt,
                     const std::vector<int32_t>& gen, Backend& be) {
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), gen.begin(), gen.end());
  const TinyModel m = tiny_model_with_logits(c, seed, std::span<const int32_t>(all).first(all.size() - 1), be);
  double lp = 0;
  for (size_t i = 0; i < gen.size(); ++i) {
    const size_t row = prompt.size() - 1 + i;
    lp += log_softmax(std::span<const float>(m.full).subspan(row * c.vocab, c.vocab))[gen[i]];
  }
  return lp;
}

// Every kind: a saved state forks the prefix (restore, then the same token, gives the same
// logits as before), beam 1 equals greedy decoding token for token, and the best hypothesis
// of a wider beam reports the log-probability the full forward pass gives its tokens.
TEST(BeamSearch, EveryKindForksItsDecoderAndScoresAsTheModel) {
  auto be = make_cpu_backend();
  const std::vector<int32_t> prompt = {3, 17, 5};
  for (const ModelKind* kind : model_kinds()) {
    if (kind->learns_pairs()) continue;  // decoded from a source: encdec_e2e_test.cpp
    SCOPED_TRACE(kind->name());
    const ModelConfig c = tiny(kind->name());
    const uint64_t seed = 7;
    const TinyModel m = tiny_model_with_logits(c, seed, prompt, *be);
    Decoder dec(c, m.params, *be, m.tensors);
    for (int32_t t : prompt) dec.step(t);
    const Decoder::State fork = dec.save();
    const auto a = dec.step(9);
    dec.step(4);
    dec.step(11);
    dec.restore(fork);
    EXPECT_EQ(dec.pos(), 3);
    EXPECT_LT(worst_diff(dec.step(9), a, 0), 1e-6) << "restore did not return to the fork";
    dec.restore(fork);
    EXPECT_GT(worst_diff(dec.step(10), a, 0), 1e-6) << "another token gave the same logits";

    // Beam 1 = greedy, to the end of the context for GPT (seq_len 12 - 3 prompt + 1).
    SampleOptions g{.max_new_tokens = 10, .greedy = true};
    const auto greedy = generate(dec, prompt, g);
    const auto one = beam_generate(dec, prompt, {.beam = 1, .max_len = 10});
    ASSERT_EQ(one.size(), 1u);
    EXPECT_EQ(one[0].tokens, greedy);

    const auto best = beam_generate(dec, prompt, {.beam = 4, .n_best = 4, .max_len = 6});
    ASSERT_EQ(best.size(), 4u);
    for (size_t i = 1; i < best.size(); ++i) EXPECT_GE(best[i - 1].score, best[i].score);
    for (const auto& h : best) {
      ASSERT_EQ(h.tokens.size(), 6u);
      const double want = full_log_prob(c, seed, prompt, h.tokens, *be);
      EXPECT_NEAR(h.log_prob, want, 1e-4 * (1 + std::fabs(want)));
    }
  }
}

}  // namespace
}  // namespace loom::test
