// ffnn.cpp: the feed-forward neural LM of Bengio et al. (2003), model.kind = ffnn. Each
// position predicts the next token from the embeddings of the model.context tokens ending at
// it, concatenated -> n_layer tanh hidden layers of d_hidden -> linear classifier -> softmax.
// Positions before the start of a window read a learned padding row (row `vocab` of wte).
#include <algorithm>
#include <climits>
#include <cmath>
#include <deque>

#include "models/graph_decoder.h"
#include "models/model.h"

namespace loom {

namespace {

ModelGraph build_ffnn(const ModelConfig& c, GraphMode mode, int B, int T, DType dt, bool keep_logits) {
  ModelGraph m(dt);
  Graph& g = m.g;
  m.B = B;
  m.T = T;
  const int64_t E = c.d_model, V = c.vocab, n = c.context, L = c.n_layer;
  const int64_t Dh = c.d_hidden > 0 ? c.d_hidden : 4 * c.d_model;

  const int wte = g.param("wte", {V + 1, E}, Init::Normal, 0.02f, true);  // + the padding row
  std::vector<std::pair<int, int>> hidden;
  for (int l = 0; l < L; ++l) {
    const int64_t in = l == 0 ? n * E : Dh;
    const std::string p = "hidden." + std::to_string(l) + ".";
    hidden.emplace_back(g.param(p + "weight", {Dh, in}, Init::Normal, 1.0f / std::sqrt(static_cast<float>(in)), true),
                        g.param(p + "bias", {Dh}, Init::Zeros, 0, false));
  }
  const int head_w = g.param("head.weight", {V, Dh}, Init::Normal, 1.0f / std::sqrt(static_cast<float>(Dh)), true);
  const int head_b = g.param("head.bias", {V}, Init::Zeros, 0, false);

  m.tokens = g.input("tokens", {B, T}, DType::I32);
  g.set_scope("embed");
  int x = g.context_embedding(m.tokens, wte, static_cast<int>(n), static_cast<int>(V));
  for (int l = 0; l < L; ++l) {
    g.set_scope("hidden." + std::to_string(l));
    x = g.tanh(g.linear(x, hidden[l].first, hidden[l].second));
  }
  g.set_scope("head");
  finish_lm(m, g.linear(x, head_w, head_b), mode, keep_logits);
  return m;
}

// The Eval graph over the last `context` tokens (padding before the first), reading the
// logits of the last position.
class WindowDecoder final : public GraphDecoder {
 public:
  WindowDecoder(const ModelConfig& cfg, const std::vector<float>& params, Backend& be)
      : GraphDecoder(build_ffnn(cfg, GraphMode::Eval, 1, cfg.context, be.float_dtype(), true), params, be),
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
  std::unique_ptr<DecoderState> save() const override {
    return std::make_unique<ValueDecoderState<std::deque<int32_t>>>(window_);
  }
  void restore(const DecoderState& s) override { window_ = ValueDecoderState<std::deque<int32_t>>::of(s); }

 private:
  int n_, pad_, V_;
  std::deque<int32_t> window_;
};

class FfnnKind final : public ModelKind {
 public:
  const char* name() const override { return "ffnn"; }
  std::vector<const char*> required_keys() const override {
    return {"model.n_layer", "model.d_model", "model.context", "optim.lr"};
  }
  std::vector<const char*> keys() const override {
    return {"model.n_layer", "model.d_model", "model.d_hidden", "model.context", "optim.*"};
  }
  void validate(const ModelConfig& c, const Require& req) const override {
    require_in(req, c.n_layer, 1, kMaxLayers, "model.n_layer");
    require_in(req, c.d_model, 1, kMaxWidth, "model.d_model");
    require_in(req, c.context, 1, kMaxContext, "model.context");
  }
  std::string describe(const ModelConfig& c) const override {
    return "L=" + std::to_string(c.n_layer) + " E=" + std::to_string(c.d_model) + " context=" +
           std::to_string(c.context) + " hidden=" + std::to_string(c.d_hidden > 0 ? c.d_hidden : 4 * c.d_model);
  }
  ModelGraph build(const ModelConfig& c, GraphMode mode, int B, int T, DType dt, bool keep_logits, int S) const override {
    LOOM_CHECK(mode != GraphMode::Decode, "model kind ffnn decodes with its Eval graph");
    return build_ffnn(c, mode, B, T, dt, keep_logits);
  }
  double flops_per_token(const ModelConfig& c) const override { return six_n_flops(c, {"wte"}); }
  std::unique_ptr<TokenDecoder> decoder(const ModelConfig& c, const ModelWeights& w, Backend& be) const override {
    return std::make_unique<WindowDecoder>(c, w.params, be);
  }
};

}  // namespace

const ModelKind& ffnn_kind() {
  static const FfnnKind kind;
  return kind;
}

}  // namespace loom
