// rnn_lm.cpp: the recurrent language models (model.kind = lstm | gru | rnn): token embedding
// -> n_layer recurrent layers of width d_model -> linear classifier -> softmax. Each layer's
// state is an input of the graph and its final state a kept output, so the trainer carries it
// from batch to batch (truncated backpropagation through time; kernels/rnn/rnn.h).
// Initialisation as PyTorch's nn.Embedding (N(0, 1)) and nn.LSTM/GRU/RNN in scale (std
// 1/sqrt(3H), the std of its U(-1/sqrt(H), 1/sqrt(H))), with the LSTM forget-gate bias at 1.
#include <cmath>

#include "kernels/rnn/rnn.h"
#include "models/model.h"

namespace loom {

void finish_lm(ModelGraph& m, int logits, GraphMode mode, bool keep_logits);

namespace {
Cell cell_of(const std::string& kind) {
  return kind == "lstm" ? Cell::LSTM : kind == "gru" ? Cell::GRU : Cell::RNN;
}
}  // namespace

ModelGraph build_recurrent_lm(const ModelConfig& c, GraphMode mode, int B, int T, DType dt, bool keep_logits) {
  ModelGraph m(dt);
  Graph& g = m.g;
  m.B = B;
  m.T = T;
  const Cell cell = cell_of(c.kind);
  const int64_t H = c.d_model, V = c.vocab, G = cell_gates(cell), L = c.n_layer;
  const float w_std = 1.0f / std::sqrt(3.0f * static_cast<float>(H));

  // N(0, 1) as nn.Embedding: there is no layer norm to rescale it, and with GPT's 0.02 the
  // input's share of the first layer's pre-activations (~0.01) is drowned by the recurrence's,
  // so training sits at the unigram loss for hundreds of steps.
  const int wte = g.param("wte", {V, H}, Init::Normal, 1.0f, true);
  struct Layer {
    int w_ih, w_hh, b_ih, b_hh;
  };
  std::vector<Layer> layers(L);
  for (int l = 0; l < L; ++l) {
    const std::string p = "rnn." + std::to_string(l) + ".";
    layers[l].w_ih = g.param(p + "w_ih", {G * H, H}, Init::Normal, w_std, true);
    layers[l].w_hh = g.param(p + "w_hh", {G * H, H}, Init::Normal, w_std, true);
    layers[l].b_ih = g.param(p + "b_ih", {G * H}, cell == Cell::LSTM ? Init::ForgetGate : Init::Zeros, 0, false);
    layers[l].b_hh = g.param(p + "b_hh", {G * H}, Init::Zeros, 0, false);
  }
  const int head_w = g.param("head.weight", {V, H}, Init::Normal, 0.02f, true);
  const int head_b = g.param("head.bias", {V}, Init::Zeros, 0, false);

  m.tokens = g.input("tokens", {B, T}, DType::I32);
  g.set_scope("embed");
  int x = g.context_embedding(m.tokens, wte, 1, 0);
  for (int l = 0; l < L; ++l) {
    g.set_scope("rnn." + std::to_string(l));
    const int s0 = g.input("state." + std::to_string(l), {cell_states(cell), B, H}, g.stat_dtype());
    const Layer& ly = layers[l];
    auto [y, sT] = g.recurrent(static_cast<int>(cell), x, ly.w_ih, ly.w_hh, ly.b_ih, ly.b_hh, s0);
    g.mark_output(sT);
    m.state_in.push_back(s0);
    m.state_out.push_back(sT);
    x = y;
  }
  g.set_scope("head");
  finish_lm(m, g.linear(x, head_w, head_b), mode, keep_logits);
  return m;
}

}  // namespace loom
