// gpt.cpp: the GPT-2 style transformer: token + position embedding, n_layer pre-LN blocks
// (causal self-attention, GELU MLP of 4 * d_model), final layer norm, classifier tied to the
// token embedding. Initialisation as GPT-2: N(0, 0.02) for weights, residual projections
// scaled by 1/sqrt(2 * n_layer), zero biases, unit norm gains.
//
// LoRA (model.lora_rank > 0): every targeted projection W x + b becomes W x + b + (alpha / r)
// B (A x) with A [r, in] ~ N(0, 1/in) and B [out, r] = 0, so the model starts as the base model.
// The base weights are frozen; the adapters are registered FIRST, so the trainable parameters
// are a prefix of the flat buffer and gradients, AdamW moments and the optimizer step cover
// only that prefix (Graph::trainable_prefix).
//
// gpt-pairs: the same decoder-only model learning pairs (the decoder-only side of the
// sequence-to-sequence comparison). Each pair is one sequence of src_len + seq_len positions,
// "source EOS BOS target EOS" (EOS then BOS separate the two), PAD after it; the loss is on
// the target tokens only. The run loop lays the pairs out so (a pair graph without a source
// input, model.h); decoding feeds the source into the KV cache once (encode) and then the
// target one token at a time, through the same Seq2SeqDecoder as the encoder-decoder kinds.
#include "models/gpt/gpt.h"

#include <array>
#include <cmath>
#include <cstring>
#include <span>
#include <tuple>

#include "models/graph_decoder.h"
#include "models/pair_kind.h"

namespace loom {

namespace {

struct Block {
  int ln1_g, ln1_b, qkv_w, qkv_b, proj_w, proj_b, ln2_g, ln2_b, fc_w, fc_b, fc2_w, fc2_b;
};

// A LoRA adapter of one projection (a < 0: none).
struct Adapter {
  int a = -1, b = -1;
};
enum Target { kQkv, kProj, kFc, kFc2, kTargets };
constexpr const char* kTargetNames[kTargets] = {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"};

bool targeted(const ModelConfig& c, int t) {
  if (c.lora_rank <= 0) return false;
  const std::string group = t == kQkv || t == kProj ? "attn" : "mlp";
  std::string list = "," + c.lora_targets + ",";
  return list.find("," + group + ",") != std::string::npos;
}

// {out, in} of a projection in a model of width C.
std::pair<int64_t, int64_t> target_shape(int t, int64_t C) {
  switch (t) {
    case kQkv: return {3 * C, C};
    case kProj: return {C, C};
    case kFc: return {4 * C, C};
    default: return {C, 4 * C};
  }
}

ModelGraph build_gpt(const ModelConfig& c, GraphMode mode, int B, int T, DType dt, bool keep_logits) {
  ModelGraph m(dt);
  Graph& g = m.g;
  m.B = B;
  m.T = T;
  const int64_t C = c.d_model, V = c.vocab, L = c.n_layer, H = c.n_head;
  const float std0 = 0.02f, std_res = 0.02f / std::sqrt(2.0f * static_cast<float>(L));

  // Parameters are registered in one fixed order in every mode, so the flat buffer layout
  // is the same for training, evaluation and decoding graphs. LoRA adapters come first.
  std::vector<std::array<Adapter, kTargets>> adapters(L);
  for (int l = 0; l < L; ++l)
    for (int t = 0; t < kTargets; ++t)
      if (targeted(c, t)) {
        const auto [out, in] = target_shape(t, C);
        const std::string p = "h." + std::to_string(l) + "." + kTargetNames[t] + ".";
        adapters[l][t].a = g.param(p + "lora_A", {c.lora_rank, in}, Init::Normal, 1.0f / std::sqrt(float(in)), false);
        adapters[l][t].b = g.param(p + "lora_B", {out, c.lora_rank}, Init::Zeros, 0, false);
      }
  const size_t first_base = g.params.size();
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
  if (c.lora_rank > 0)
    for (size_t i = first_base; i < g.params.size(); ++i) g.params[i].trainable = false;
  const float lora_scale = c.lora_rank > 0 ? static_cast<float>(c.lora_alpha / c.lora_rank) : 0.0f;
  // x W^T + b, plus the adapter's (alpha / r) B A x when the projection has one.
  auto project = [&](int x, int w, int b, const Adapter& ad) {
    const int y = g.linear(x, w, b);
    if (ad.a < 0) return y;
    return g.add(y, g.scale(g.linear(g.linear(x, ad.a), ad.b), lora_scale));
  };

  const bool decode = mode == GraphMode::Decode;
  m.tokens = g.input("tokens", {B, T}, DType::I32);
  if (decode) {
    m.pos = g.input("pos", {1}, DType::I32);
    for (int l = 0; l < L; ++l)
      for (const char* kv : {"k", "v"})
        m.caches.push_back(g.input("cache." + std::to_string(l) + "." + kv, {B, H, c.seq_len, C / H}, dt));
  }
  // The document mask's doc_start, once for all layers (decoding attends to its whole cache).
  int doc_start = -1;
  if (c.document_mask && !decode) {
    LOOM_CHECK(c.eot_id >= 0, "document mask without a resolved end-of-text id");
    doc_start = g.document_starts(m.tokens, c.eot_id);
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
    const auto& ad = adapters[l];
    const int qkv = project(h, b.qkv_w, b.qkv_b, ad[kQkv]);
    const int a = decode ? g.attention_decode(qkv, m.caches[2 * l], m.caches[2 * l + 1], m.pos, c.n_head)
                         : g.attention(qkv, c.n_head, doc_start);
    std::tie(x, h) = g.residual_layernorm(x, project(a, b.proj_w, b.proj_b, ad[kProj]), b.ln2_g, b.ln2_b);
    g.set_scope(s + ".mlp");
    // GELU rides on the c_fc product's epilogue unless an adapter is added before it.
    const int act = ad[kFc].a < 0 ? g.linear_gelu(h, b.fc_w, b.fc_b) : g.gelu(project(h, b.fc_w, b.fc_b, ad[kFc]));
    const int mlp = project(act, b.fc2_w, b.fc2_b, ad[kFc2]);
    const bool last = l + 1 == L;
    std::tie(x, h) = g.residual_layernorm(x, mlp, last ? lnf_g : blocks[l + 1].ln1_g, last ? lnf_b : blocks[l + 1].ln1_b);
  }
  g.set_scope("head");
  const int logits = g.linear(h, wte);  // tied classifier
  if (decode) {
    m.logits = logits;
    g.mark_output(m.logits);
    return m;
  }
  finish_lm(m, logits, mode, keep_logits);
  return m;
}

std::vector<float> merge_gpt_lora(const ModelConfig& cfg, const std::vector<float>& params, ModelConfig* merged_cfg) {
  LOOM_CHECK(cfg.lora_rank > 0, "merge_lora: not a LoRA model");
  ModelConfig base = cfg;
  base.lora_rank = 0;
  const Graph lg = build_gpt(cfg, GraphMode::Eval, 1, 1, DType::F32, false).g;
  const Graph bg = build_gpt(base, GraphMode::Eval, 1, 1, DType::F32, false).g;
  LOOM_CHECK(static_cast<int64_t>(params.size()) == lg.param_count, "merge_lora: parameter count");
  std::vector<float> out(bg.param_count);
  auto find = [](const Graph& g, const std::string& name) -> const ParamInfo& {
    const int i = g.find_param(name);
    LOOM_CHECK(i >= 0, "merge_lora: no parameter ", name);
    return g.params[i];
  };
  for (const auto& p : bg.params) {
    const ParamInfo& q = find(lg, p.name);
    std::memcpy(out.data() + p.offset, params.data() + q.offset, p.count() * 4);
  }
  const double s = cfg.lora_alpha / cfg.lora_rank;
  const int64_t r = cfg.lora_rank;
  for (int l = 0; l < cfg.n_layer; ++l)
    for (int t = 0; t < kTargets; ++t) {
      if (!targeted(cfg, t)) continue;
      const std::string p = "h." + std::to_string(l) + "." + kTargetNames[t] + ".";
      const ParamInfo &A = find(lg, p + "lora_A"), &Bm = find(lg, p + "lora_B"), &W = find(bg, p + "weight");
      const int64_t n_out = W.shape[0], n_in = W.shape[1];
      float* w = out.data() + W.offset;
      const float* a = params.data() + A.offset;
      const float* b = params.data() + Bm.offset;
      for (int64_t o = 0; o < n_out; ++o)
        for (int64_t i = 0; i < n_in; ++i) {
          double acc = 0;
          for (int64_t k = 0; k < r; ++k) acc += static_cast<double>(b[o * r + k]) * a[k * n_in + i];
          w[o * n_in + i] += static_cast<float>(s * acc);
        }
    }
  if (merged_cfg) *merged_cfg = base;
  return out;
}

// GPT decodes one position per call over its KV cache.
class KvCacheDecoder final : public KvCacheDecoderOf<TokenDecoder> {
 public:
  KvCacheDecoder(const ModelConfig& cfg, const std::vector<float>& params, Backend& be)
      : KvCacheDecoderOf(build_gpt(cfg, GraphMode::Decode, 1, 1, be.float_dtype(), false), params, be, cfg.seq_len,
                         cfg.n_head) {}
};

// gpt-pairs' model: a GPT over one sequence of source and target.
ModelConfig one_sequence(const ModelConfig& c) {
  ModelConfig p = c;
  p.seq_len = c.src_len + c.seq_len;
  return p;
}

// The source through the KV cache once (positions 0 .. its length - 1), then the target from
// the position after it; the source's positions are never written again, so reset() (the
// target side forgotten) and restore() keep them.
class PairKvCacheDecoder final : public KvCacheDecoderOf<Seq2SeqDecoder> {
 public:
  PairKvCacheDecoder(const ModelConfig& cfg, const std::vector<float>& params, Backend& be)
      : KvCacheDecoderOf(build_gpt(one_sequence(cfg), GraphMode::Decode, 1, 1, be.float_dtype(), false), params, be,
                         cfg.src_len + cfg.seq_len, cfg.n_head),
        src_len_(cfg.src_len),
        tgt_len_(cfg.seq_len) {}
  void encode(std::span<const int32_t> source) override {
    LOOM_USER_CHECK(!source.empty() && static_cast<int>(source.size()) <= src_len_, "source: ", source.size(),
                    " tokens (EOS included); the model reads 1 to model.src_len = ", src_len_);
    for (size_t i = 0; i < source.size(); ++i) KvCacheDecoderOf::step(source[i], static_cast<int>(i));
    offset_ = static_cast<int>(source.size());
    reset();
  }
  std::vector<float> step(int32_t token, int pos) override {
    LOOM_CHECK(offset_ > 0, "decoding before a source was encoded");
    return KvCacheDecoderOf::step(token, offset_ + pos);
  }
  std::vector<float> hidden() override {
    throw UserError("the gpt-pairs kind keeps no decoder state for a kNN datastore (encdec and rnn-seq2seq do)");
  }
  int capacity() const override { return tgt_len_; }

 private:
  int src_len_, tgt_len_;
  int offset_ = 0;  // the encoded source's length: where the target starts
};

class GptKind final : public ModelKind {
 public:
  const char* name() const override { return "gpt"; }
  std::vector<const char*> required_keys() const override {
    return {"model.n_layer", "model.n_head", "model.d_model", "optim.lr"};
  }
  std::vector<const char*> keys() const override {
    return {"model.n_layer", "model.n_head", "model.d_model", "optim.*", "lora.*", "data.document_mask", "data.eot_id",
            "train.recompute"};
  }
  void validate(const ModelConfig& c, const Require& req) const override {
    require_in(req, c.n_layer, 1, kMaxLayers, "model.n_layer");
    require_in(req, c.d_model, 1, kMaxWidth, "model.d_model");
    require_in(req, c.n_head, 1, kMaxHeads, "model.n_head");
    req(c.d_model % c.n_head == 0, "model.d_model",
        "must be a positive multiple of model.n_head (" + std::to_string(c.n_head) + ")");
    req(c.lora_rank <= c.d_model, "lora.rank", "must be at most model.d_model (" + std::to_string(c.d_model) + ")");
  }
  std::string describe(const ModelConfig& c) const override {
    return "L=" + std::to_string(c.n_layer) + " H=" + std::to_string(c.n_head) + " C=" + std::to_string(c.d_model);
  }
  bool supports_lora() const override { return true; }
  bool masks_documents() const override { return true; }
  // build_gpt's scopes: "h.<l>.attn" (ln_1's output -> qkv, attention, c_proj, the residual
  // add + ln_2) and "h.<l>.mlp" (c_fc + GELU, c_proj, the residual add + the next layer norm);
  // a block is both.
  std::string recompute_segment(const std::string& scope, Recompute r) const override {
    const auto dot = scope.rfind('.');
    if (r == Recompute::None || scope.rfind("h.", 0) != 0 || dot == std::string::npos) return {};
    const std::string part = scope.substr(dot + 1);
    if (r == Recompute::Block) return scope.substr(0, dot);
    return (r == Recompute::Attention && part == "attn") || (r == Recompute::Mlp && part == "mlp") ? scope : "";
  }
  ModelGraph build(const ModelConfig& c, GraphMode mode, int B, int T, DType dt, bool keep_logits, int S) const override {
    return build_gpt(c, mode, B, T, dt, keep_logits);
  }
  // 6N + 12 L T C (PaLM, appendix B): the score and value products of causal attention at
  // full length T; wpe is only looked up, wte is also the classifier.
  double flops_per_token(const ModelConfig& c) const override {
    return six_n_flops(c, {"wpe"}) + 12.0 * c.n_layer * c.seq_len * c.d_model;
  }
  std::string flops_beyond_6n() const override { return "attention's 12 L T C"; }
  std::vector<float> merge_lora(const ModelConfig& c, const std::vector<float>& params,
                                ModelConfig* merged) const override {
    return merge_gpt_lora(c, params, merged);
  }
  std::unique_ptr<TokenDecoder> decoder(const ModelConfig& c, const ModelWeights& w, Backend& be) const override {
    return std::make_unique<KvCacheDecoder>(c, w.params, be);
  }
};

class GptPairsKind final : public PairModelKind {
 public:
  const char* name() const override { return "gpt-pairs"; }
  std::vector<const char*> required_keys() const override {
    return {"model.n_layer", "model.n_head", "model.d_model", "model.src_len", "optim.lr"};
  }
  std::vector<const char*> keys() const override {
    return {"model.n_layer", "model.n_head", "model.d_model", "model.src_len", "optim.*", "train.recompute"};
  }
  void validate(const ModelConfig& c, const Require& req) const override { gpt_kind().validate(c, req); }
  std::string describe(const ModelConfig& c) const override {
    return gpt_kind().describe(c) + " S=" + std::to_string(c.src_len) + " (one sequence of S + T)";
  }
  std::string recompute_segment(const std::string& scope, Recompute r) const override {
    return gpt_kind().recompute_segment(scope, r);
  }
  // Training and evaluation graphs read B rows of S + T tokens (m.S = S, no source input; S at
  // most src_len);
  // the decoder's graph is GPT's over S + T positions.
  ModelGraph build(const ModelConfig& c, GraphMode mode, int B, int T, DType dt, bool keep_logits, int S) const override {
    ModelGraph m = build_gpt(one_sequence(c), mode, B, mode == GraphMode::Decode ? T : S + T, dt, keep_logits);
    m.S = S;
    return m;
  }
  // GPT's FLOPs over S + T positions, per target token (as the run loop counts pairs' tokens).
  double flops_per_token(const ModelConfig& c) const override {
    const ModelConfig p = one_sequence(c);
    return gpt_kind().flops_per_token(p) * p.seq_len / c.seq_len;
  }
  std::string flops_beyond_6n() const override { return "attention's 12 L (S + T) C, x (S + T) / T per target token"; }
  std::unique_ptr<Seq2SeqDecoder> seq2seq_decoder(const ModelConfig& c, const ModelWeights& w,
                                                  Backend& be) const override {
    return std::make_unique<PairKvCacheDecoder>(c, w.params, be);
  }
};

}  // namespace

const ModelKind& gpt_kind() {
  static const GptKind kind;
  return kind;
}

const ModelKind& gpt_pairs_kind() {
  static const GptPairsKind kind;
  return kind;
}

}  // namespace loom
