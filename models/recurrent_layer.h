// recurrent_layer.h: the parameters of one recurrent layer (kernels/rnn/rnn.h's layout), as the
// recurrent kinds register them: the language models (models/rnn) and the sequence-to-sequence
// encoder and decoder (models/rnnseq). Initialisation as PyTorch's nn.LSTM/GRU/RNN in scale
// (std 1/sqrt(3H), the std of its U(-1/sqrt(H), 1/sqrt(H))), with the LSTM forget-gate bias at 1.
#pragma once
#include <cmath>
#include <string>

#include "engine/graph/graph.h"
#include "kernels/rnn/rnn.h"

namespace loom {

struct RecurrentWeights {
  int w_ih, w_hh, b_ih, b_hh;
};

// Registers `prefix`w_ih, w_hh, b_ih, b_hh for inputs of width I and hidden size H.
inline RecurrentWeights recurrent_params(Graph& g, Cell cell, const std::string& prefix, int64_t I, int64_t H) {
  const int64_t GH = cell_gates(cell) * H;
  const float w_std = 1.0f / std::sqrt(3.0f * static_cast<float>(H));
  RecurrentWeights w{};
  w.w_ih = g.param(prefix + "w_ih", {GH, I}, Init::Normal, w_std, true);
  w.w_hh = g.param(prefix + "w_hh", {GH, H}, Init::Normal, w_std, true);
  w.b_ih = g.param(prefix + "b_ih", {GH}, cell == Cell::LSTM ? Init::ForgetGate : Init::Zeros, 0, false);
  w.b_hh = g.param(prefix + "b_hh", {GH}, Init::Zeros, 0, false);
  return w;
}

// One layer over x (len: optional per-row lengths): {y, stateT}.
inline std::pair<int, int> recurrent_layer(Graph& g, Cell cell, int x, const RecurrentWeights& w, int state0,
                                           int len = -1) {
  return g.recurrent(static_cast<int>(cell), x, w.w_ih, w.w_hh, w.b_ih, w.b_hh, state0, len);
}

}  // namespace loom
