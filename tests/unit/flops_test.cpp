// flops_test.cpp: the FLOPs a kind says a trained token costs (ModelKind::flops_per_token, what
// MFU and `loom plan` use) against the matrix products of its own training graph, counted
// node by node: every linear (2 x rows x in x out), self-attention at full length (4 T^2 C,
// the convention GPT's count follows) and cross-attention (4 T S C), x3 with the backward.
// The kind's 6N also counts biases and norm gains, a share of about 1/C of the weights. The
// recurrent kinds' products run inside their recurrent op, which this count does not open.
#include <gtest/gtest.h>

#include "engine/graph/graph.h"
#include "models/model.h"

namespace loom {
namespace {

// The forward products of a graph, FLOPs.
double forward_product_flops(const Graph& g) {
  auto shape = [&](int v) { return g.values[v].shape; };
  double f = 0;
  for (const Node& n : g.nodes) {
    if (n.op == OpId::linear || n.op == OpId::linear_gelu) {
      const Shape x = shape(n.in[0]), w = shape(n.in[1]);
      const double rows = static_cast<double>(numel(x)) / static_cast<double>(x.back());
      f += 2.0 * rows * static_cast<double>(w[0]) * static_cast<double>(w[1]);
    } else if (n.op == OpId::attention) {
      const Shape qkv = shape(n.in[0]);  // [B, T, 3C]
      const double T = static_cast<double>(qkv[1]), C = static_cast<double>(qkv[2]) / 3;
      f += static_cast<double>(qkv[0]) * 4.0 * T * T * C;
    } else if (n.op == OpId::cross_attention) {
      const Shape q = shape(n.in[0]), kv = shape(n.in[1]);  // [B, T, C], [B, S, 2C]
      f += static_cast<double>(q[0]) * 4.0 * static_cast<double>(q[1]) * static_cast<double>(kv[1]) *
           static_cast<double>(q[2]);
    }
  }
  return f;
}

// Per token of the kind's unit: T tokens a sequence, or T target tokens a pair.
void expect_counts_its_graph(const ModelConfig& c, const std::string& what) {
  const ModelKind& kind = model_kind(c.kind);
  const ModelGraph m = kind.build(c, GraphMode::Train, 2, c.seq_len, DType::F32, false, c.src_len);
  const double counted = 3.0 * forward_product_flops(m.g) / (2.0 * c.seq_len);
  const double said = kind.flops_per_token(c);
  EXPECT_NEAR(said / counted, 1.0, 0.03) << what << ": the kind says " << said << ", its graph's products "
                                          << counted;
}

TEST(Flops, GptCountsItsGraph) {
  ModelConfig c{.n_layer = 3, .n_head = 4, .d_model = 128, .seq_len = 64, .vocab = 500};
  c.kind = "gpt";
  expect_counts_its_graph(c, "gpt");
}

ModelConfig encdec(int S, int T, bool tied, const char* positions) {
  ModelConfig c{.n_head = 4, .d_model = 128, .seq_len = T, .vocab = 700};
  c.kind = "encdec";
  c.src_len = S;
  c.n_enc_layer = 2;
  c.n_dec_layer = 3;
  c.tie_embeddings = tied;
  c.positions = positions;
  return c;
}

// Sources four times as long as targets (span corruption's shape) and the other way round.
TEST(Flops, EncDecCountsItsGraph) {
  for (auto [S, T] : {std::pair{58, 14}, std::pair{16, 48}})
    for (bool tied : {true, false})
      for (const char* pos : {"learned", "sinusoidal"})
        expect_counts_its_graph(encdec(S, T, tied, pos), "encdec S=" + std::to_string(S) + " T=" + std::to_string(T) +
                                                             (tied ? " tied " : " untied ") + pos);
}

TEST(Flops, GptPairsCountsItsGraph) {
  for (auto [S, T] : {std::pair{58, 14}, std::pair{16, 48}}) {
    ModelConfig c{.n_layer = 3, .n_head = 4, .d_model = 128, .seq_len = T, .vocab = 700};
    c.kind = "gpt-pairs";
    c.src_len = S;
    expect_counts_its_graph(c, "gpt-pairs S=" + std::to_string(S));
  }
}

}  // namespace
}  // namespace loom
