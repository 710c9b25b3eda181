// ops_grad_test.cpp: finite-difference checks, in double, of the backward rule of every op
// that has one, through the real path (graph builder -> autodiff -> CPU backend).
#include <gtest/gtest.h>

#include "kernels/rnn/rnn.h"
#include "models/model.h"
#include "tests/support/gradcheck.h"

namespace loom::test {
namespace {

auto random_ints(int64_t hi, uint64_t seed) {
  return [hi, seed](int, std::vector<int32_t>& d) {
    Rng r(seed);
    for (auto& x : d) x = static_cast<int32_t>(r.below(hi));
  };
}
const auto kNoInts = [](int, std::vector<int32_t>&) {};

TEST(Grad, Embedding) {
  Graph g(DType::F64);
  const int tok = g.input("tokens", {2, 5}, DType::I32);
  const int wte = g.param("wte", {7, 6}, Init::Normal, 1, true);
  const int wpe = g.param("wpe", {8, 6}, Init::Normal, 1, true);
  check_graph_grads(g, g.embedding(tok, wte, wpe), {}, random_ints(7, 3));
}

TEST(Grad, LayerNorm) {
  Graph g(DType::F64);
  const int x = g.input("x", {3, 4, 10}, DType::F64);
  const int gw = g.param("g", {10}, Init::Ones, 0, false), gb = g.param("b", {10}, Init::Zeros, 0, false);
  check_graph_grads(g, g.layernorm(x, gw, gb), {x}, kNoInts);
}

TEST(Grad, ResidualLayerNorm) {
  // Both outputs carry gradient: the sum (residual stream) and the normalised value.
  Graph g(DType::F64);
  const int a = g.input("a", {2, 3, 8}, DType::F64), b = g.input("b", {2, 3, 8}, DType::F64);
  const int gw = g.param("g", {8}, Init::Ones, 0, false), gb = g.param("beta", {8}, Init::Zeros, 0, false);
  auto [sum, y] = g.residual_layernorm(a, b, gw, gb);
  const int w = g.param("w", {8, 8}, Init::Normal, 1, true);
  check_graph_grads(g, g.add(g.linear(sum, w), y), {a, b}, kNoInts);
}

TEST(Grad, LinearWithBias) {
  Graph g(DType::F64);
  const int x = g.input("x", {2, 3, 5}, DType::F64);
  const int w = g.param("w", {7, 5}, Init::Normal, 1, true), b = g.param("b", {7}, Init::Zeros, 0, false);
  check_graph_grads(g, g.linear(x, w, b), {x}, kNoInts);
}

TEST(Grad, LinearNoBias) {
  Graph g(DType::F64);
  const int x = g.input("x", {6, 4}, DType::F64);
  const int w = g.param("w", {3, 4}, Init::Normal, 1, true);
  check_graph_grads(g, g.linear(x, w), {x}, kNoInts);
}

TEST(Grad, Gelu) {
  Graph g(DType::F64);
  const int x = g.input("x", {4, 9}, DType::F64);
  check_graph_grads(g, g.gelu(x), {x}, kNoInts);
}

TEST(Grad, AddAndFanOut) {
  // x feeds both sides of the add and a linear: contributions must sum.
  Graph g(DType::F64);
  const int x = g.input("x", {3, 4}, DType::F64);
  const int w = g.param("w", {4, 4}, Init::Normal, 1, true);
  check_graph_grads(g, g.add(g.add(x, x), g.linear(x, w)), {x}, kNoInts);
}

TEST(Grad, AttentionCausal) {
  for (int H : {1, 2, 3}) {
    Graph g(DType::F64);
    const int qkv = g.input("qkv", {2, 7, 3 * 2 * H}, DType::F64);
    check_graph_grads(g, g.attention(qkv, H), {qkv}, kNoInts);
  }
}

TEST(Grad, SoftmaxXent) {
  Graph g(DType::F64);
  const int z = g.input("logits", {3, 4, 11}, DType::F64);
  const int y = g.input("targets", {3, 4}, DType::I32);
  check_graph_grads(g, g.softmax_xent(z, y), {z}, random_ints(11, 5));
}

TEST(Grad, TinyGptWholeModel) {
  // The whole model in double: embedding (tied classifier), 2 blocks, loss.
  ModelConfig c;
  c.n_layer = 2;
  c.n_head = 2;
  c.d_model = 8;
  c.seq_len = 6;
  c.vocab = 11;
  ModelGraph m = build_model(c, GraphMode::Eval, 2, 6, DType::F64);
  GradCheckOptions o;
  o.samples = 12;
  check_graph_grads(m.g, m.loss, {}, random_ints(11, 9), o);
}

TEST(Grad, LinearGelu) {
  Graph g(DType::F64);
  const int x = g.input("x", {2, 3, 5}, DType::F64);
  const int w = g.param("w", {6, 5}, Init::Normal, 1, true), b = g.param("b", {6}, Init::Zeros, 0, false);
  check_graph_grads(g, g.linear_gelu(x, w, b), {x}, kNoInts);
}

TEST(Grad, Scale) {
  Graph g(DType::F64);
  const int x = g.input("x", {3, 5}, DType::F64);
  const int w = g.param("w", {4, 5}, Init::Normal, 1, true);
  check_graph_grads(g, g.scale(g.linear(x, w), 0.37f), {x}, kNoInts);
}

TEST(Grad, Tanh) {
  Graph g(DType::F64);
  const int x = g.input("x", {4, 7}, DType::F64);
  check_graph_grads(g, g.tanh(x), {x}, kNoInts);
}

TEST(Grad, ContextEmbedding) {
  // Window of 3 over 6 positions: padding (row 7) before the start, tokens may repeat.
  Graph g(DType::F64);
  const int tok = g.input("tokens", {2, 6}, DType::I32);
  const int wte = g.param("wte", {8, 4}, Init::Normal, 1, true);
  check_graph_grads(g, g.context_embedding(tok, wte, 3, 7), {}, random_ints(7, 4));
}

// One recurrent layer of each cell: gradients of x and all four weight tensors, from a random
// (constant) initial state, I != H, through a dense layer so every output feeds the loss.
TEST(Grad, RecurrentLayers) {
  for (Cell cell : {Cell::RNN, Cell::LSTM, Cell::GRU}) {
    SCOPED_TRACE(cell_name(cell));
    Graph g(DType::F64);
    const int64_t B = 2, S = 5, I = 3, H = 4, G = cell_gates(cell);
    const int x = g.input("x", {B, S, I}, DType::F64);
    const int s0 = g.input("state0", {cell_states(cell), B, H}, DType::F64);
    const int wi = g.param("w_ih", {G * H, I}, Init::Normal, 1, true), wh = g.param("w_hh", {G * H, H}, Init::Normal, 1, true);
    const int bi = g.param("b_ih", {G * H}, Init::Zeros, 0, false), bh = g.param("b_hh", {G * H}, Init::Zeros, 0, false);
    auto [y, sT] = g.recurrent(static_cast<int>(cell), x, wi, wh, bi, bh, s0);
    (void)sT;
    check_graph_grads(g, y, {x}, kNoInts);
  }
}

// Two stacked layers: the second layer's dx is the first layer's dy.
TEST(Grad, StackedLstm) {
  Graph g(DType::F64);
  const int64_t B = 2, S = 4, H = 3;
  int x = g.input("x", {B, S, H}, DType::F64);
  const int x0 = x;
  for (int l = 0; l < 2; ++l) {
    const std::string p = std::to_string(l);
    const int s0 = g.input("state" + p, {2, B, H}, DType::F64);
    const int wi = g.param("w_ih" + p, {4 * H, H}, Init::Normal, 1, true);
    const int wh = g.param("w_hh" + p, {4 * H, H}, Init::Normal, 1, true);
    const int bi = g.param("b_ih" + p, {4 * H}, Init::Zeros, 0, false), bh = g.param("b_hh" + p, {4 * H}, Init::Zeros, 0, false);
    x = g.recurrent(static_cast<int>(Cell::LSTM), x, wi, wh, bi, bh, s0).first;
  }
  check_graph_grads(g, x, {x0}, kNoInts);
}

// The whole recurrent and feed-forward models in double, through their loss.
TEST(Grad, RecurrentAndFeedForwardModels) {
  for (const char* kind : {"lstm", "gru", "rnn", "ffnn"}) {
    SCOPED_TRACE(kind);
    ModelConfig c;
    c.kind = kind;
    c.n_layer = 2;
    c.d_model = 5;
    c.d_hidden = 6;
    c.context = 3;
    c.seq_len = 5;
    c.vocab = 9;
    ModelGraph m = build_model(c, GraphMode::Eval, 2, 5, DType::F64);
    GradCheckOptions o;
    o.samples = 10;
    check_graph_grads(m.g, m.loss, {}, random_ints(9, 11), o);
  }
}

}  // namespace
}  // namespace loom::test
