// ops_grad_test.cpp: finite-difference checks, in double, of the backward rule of every op
// that has one, through the real path (graph builder -> autodiff -> CPU backend).
//
// The cases are one table (kGradCases), registered as tests Grad.<name>. Grad.EveryOpWithA
// BackwardRuleHasACase builds every case's graph and fails, naming the op, when an op of
// ops.def with a backward rule (n_diff_out > 0) appears in none of them.
#include <gtest/gtest.h>

#include <set>
#include <tuple>

#include "kernels/rnn/rnn.h"
#include "models/model.h"
#include "models/recurrent_layer.h"
#include "tests/support/gradcheck.h"

namespace loom::test {
namespace {

using IntFill = std::function<void(int, std::vector<int32_t>&)>;

IntFill random_ints(int64_t hi, uint64_t seed) {
  return [hi, seed](int, std::vector<int32_t>& d) {
    Rng r(seed);
    for (auto& x : d) x = static_cast<int32_t>(r.below(hi));
  };
}
const IntFill kNoInts = [](int, std::vector<int32_t>&) {};

// One graph to check: d(out)/d(wrt inputs and every parameter).
struct GradGraph {
  Graph g{DType::F64};
  int out = -1;
  std::vector<int> wrt;
  IntFill fill = kNoInts;
  GradCheckOptions opts;
  std::string variant;  // which of a case's graphs (cell, head count, model kind)
};
using Graphs = std::vector<GradGraph>;

Graphs embedding() {
  GradGraph c;
  const int tok = c.g.input("tokens", {2, 5}, DType::I32);
  const int wte = c.g.param("wte", {7, 6}, Init::Normal, 1, true);
  const int wpe = c.g.param("wpe", {8, 6}, Init::Normal, 1, true);
  c.out = c.g.embedding(tok, wte, wpe);
  c.fill = random_ints(7, 3);
  return {c};
}

Graphs layernorm() {
  GradGraph c;
  const int x = c.g.input("x", {3, 4, 10}, DType::F64);
  const int gw = c.g.param("g", {10}, Init::Ones, 0, false), gb = c.g.param("b", {10}, Init::Zeros, 0, false);
  c.out = c.g.layernorm(x, gw, gb);
  c.wrt = {x};
  return {c};
}

// Both outputs carry gradient: the sum (residual stream) and the normalised value.
Graphs residual_layernorm() {
  GradGraph c;
  Graph& g = c.g;
  const int a = g.input("a", {2, 3, 8}, DType::F64), b = g.input("b", {2, 3, 8}, DType::F64);
  const int gw = g.param("g", {8}, Init::Ones, 0, false), gb = g.param("beta", {8}, Init::Zeros, 0, false);
  auto [sum, y] = g.residual_layernorm(a, b, gw, gb);
  const int w = g.param("w", {8, 8}, Init::Normal, 1, true);
  c.out = g.add(g.linear(sum, w), y);
  c.wrt = {a, b};
  return {c};
}

// x[.., K] through a dense op (linear, linear_gelu) with weight [M, K] and, optionally, bias [M].
Graphs dense(int (Graph::*op)(int, int, int), const Shape& xs, int64_t M, bool bias) {
  GradGraph c;
  const int x = c.g.input("x", xs, DType::F64);
  const int w = c.g.param("w", {M, xs.back()}, Init::Normal, 1, true);
  c.out = (c.g.*op)(x, w, bias ? c.g.param("b", {M}, Init::Zeros, 0, false) : -1);
  c.wrt = {x};
  return {c};
}
Graphs linear_with_bias() { return dense(&Graph::linear, {2, 3, 5}, 7, true); }
Graphs linear_no_bias() { return dense(&Graph::linear, {6, 4}, 3, false); }
Graphs linear_gelu() { return dense(&Graph::linear_gelu, {2, 3, 5}, 6, true); }

// An elementwise op of one input.
Graphs unary(int (Graph::*op)(int), const Shape& shape) {
  GradGraph c;
  const int x = c.g.input("x", shape, DType::F64);
  c.out = (c.g.*op)(x);
  c.wrt = {x};
  return {c};
}
Graphs gelu() { return unary(&Graph::gelu, {4, 9}); }
Graphs tanh() { return unary(&Graph::tanh, {4, 7}); }

// x feeds both sides of the add and a linear: contributions must sum.
Graphs add_and_fan_out() {
  GradGraph c;
  Graph& g = c.g;
  const int x = g.input("x", {3, 4}, DType::F64);
  const int w = g.param("w", {4, 4}, Init::Normal, 1, true);
  c.out = g.add(g.add(x, x), g.linear(x, w));
  c.wrt = {x};
  return {c};
}

// Self-attention over qkv [2, T, 3 * 2H] for each head count, with one mask.
Graphs attention_heads(std::initializer_list<int> heads, int64_t T, bool causal) {
  Graphs r;
  for (int H : heads) {
    GradGraph c;
    const int qkv = c.g.input("qkv", {2, T, 3 * 2 * H}, DType::F64);
    c.out = c.g.attention(qkv, H, AttentionMask{.causal = causal});
    c.wrt = {qkv};
    c.variant = "H=" + std::to_string(H);
    r.push_back(std::move(c));
  }
  return r;
}
Graphs attention_causal() { return attention_heads({1, 2, 3}, 7, true); }

// The document mask: tokens in {0, 1, 2} with 0 the end of text, so documents of a few
// positions (length 1 among them) and both batch items cut differently.
Graphs attention_documents() {
  GradGraph c;
  const int tok = c.g.input("tokens", {2, 9}, DType::I32);
  const int qkv = c.g.input("qkv", {2, 9, 3 * 2 * 2}, DType::F64);
  c.out = c.g.attention(qkv, 2, c.g.document_starts(tok, 0));
  c.wrt = {qkv};
  c.fill = random_ints(3, 6);
  return {c};
}

// Integer inputs filled with fixed values: key lengths.
IntFill fixed_ints(std::vector<int32_t> v) {
  return [v](int, std::vector<int32_t>& d) {
    LOOM_CHECK(d.size() == v.size(), "fixed_ints: ", v.size(), " values for ", d.size());
    d = v;
  };
}

// Every query sees every key; one head and several.
Graphs attention_bidirectional() { return attention_heads({1, 2}, 6, false); }

// Key padding, bidirectional and causal: lengths 3 and 7 of 7 (a padded row and a full one).
// The padded keys' rows get exactly zero gradient; the queries past the length attend over
// the valid keys and get theirs.
Graphs attention_key_padding() {
  Graphs r;
  for (bool causal : {false, true}) {
    GradGraph c;
    const int len = c.g.input("key_len", {2}, DType::I32);
    const int qkv = c.g.input("qkv", {2, 7, 3 * 2 * 2}, DType::F64);
    c.out = c.g.attention(qkv, 2, AttentionMask{.causal = causal, .key_len = len});
    c.wrt = {qkv};
    c.fill = fixed_ints({3, 7});
    c.variant = causal ? "causal" : "bidirectional";
    r.push_back(std::move(c));
  }
  return r;
}

// Queries [2, 5, C] over keys [2, 8, 2C]: gradients to both; with key padding (lengths 2 and
// 8) and without; and through a projection of an encoder-like tensor, as models use it.
Graphs cross_attention() {
  Graphs r;
  for (bool padded : {false, true}) {
    GradGraph c;
    const int q = c.g.input("q", {2, 5, 2 * 2}, DType::F64), kv = c.g.input("kv", {2, 8, 2 * 2 * 2}, DType::F64);
    const int len = padded ? c.g.input("key_len", {2}, DType::I32) : -1;
    c.out = c.g.cross_attention(q, kv, 2, len);
    c.wrt = {q, kv};
    if (padded) c.fill = fixed_ints({2, 8});
    c.variant = padded ? "key padding" : "plain";
    r.push_back(std::move(c));
  }
  GradGraph c;
  const int q = c.g.input("q", {2, 3, 6}, DType::F64), enc = c.g.input("enc", {2, 4, 5}, DType::F64);
  const int w = c.g.param("w_kv", {12, 5}, Init::Normal, 1, true);
  c.out = c.g.cross_attention(q, c.g.linear(enc, w), 3);
  c.wrt = {q, enc};
  c.variant = "projected";
  r.push_back(std::move(c));
  return r;
}

// The recurrent decoder's attention step in the forms models use: Luong dot (the encoder
// states are keys and values), Luong general (a projected query), Bahdanau additive (both
// sides projected, a scoring vector), each with key padding (lengths 2 and 6), and a plain dot
// with separate keys and values.
Graphs rnn_attention() {
  Graphs r;
  {
    GradGraph c;
    const int q = c.g.input("q", {2, 5, 4}, DType::F64), k = c.g.input("keys", {2, 6, 4}, DType::F64),
              v = c.g.input("values", {2, 6, 3}, DType::F64);
    c.out = c.g.rnn_attention(q, k, v);
    c.wrt = {q, k, v};
    c.variant = "dot, separate keys and values";
    r.push_back(std::move(c));
  }
  for (const char* form : {"dot", "general", "additive"}) {
    GradGraph c;
    const std::string f = form;
    const int h = c.g.input("h", {2, 5, 4}, DType::F64), s = c.g.input("s", {2, 6, 4}, DType::F64);
    const int len = c.g.input("key_len", {2}, DType::I32);
    int q = h, k = s, v = -1;
    if (f != "dot") q = c.g.linear(h, c.g.param("w_q", {4, 4}, Init::Normal, 1, true));
    if (f == "additive") {
      k = c.g.linear(s, c.g.param("w_k", {4, 4}, Init::Normal, 1, true));
      v = c.g.param("v", {4}, Init::Normal, 1, true);
    }
    c.out = c.g.rnn_attention(q, k, s, v, len);
    c.wrt = {h, s};
    c.fill = fixed_ints({2, 6});
    c.variant = f + ", key padding";
    r.push_back(std::move(c));
  }
  return r;
}

Graphs softmax_xent() {
  GradGraph c;
  const int z = c.g.input("logits", {3, 4, 11}, DType::F64);
  const int y = c.g.input("targets", {3, 4}, DType::I32);
  c.out = c.g.softmax_xent(z, y);
  c.wrt = {z};
  c.fill = random_ints(11, 5);
  return {c};
}

GradGraph whole_model(const ModelConfig& cfg, int B, int T, int samples, IntFill fill) {
  ModelGraph m = build_model(cfg, GraphMode::Eval, B, T, DType::F64);
  GradGraph c;
  c.g = std::move(m.g);
  c.out = m.loss;
  c.fill = std::move(fill);
  c.opts.samples = samples;
  c.variant = cfg.kind;
  return c;
}

// The whole model in double: embedding (tied classifier), 2 blocks, loss.
Graphs tiny_gpt_whole_model() {
  ModelConfig c;
  c.n_layer = 2;
  c.n_head = 2;
  c.d_model = 8;
  c.seq_len = 6;
  c.vocab = 11;
  return {whole_model(c, 2, 6, 12, random_ints(11, 9))};
}

// The encoder-decoder in double, tied and untied embeddings (learned positions: a fixed
// sinusoidal table is frozen, so it has no gradient to check): a short second source (key
// padding in the encoder and in cross-attention) and padded targets (kIgnoreTarget).
// A pair kind's whole model (vocab 11, src_len 6, T 5, B 2) with a short second source and
// padded targets.
GradGraph whole_pair_model(const ModelConfig& c, std::string variant) {
  GradGraph gg = whole_model(c, 2, 5, 12, {});
  std::vector<std::string> names;
  for (const Value& v : gg.g.values) names.push_back(v.name);
  gg.fill = [names](int v, std::vector<int32_t>& d) {
    const std::string& name = names[v];
    Rng rng(name.size() * 7 + 3);
    for (auto& x : d) x = static_cast<int32_t>(rng.below(11));
    if (name == "source_len") d = {6, 3};
    if (name == "targets") d[8] = d[9] = kIgnoreTarget;  // the second row's last two
  };
  gg.variant = std::move(variant);
  return gg;
}

Graphs tiny_encdec_whole_model() {
  Graphs r;
  for (bool tie : {true, false}) {
    ModelConfig c{.kind = "encdec", .n_head = 2, .d_model = 8, .seq_len = 5, .vocab = 11};
    c.src_len = 6;
    c.n_enc_layer = 2;
    c.n_dec_layer = 2;
    c.tie_embeddings = tie;
    c.positions = "learned";
    r.push_back(whole_pair_model(c, tie ? "encdec tied" : "encdec untied"));
  }
  return r;
}

// The recurrent sequence-to-sequence model in double: each cell, attention score and
// direction setting at least once (lengths in both encoder directions, the bridge's gradient
// into the encoder's final states, the decoder's into its initial states).
Graphs tiny_rnnseq_whole_model() {
  Graphs r;
  struct V {
    const char* cell;
    bool bi, tie;
    const char* attention;
    int n_enc, n_dec;
  };
  for (const V v : {V{"lstm", true, false, "general", 2, 2}, V{"gru", true, true, "additive", 1, 2},
                    V{"lstm", false, true, "dot", 2, 1}, V{"gru", false, false, "general", 1, 1}}) {
    ModelConfig c{.kind = "rnn-seq2seq", .d_model = 4, .seq_len = 5, .vocab = 11};
    c.src_len = 6;
    c.n_enc_layer = v.n_enc;
    c.n_dec_layer = v.n_dec;
    c.tie_embeddings = v.tie;
    c.cell = v.cell;
    c.bidirectional = v.bi;
    c.attention = v.attention;
    r.push_back(whole_pair_model(c, std::string(v.cell) + (v.bi ? " bidirectional " : " ") + v.attention));
  }
  return r;
}

Graphs scale() {
  GradGraph c;
  const int x = c.g.input("x", {3, 5}, DType::F64);
  const int w = c.g.param("w", {4, 5}, Init::Normal, 1, true);
  c.out = c.g.scale(c.g.linear(x, w), 0.37f);
  c.wrt = {x};
  return {c};
}

// Window of 3 over 6 positions: padding (row 7) before the start, tokens may repeat.
Graphs context_embedding() {
  GradGraph c;
  const int tok = c.g.input("tokens", {2, 6}, DType::I32);
  const int wte = c.g.param("wte", {8, 4}, Init::Normal, 1, true);
  c.out = c.g.context_embedding(tok, wte, 3, 7);
  c.fill = random_ints(7, 4);
  return {c};
}

// One recurrent layer of each cell: gradients of x and all four weight tensors, from a random
// (constant) initial state, I != H.
Graphs recurrent_layers() {
  Graphs r;
  for (Cell cell : {Cell::RNN, Cell::LSTM, Cell::GRU}) {
    GradGraph c;
    Graph& g = c.g;
    const int64_t B = 2, S = 5, I = 3, H = 4, G = cell_gates(cell);
    const int x = g.input("x", {B, S, I}, DType::F64);
    const int s0 = g.input("state0", {cell_states(cell), B, H}, DType::F64);
    const int wi = g.param("w_ih", {G * H, I}, Init::Normal, 1, true), wh = g.param("w_hh", {G * H, H}, Init::Normal, 1, true);
    const int bi = g.param("b_ih", {G * H}, Init::Zeros, 0, false), bh = g.param("b_hh", {G * H}, Init::Zeros, 0, false);
    c.out = g.recurrent(static_cast<int>(cell), x, wi, wh, bi, bh, s0).first;
    c.wrt = {x};
    c.variant = cell_name(cell);
    r.push_back(std::move(c));
  }
  return r;
}

// Per-row lengths (padded steps carry the state), the gradient into state0 and out of stateT:
// layer 1 over lengths {5, 2} from a state0 whose gradient is checked, layer 2 from layer 1's
// final state, each cell.
Graphs recurrent_lengths_and_states() {
  Graphs r;
  for (Cell cell : {Cell::RNN, Cell::LSTM, Cell::GRU}) {
    GradGraph c;
    Graph& g = c.g;
    const int64_t B = 2, S = 5, I = 3, H = 4;
    const int x = g.input("x", {B, S, I}, DType::F64);
    const int s0 = g.input("state0", {cell_states(cell), B, H}, DType::F64);
    const int len = g.input("len", {B}, DType::I32);
    int in = x, state = s0;
    for (int l = 0; l < 2; ++l) {
      const RecurrentWeights w = recurrent_params(g, cell, std::to_string(l) + ".", l ? H : I, H);
      std::tie(in, state) = recurrent_layer(g, cell, in, w, state, l ? -1 : len);
    }
    c.out = in;
    c.wrt = {x, s0};
    c.fill = [](int, std::vector<int32_t>& d) { d = {5, 2}; };
    c.variant = cell_name(cell);
    r.push_back(std::move(c));
  }
  return r;
}

// Each row reversed within its length (the full row, part of one, a single position), and
// the cast between dtypes (a copy in double) on the way.
Graphs seq_reverse_and_cast() {
  GradGraph c;
  Graph& g = c.g;
  const int x = g.input("x", {3, 5, 2}, DType::F64), len = g.input("len", {3}, DType::I32);
  const int w = g.param("w", {3, 2}, Init::Normal, 1, true);
  c.out = g.linear(g.seq_reverse(g.cast(x, DType::F64), len), w);
  c.wrt = {x};
  c.fill = [](int, std::vector<int32_t>& d) { d = {5, 3, 1}; };
  return {c};
}

// Two stacked layers: the second layer's dx is the first layer's dy.
Graphs stacked_lstm() {
  GradGraph c;
  Graph& g = c.g;
  const int64_t B = 2, S = 4, H = 3;
  int x = g.input("x", {B, S, H}, DType::F64);
  c.wrt = {x};
  for (int l = 0; l < 2; ++l) {
    const std::string p = std::to_string(l);
    const int s0 = g.input("state" + p, {2, B, H}, DType::F64);
    const int wi = g.param("w_ih" + p, {4 * H, H}, Init::Normal, 1, true);
    const int wh = g.param("w_hh" + p, {4 * H, H}, Init::Normal, 1, true);
    const int bi = g.param("b_ih" + p, {4 * H}, Init::Zeros, 0, false), bh = g.param("b_hh" + p, {4 * H}, Init::Zeros, 0, false);
    x = g.recurrent(static_cast<int>(Cell::LSTM), x, wi, wh, bi, bh, s0).first;
  }
  c.out = x;
  return {c};
}

// The whole recurrent and feed-forward models in double, through their loss.
Graphs recurrent_and_feed_forward_models() {
  Graphs r;
  for (const char* kind : {"lstm", "gru", "rnn", "ffnn"}) {
    ModelConfig c;
    c.kind = kind;
    c.n_layer = 2;
    c.d_model = 5;
    c.d_hidden = 6;
    c.context = 3;
    c.seq_len = 5;
    c.vocab = 9;
    r.push_back(whole_model(c, 2, 5, 10, random_ints(9, 11)));
  }
  return r;
}

struct GradCase {
  const char* name;
  Graphs (*build)();
};
const GradCase kGradCases[] = {
    {"Embedding", embedding},
    {"LayerNorm", layernorm},
    {"ResidualLayerNorm", residual_layernorm},
    {"LinearWithBias", linear_with_bias},
    {"LinearNoBias", linear_no_bias},
    {"Gelu", gelu},
    {"AddAndFanOut", add_and_fan_out},
    {"AttentionCausal", attention_causal},
    {"AttentionDocuments", attention_documents},
    {"AttentionBidirectional", attention_bidirectional},
    {"AttentionKeyPadding", attention_key_padding},
    {"CrossAttention", cross_attention},
    {"RnnAttention", rnn_attention},
    {"SoftmaxXent", softmax_xent},
    {"TinyGptWholeModel", tiny_gpt_whole_model},
    {"TinyEncDecWholeModel", tiny_encdec_whole_model},
    {"LinearGelu", linear_gelu},
    {"Scale", scale},
    {"Tanh", tanh},
    {"ContextEmbedding", context_embedding},
    {"RecurrentLayers", recurrent_layers},
    {"StackedLstm", stacked_lstm},
    {"RecurrentLengthsAndStates", recurrent_lengths_and_states},
    {"SeqReverseAndCast", seq_reverse_and_cast},
    {"TinyRnnSeqWholeModel", tiny_rnnseq_whole_model},
    {"RecurrentAndFeedForwardModels", recurrent_and_feed_forward_models},
};

class GradTest : public ::testing::Test {
 public:
  explicit GradTest(Graphs (*build)()) : build_(build) {}
  void TestBody() override {
    for (GradGraph& c : build_()) {
      SCOPED_TRACE(c.variant);
      check_graph_grads(c.g, c.out, c.wrt, c.fill, c.opts);
    }
  }

 private:
  Graphs (*build_)();
};

[[maybe_unused]] const bool kRegistered = [] {
  for (const auto& c : kGradCases)
    ::testing::RegisterTest("Grad", c.name, nullptr, nullptr, __FILE__, __LINE__,
                            [build = c.build]() -> ::testing::Test* { return new GradTest(build); });
  return true;
}();

TEST(Grad, EveryOpWithABackwardRuleHasACase) {
  std::set<OpId> checked;
  for (const auto& c : kGradCases)
    for (const GradGraph& gg : c.build())
      for (const Node& n : gg.g.nodes) checked.insert(n.op);
  for (int i = 0; i < kNumOps; ++i) {
    if (kOpInfo[i].n_diff_out == 0) continue;
    EXPECT_TRUE(checked.count(static_cast<OpId>(i)))
        << "op " << kOpInfo[i].name << " has a backward rule (n_diff_out = " << kOpInfo[i].n_diff_out
        << " in ops.def) but no finite-difference case in tests/grad/ops_grad_test.cpp (kGradCases)";
  }
}

}  // namespace
}  // namespace loom::test
