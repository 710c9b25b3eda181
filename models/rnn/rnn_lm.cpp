// rnn_lm.cpp: the recurrent language models (model.kind = lstm | gru | rnn): token embedding
// -> n_layer recurrent layers of width d_model -> linear classifier -> softmax. Each layer's
// state is an input of the graph and its final state a kept output, so the trainer carries it
// from batch to batch (truncated backpropagation through time; kernels/rnn/rnn.h).
// Initialisation as PyTorch's nn.Embedding (N(0, 1)) and its recurrent layers
// (models/recurrent_layer.h).
#include <climits>

#include "models/graph_decoder.h"
#include "models/model.h"
#include "models/recurrent_layer.h"

namespace loom {

namespace {

ModelGraph build_recurrent_lm(Cell cell, const ModelConfig& c, GraphMode mode, int B, int T, DType dt,
                              bool keep_logits) {
  ModelGraph m(dt);
  Graph& g = m.g;
  m.B = B;
  m.T = T;
  const int64_t H = c.d_model, V = c.vocab, L = c.n_layer;

  // N(0, 1) as nn.Embedding: there is no layer norm to rescale it, and with GPT's 0.02 the
  // input's share of the first layer's pre-activations (~0.01) is drowned by the recurrence's,
  // so training sits at the unigram loss for hundreds of steps.
  const int wte = g.param("wte", {V, H}, Init::Normal, 1.0f, true);
  std::vector<RecurrentWeights> layers;
  for (int l = 0; l < L; ++l) layers.push_back(recurrent_params(g, cell, "rnn." + std::to_string(l) + ".", H, H));
  const int head_w = g.param("head.weight", {V, H}, Init::Normal, 0.02f, true);
  const int head_b = g.param("head.bias", {V}, Init::Zeros, 0, false);

  m.tokens = g.input("tokens", {B, T}, DType::I32);
  g.set_scope("embed");
  int x = g.context_embedding(m.tokens, wte, 1, 0);
  for (int l = 0; l < L; ++l) {
    g.set_scope("rnn." + std::to_string(l));
    const int s0 = g.input("state." + std::to_string(l), {cell_states(cell), B, H}, g.stat_dtype());
    auto [y, sT] = recurrent_layer(g, cell, x, layers[l], s0);
    g.mark_output(sT);
    m.state_in.push_back(s0);
    m.state_out.push_back(sT);
    x = y;
  }
  g.set_scope("head");
  finish_lm(m, g.linear(x, head_w, head_b), mode, keep_logits);
  return m;
}

// One position per step; the final state is copied back into the initial one.
class RecurrentDecoder final : public GraphDecoder {
 public:
  RecurrentDecoder(Cell cell, const ModelConfig& cfg, const std::vector<float>& params, Backend& be)
      : GraphDecoder(build_recurrent_lm(cell, cfg, GraphMode::Eval, 1, 1, be.float_dtype(), true), params, be) {
    reset();
  }
  std::vector<float> step(int32_t token, int) override { return step_carrying_state(token); }
  void reset() override {
    for (int v : mg_.state_in) be_.zero(ex_->view(v).data, mg_.g.values[v].bytes());
  }
  int capacity() const override { return INT_MAX; }
  std::unique_ptr<DecoderState> save() const override { return save_values(mg_.state_in); }
  void restore(const DecoderState& s) override { restore_values(s, mg_.state_in); }
};

// lstm, gru and rnn: one class, three registrations.
class RecurrentKind final : public ModelKind {
 public:
  explicit RecurrentKind(Cell cell) : cell_(cell) {}
  const char* name() const override { return cell_name(cell_); }
  std::vector<const char*> required_keys() const override { return {"model.n_layer", "model.d_model", "optim.lr"}; }
  std::vector<const char*> keys() const override {
    return {"model.n_layer", "model.d_model", "optim.*", "train.state_reset"};
  }
  void validate(const ModelConfig& c, const Require& req) const override {
    require_in(req, c.n_layer, 1, kMaxLayers, "model.n_layer");
    require_in(req, c.d_model, 1, kMaxWidth, "model.d_model");
  }
  std::string describe(const ModelConfig& c) const override {
    return "L=" + std::to_string(c.n_layer) + " H=" + std::to_string(c.d_model);
  }
  bool carries_state() const override { return true; }
  ModelGraph build(const ModelConfig& c, GraphMode mode, int B, int T, DType dt, bool keep_logits, int S) const override {
    LOOM_CHECK(mode != GraphMode::Decode, "model kind ", name(), " decodes with its Eval graph");
    return build_recurrent_lm(cell_, c, mode, B, T, dt, keep_logits);
  }
  double flops_per_token(const ModelConfig& c) const override { return six_n_flops(c, {"wte"}); }
  std::unique_ptr<TokenDecoder> decoder(const ModelConfig& c, const ModelWeights& w, Backend& be) const override {
    return std::make_unique<RecurrentDecoder>(cell_, c, w.params, be);
  }

 private:
  Cell cell_;
};

}  // namespace

const ModelKind& lstm_kind() {
  static const RecurrentKind kind(Cell::LSTM);
  return kind;
}
const ModelKind& gru_kind() {
  static const RecurrentKind kind(Cell::GRU);
  return kind;
}
const ModelKind& rnn_kind() {
  static const RecurrentKind kind(Cell::RNN);
  return kind;
}

}  // namespace loom
