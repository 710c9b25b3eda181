// ffnn.cpp: the feed-forward neural LM of Bengio et al. (2003), model.kind = ffnn. Each
// position predicts the next token from the embeddings of the model.context tokens ending at
// it, concatenated -> n_layer tanh hidden layers of d_hidden -> linear classifier -> softmax.
// Positions before the start of a window read a learned padding row (row `vocab` of wte).
#include <cmath>

#include "models/model.h"

namespace loom {

void finish_lm(ModelGraph& m, int logits, GraphMode mode, bool keep_logits);

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

}  // namespace loom
