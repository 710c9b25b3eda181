// sampler.cpp: the position-counting decoder and the sampling policies.
#include "launch/run/sampler.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <numeric>

namespace loom {

Decoder::Decoder(const ModelConfig& cfg, const std::vector<float>& params, Backend& be, const StFile& tensors)
    : cfg_(cfg), impl_(model_kind(cfg.kind).decoder(cfg, ModelWeights{params, tensors}, be)) {}

Decoder::Decoder(const ModelConfig& cfg, std::unique_ptr<TokenDecoder> impl) : cfg_(cfg), impl_(std::move(impl)) {}

Decoder::~Decoder() = default;

std::vector<float> Decoder::step(int32_t token) {
  LOOM_CHECK(token >= 0 && token < cfg_.vocab, "token ", token, " outside vocabulary");
  auto logits = impl_->step(token, pos_);
  ++pos_;
  return logits;
}

void Decoder::reset() {
  impl_->reset();
  pos_ = 0;
}

int Decoder::capacity() const { return impl_->capacity(); }

Decoder::State Decoder::save() const { return {pos_, impl_->save()}; }

void Decoder::restore(const State& s) {
  LOOM_CHECK(s.impl, "restore of an empty decoder state");
  impl_->restore(*s.impl);
  pos_ = s.pos;
}

int32_t pick_token(std::vector<float> logits, const SampleOptions& o, Rng& rng) {
  const int V = static_cast<int>(logits.size());
  if (o.greedy || o.temperature <= 0)
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::vector<int> idx(V);
  std::iota(idx.begin(), idx.end(), 0);
  // Sorted by logit, highest first; ties broken by id so the order is deterministic.
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  int keep = V;
  if (o.top_k > 0) keep = std::min(keep, o.top_k);
  const double mx = logits[idx[0]];
  std::vector<double> p(keep);
  double sum = 0;
  for (int i = 0; i < keep; ++i) sum += (p[i] = std::exp((logits[idx[i]] - mx) / o.temperature));
  for (auto& q : p) q /= sum;
  if (o.top_p < 1.0) {
    double c = 0;
    int k = 0;
    while (k < keep && (k == 0 || c < o.top_p)) c += p[k++];
    keep = k;
    sum = 0;
    for (int i = 0; i < keep; ++i) sum += p[i];
    for (int i = 0; i < keep; ++i) p[i] /= sum;
  }
  double u = rng.uniform_double(), c = 0;
  for (int i = 0; i < keep; ++i) {
    c += p[i];
    if (u < c) return idx[i];
  }
  return idx[keep - 1];
}

std::vector<int32_t> generate(Decoder& dec, const std::vector<int32_t>& prompt, const SampleOptions& o,
                              const std::function<void(int32_t)>& on_token) {
  LOOM_CHECK(!prompt.empty(), "empty prompt");
  Rng rng(o.seed);
  std::vector<int32_t> ctx = prompt;
  // Only the last `capacity` prompt tokens can be seen.
  const int cap = dec.capacity();
  auto refill = [&](size_t keep) {
    dec.reset();
    std::vector<float> logits;
    for (size_t i = ctx.size() - keep; i < ctx.size(); ++i) logits = dec.step(ctx[i]);
    return logits;
  };
  std::vector<float> logits = refill(std::min<size_t>(ctx.size(), cap));
  std::vector<int32_t> out;
  for (int i = 0; i < o.max_new_tokens; ++i) {
    const int32_t t = pick_token(logits, o, rng);
    out.push_back(t);
    ctx.push_back(t);
    if (on_token) on_token(t);
    if (i + 1 == o.max_new_tokens) break;
    if (dec.pos() >= cap)
      logits = refill(std::max<size_t>(1, cap / 2));
    else
      logits = dec.step(t);
  }
  return out;
}

std::vector<Hypothesis> beam_generate(Decoder& dec, const std::vector<int32_t>& prompt, BeamOptions o) {
  LOOM_CHECK(!prompt.empty(), "empty prompt");
  const int cap = dec.capacity();
  const size_t fed = std::min<size_t>(prompt.size(), static_cast<size_t>(cap));
  dec.reset();
  std::vector<float> logits;
  for (size_t i = prompt.size() - fed; i < prompt.size(); ++i) logits = dec.step(prompt[i]);
  // The last token of a hypothesis is never fed, so a full context still yields one more.
  if (cap != INT_MAX) o.max_len = static_cast<int>(std::min<int64_t>(o.max_len, int64_t{cap} - static_cast<int64_t>(fed) + 1));
  std::vector<Decoder::State> states{dec.save()};
  return beam_search(
      [&](const std::vector<BeamRow>& rows) {
        std::vector<std::vector<double>> out;
        if (rows.size() == 1 && rows[0].parent < 0) {
          out.push_back(log_softmax(logits));
          return out;
        }
        std::vector<Decoder::State> grown;
        for (const BeamRow& r : rows) {
          dec.restore(states[r.parent]);
          out.push_back(log_softmax(dec.step(r.token)));
          grown.push_back(dec.save());
        }
        states = std::move(grown);
        return out;
      },
      o);
}

}  // namespace loom
