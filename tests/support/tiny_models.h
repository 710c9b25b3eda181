// tiny_models.h: tiny models in the system tests: the logits of a whole sequence as a kind
// evaluates it, and the check that the sampler's step-by-step Decoder gives the same logits,
// written once for every model kind (GPT's KV cache, the recurrent kinds' carried state, the
// feed-forward window, the n-gram model's history).
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <span>
#include <string>
#include <vector>

#include "core/rng.h"
#include "engine/backend/backend.h"
#include "engine/graph/executor.h"
#include "engine/io/safetensors.h"
#include "launch/run/sampler.h"
#include "models/model.h"

namespace loom::test {

// Logits [T, vocab] of `c`'s Eval graph, batch 1, over `toks` (T = toks.size()). Recurrent
// kinds start from `state` (one f32 vector per layer; zeros for layers it lacks) and leave
// their final state there; without `state` they start from zeros.
inline std::vector<float> eval_logits(const ModelConfig& c, std::vector<float> params, std::span<const int32_t> toks,
                                      Backend& be, std::vector<std::vector<float>>* state = nullptr) {
  const int T = static_cast<int>(toks.size());
  ModelGraph m = build_model(c, GraphMode::Eval, 1, T, DType::F32, true);
  Executor ex(m.g, be);
  ex.bind_params(params.data(), nullptr);
  std::vector<std::vector<float>> zeros;
  std::vector<std::vector<float>>& st = state ? *state : zeros;
  for (size_t l = 0; l < m.state_in.size(); ++l) {
    if (st.size() <= l) st.emplace_back(numel(m.g.values[m.state_in[l]].shape), 0.0f);
    ex.set_input(m.state_in[l], st[l].data(), st[l].size() * 4);
  }
  ex.set_input(m.tokens, toks.data(), T * 4);
  ex.set_input(m.targets, toks.data(), T * 4);  // the logits do not read the targets
  ex.forward();
  for (size_t l = 0; l < m.state_out.size(); ++l) st[l] = ex.fetch<float>(m.state_out[l]);
  return ex.fetch<float>(m.logits);
}

// A model's weights for the check below: parameters (graph kinds) or count tensors (counting
// kinds), and the logits [T, vocab] of a whole sequence as training and `loom eval` see them.
struct TinyModel {
  std::vector<float> params;
  StFile tensors;
  std::vector<float> full;
};

// `c`'s kind with weights from `seed` (graph kinds: init_params; counting kinds: the counts of
// a random corpus) and the logits of `toks`: the Eval graph's, or every prefix's log_prob.
inline TinyModel tiny_model_with_logits(const ModelConfig& c, uint64_t seed, std::span<const int32_t> toks,
                                        Backend& be) {
  TinyModel m;
  const ModelKind& kind = model_kind(c.kind);
  if (!kind.counts()) {
    m.params = init_params(c, seed);
    m.full = eval_logits(c, m.params, toks, be);
    return m;
  }
  Rng rng(seed);
  std::vector<uint32_t> corpus(10 * c.vocab * c.vocab);
  for (auto& t : corpus) t = static_cast<uint32_t>(rng.below(c.vocab));
  auto counts = kind.new_counts(c);
  counts->count(corpus, 0, corpus.size());
  counts->finalize();
  m.tensors.tensors = counts->to_tensors();
  for (size_t t = 0; t < toks.size(); ++t)
    for (int v = 0; v < c.vocab; ++v)
      m.full.push_back(static_cast<float>(counts->log_prob(toks.subspan(0, t + 1), v)));
  return m;
}

// Largest |a[i] - b[off + i]| over a's elements; NaN when either side has a NaN, so that no
// comparison with it passes.
inline double worst_diff(const std::vector<float>& a, const std::vector<float>& b, size_t off) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(static_cast<double>(a[i]) - b[off + i]);
    if (std::isnan(d)) return NAN;
    worst = std::max(worst, d);
  }
  return worst;
}

// Feeds `c.seq_len` random tokens one at a time through the sampler's Decoder for `c` (on the
// CPU backend) and expects, at every step, the logits of the whole sequence within 1e-4. The
// check can fail: a changed first token must move the second step's logits by more than
// `min_change`, in a fresh decoder; and reset() starts over (the same logits again).
inline void expect_decoder_matches_full_forward(const ModelConfig& c, uint64_t seed, double min_change = 1e-4) {
  SCOPED_TRACE(c.kind);
  auto be = make_cpu_backend();
  const int T = c.seq_len, V = c.vocab;
  Rng rng(seed + 1);
  std::vector<int32_t> toks(T);
  for (auto& t : toks) t = static_cast<int32_t>(rng.below(V));
  const TinyModel m = tiny_model_with_logits(c, seed, toks, *be);
  ASSERT_EQ(m.full.size(), static_cast<size_t>(T) * V);

  Decoder dec(c, m.params, *be, m.tensors);
  double worst = 0;
  for (int t = 0; t < T; ++t) {
    const auto step = dec.step(toks[t]);
    ASSERT_EQ(step.size(), static_cast<size_t>(V));
    const double d = worst_diff(step, m.full, static_cast<size_t>(t) * V);
    if (std::isnan(d) || d > worst) worst = d;  // a NaN stays
  }
  EXPECT_LT(worst, 1e-4) << "step-by-step and full logits differ";

  Decoder other(c, m.params, *be, m.tensors);
  other.step((toks[0] + 1) % V);
  EXPECT_GT(worst_diff(other.step(toks[1]), m.full, V), min_change) << "a changed first token changed nothing";

  dec.reset();
  EXPECT_EQ(dec.pos(), 0);
  dec.step(toks[0]);
  EXPECT_LT(worst_diff(dec.step(toks[1]), m.full, V), 1e-4) << "reset() did not start over";
}

}  // namespace loom::test
