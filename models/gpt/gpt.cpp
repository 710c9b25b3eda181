// gpt.cpp: the GPT-2 style transformer: token + position embedding, n_layer pre-LN blocks
// (causal self-attention, GELU MLP of 4 * d_model), final layer norm, classifier tied to the
// token embedding. Initialisation as GPT-2: N(0, 0.02) for weights, residual projections
// scaled by 1/sqrt(2 * n_layer), zero biases, unit norm gains.
#include <cmath>
#include <tuple>

#include "models/model.h"

namespace loom {

namespace {

struct Block {
  int ln1_g, ln1_b, qkv_w, qkv_b, proj_w, proj_b, ln2_g, ln2_b, fc_w, fc_b, fc2_w, fc2_b;
};

}  // namespace

ModelGraph build_gpt(const ModelConfig& c, GraphMode mode, int B, int T, DType dt, bool keep_logits) {
  ModelGraph m(dt);
  Graph& g = m.g;
  m.B = B;
  m.T = T;
  const int64_t C = c.d_model, V = c.vocab, L = c.n_layer, H = c.n_head;
  const float std0 = 0.02f, std_res = 0.02f / std::sqrt(2.0f * static_cast<float>(L));

  // Parameters are registered in one fixed order in every mode, so the flat buffer layout
  // is the same for training, evaluation and decoding graphs.
  const int wte = g.param("wte", {V, C}, Init::Normal, std0, true);
  const int wpe = g.param("wpe", {c.seq_len, C}, Init::Normal, std0, true);
  std::vector<Block> blocks(L);
  for (int l = 0; l < L; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    Block& b = blocks[l];
    b.ln1_g = g.param(p + "ln_1.weight", {C}, Init::Ones, 0, false);
    b.ln1_b = g.param(p + "ln_1.bias", {C}, Init::Zeros, 0, false);
    b.qkv_w = g.param(p + "attn.c_attn.weight", {3 * C, C}, Init::Normal, std0, true);
    b.qkv_b = g.param(p + "attn.c_attn.bias", {3 * C}, Init::Zeros, 0, false);
    b.proj_w = g.param(p + "attn.c_proj.weight", {C, C}, Init::Normal, std_res, true);
    b.proj_b = g.param(p + "attn.c_proj.bias", {C}, Init::Zeros, 0, false);
    b.ln2_g = g.param(p + "ln_2.weight", {C}, Init::Ones, 0, false);
    b.ln2_b = g.param(p + "ln_2.bias", {C}, Init::Zeros, 0, false);
    b.fc_w = g.param(p + "mlp.c_fc.weight", {4 * C, C}, Init::Normal, std0, true);
    b.fc_b = g.param(p + "mlp.c_fc.bias", {4 * C}, Init::Zeros, 0, false);
    b.fc2_w = g.param(p + "mlp.c_proj.weight", {C, 4 * C}, Init::Normal, std_res, true);
    b.fc2_b = g.param(p + "mlp.c_proj.bias", {C}, Init::Zeros, 0, false);
  }
  const int lnf_g = g.param("ln_f.weight", {C}, Init::Ones, 0, false);
  const int lnf_b = g.param("ln_f.bias", {C}, Init::Zeros, 0, false);

  const bool decode = mode == GraphMode::Decode;
  m.tokens = g.input("tokens", {B, T}, DType::I32);
  if (decode) {
    m.pos = g.input("pos", {1}, DType::I32);
    for (int l = 0; l < L; ++l)
      for (const char* kv : {"k", "v"})
        m.caches.push_back(g.input("cache." + std::to_string(l) + "." + kv, {B, H, c.seq_len, C / H}, dt));
  }
  g.set_scope("embed");
  // Each residual add is fused with the layer norm that reads its result (the next block's
  // ln_1, or ln_f after the last block): one pass over the residual stream instead of two.
  int x = g.embedding(m.tokens, wte, wpe, m.pos);
  int h = g.layernorm(x, blocks[0].ln1_g, blocks[0].ln1_b);
  for (int l = 0; l < L; ++l) {
    const Block& b = blocks[l];
    const std::string s = "h." + std::to_string(l);
    g.set_scope(s + ".attn");
    const int qkv = g.linear(h, b.qkv_w, b.qkv_b);
    const int a = decode ? g.attention_decode(qkv, m.caches[2 * l], m.caches[2 * l + 1], m.pos, c.n_head)
                         : g.attention(qkv, c.n_head);
    std::tie(x, h) = g.residual_layernorm(x, g.linear(a, b.proj_w, b.proj_b), b.ln2_g, b.ln2_b);
    g.set_scope(s + ".mlp");
    const int mlp = g.linear(g.gelu(g.linear(h, b.fc_w, b.fc_b)), b.fc2_w, b.fc2_b);
    const bool last = l + 1 == L;
    std::tie(x, h) = g.residual_layernorm(x, mlp, last ? lnf_g : blocks[l + 1].ln1_g, last ? lnf_b : blocks[l + 1].ln1_b);
  }
  g.set_scope("head");
  m.logits = g.linear(h, wte);  // tied classifier
  if (decode) {
    g.mark_output(m.logits);
    return m;
  }
  m.targets = g.input("targets", {B, T}, DType::I32);
  m.loss = g.softmax_xent(m.logits, m.targets);
  g.mark_output(m.loss);
  if (mode == GraphMode::Eval && keep_logits) g.mark_output(m.logits);
  if (mode == GraphMode::Train) {
    m.dloss = g.input("dloss", {1}, g.stat_dtype());
    build_backward(g, {{m.loss, m.dloss}});
  } else {
    g.forward_end = g.nodes.size();
  }
  return m;
}

}  // namespace loom
