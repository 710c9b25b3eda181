// sampler.cpp: KV-cache decoding and the sampling policies.
#include "engine/train/sampler.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <deque>
#include <numeric>

#include "models/ngram/ngram.h"

namespace loom {

namespace {

// A graph on the backend with its weights: what the graph-built kinds share.
class GraphDecoder : public DecoderImpl {
 protected:
  GraphDecoder(ModelGraph mg, const std::vector<float>& params, Backend& be) : be_(be), mg_(std::move(mg)) {
    LOOM_CHECK(static_cast<int64_t>(params.size()) == mg_.g.param_count, "parameter count mismatch");
    weights_ = std::make_unique<DeviceWeights>(be, mg_.g.param_count);
    weights_->upload(params);
    ex_ = std::make_unique<Executor>(mg_.g, be);
    ex_->bind_params(weights_->graph_params(), nullptr);
    if (mg_.targets >= 0) {  // Eval graphs compute a loss too: give them valid targets
      std::vector<int32_t> zeros(static_cast<size_t>(mg_.B) * mg_.T, 0);
      ex_->set_input(mg_.targets, zeros.data(), zeros.size() * 4);
    }
  }
  Backend& be_;
  ModelGraph mg_;
  std::unique_ptr<DeviceWeights> weights_;
  std::unique_ptr<Executor> ex_;
};

// GPT: the decode graph over a KV cache.
class KvCacheDecoder final : public GraphDecoder {
 public:
  KvCacheDecoder(const ModelConfig& cfg, const std::vector<float>& params, Backend& be)
      : GraphDecoder(build_model(cfg, GraphMode::Decode, 1, 1, be.float_dtype()), params, be), seq_len_(cfg.seq_len) {}
  std::vector<float> step(int32_t token, int pos) override {
    LOOM_CHECK(pos < seq_len_, "KV cache full");
    const int32_t p = pos;
    ex_->set_input(mg_.tokens, &token, 4);
    ex_->set_input(mg_.pos, &p, 4);
    ex_->forward();
    return ex_->fetch_f32(mg_.logits);
  }
  void reset() override {}
  int capacity() const override { return seq_len_; }

 private:
  int seq_len_;
};

// Recurrent kinds: one position per step, the final state copied back to the initial one.
class RecurrentDecoder final : public GraphDecoder {
 public:
  RecurrentDecoder(const ModelConfig& cfg, const std::vector<float>& params, Backend& be)
      : GraphDecoder(build_model(cfg, GraphMode::Eval, 1, 1, be.float_dtype(), true), params, be) {
    reset();
  }
  std::vector<float> step(int32_t token, int) override {
    ex_->set_input(mg_.tokens, &token, 4);
    ex_->forward();
    for (size_t l = 0; l < mg_.state_in.size(); ++l)
      be_.copy(ex_->view(mg_.state_in[l]).data, ex_->view(mg_.state_out[l]).data, mg_.g.values[mg_.state_in[l]].bytes());
    return ex_->fetch_f32(mg_.logits);
  }
  void reset() override {
    for (int v : mg_.state_in) be_.zero(ex_->view(v).data, mg_.g.values[v].bytes());
  }
  int capacity() const override { return INT_MAX; }
};

// The feed-forward model: its Eval graph over the last `context` tokens (padding before the
// first), reading the logits of the last position.
class WindowDecoder final : public GraphDecoder {
 public:
  WindowDecoder(const ModelConfig& cfg, const std::vector<float>& params, Backend& be)
      : GraphDecoder(build_model(cfg, GraphMode::Eval, 1, cfg.context, be.float_dtype(), true), params, be),
        n_(cfg.context), pad_(cfg.vocab), V_(cfg.vocab) {}
  std::vector<float> step(int32_t token, int) override {
    window_.push_back(token);
    if (static_cast<int>(window_.size()) > n_) window_.pop_front();
    std::vector<int32_t> x(n_, pad_);
    std::copy(window_.begin(), window_.end(), x.end() - static_cast<std::ptrdiff_t>(window_.size()));
    ex_->set_input(mg_.tokens, x.data(), x.size() * 4);
    ex_->forward();
    const auto all = ex_->fetch_f32(mg_.logits);
    return std::vector<float>(all.end() - V_, all.end());
  }
  void reset() override { window_.clear(); }
  int capacity() const override { return INT_MAX; }

 private:
  int n_, pad_, V_;
  std::deque<int32_t> window_;
};

// The n-gram model: log-probabilities after the last order-1 tokens.
class NgramDecoder final : public DecoderImpl {
 public:
  NgramDecoder(const ModelConfig& cfg, const StFile& counts)
      : model_(NgramModel::from_tensors(counts, "checkpoint")), keep_(cfg.order - 1) {
    model_.finalize();
  }
  std::vector<float> step(int32_t token, int) override {
    history_.push_back(token);
    if (static_cast<int>(history_.size()) > keep_) history_.erase(history_.begin());
    std::vector<double> p;
    model_.probs(history_, p);
    std::vector<float> logits(p.size());
    for (size_t i = 0; i < p.size(); ++i) logits[i] = static_cast<float>(std::log(std::max(p[i], 1e-300)));
    return logits;
  }
  void reset() override { history_.clear(); }
  int capacity() const override { return INT_MAX; }

 private:
  NgramModel model_;
  int keep_;
  std::vector<int32_t> history_;
};

}  // namespace

Decoder::Decoder(const ModelConfig& cfg, const std::vector<float>& params, Backend& be, const StFile* counts)
    : cfg_(cfg) {
  if (cfg.kind == "gpt")
    impl_ = std::make_unique<KvCacheDecoder>(cfg, params, be);
  else if (is_recurrent_kind(cfg.kind))
    impl_ = std::make_unique<RecurrentDecoder>(cfg, params, be);
  else if (cfg.kind == "ffnn")
    impl_ = std::make_unique<WindowDecoder>(cfg, params, be);
  else if (cfg.kind == "ngram") {
    LOOM_CHECK(counts, "the ngram decoder needs the checkpoint's counts");
    impl_ = std::make_unique<NgramDecoder>(cfg, *counts);
  } else {
    user_error("model.kind: cannot decode kind '", cfg.kind, "'");
  }
}

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

}  // namespace loom
