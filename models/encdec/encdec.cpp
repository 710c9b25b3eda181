// encdec.cpp: the encoder-decoder Transformer (model.kind = encdec), learned from pairs with
// teacher forcing. Encoder: n_enc_layer pre-LN blocks of bidirectional self-attention over the
// source (key padding: the source's PAD is never attended to) and a GELU MLP of 4 * d_model,
// then a final layer norm. Decoder: n_dec_layer pre-LN blocks of causal self-attention,
// cross-attention over the encoder's output (same key padding) and the MLP, a final layer norm
// and the classifier. Embeddings: one matrix for the source, the target and the classifier
// (model.tie_embeddings), or three; positions sinusoidal (a frozen table) or learned (one table
// per side). Initialisation as GPT-2: N(0, 0.02), residual projections scaled by
// 1/sqrt(2 x the stack's layers), zero biases, unit norm gains.
//
// Decoding (seq2seq_decoder): an Encode graph runs the encoder once and projects its output to
// every decoder layer's cross-attention keys/values; a Decode graph feeds one target token over
// those (read in place, never recomputed) and a self-attention KV cache.
#include <algorithm>
#include <cmath>
#include <tuple>

#include "models/graph_decoder.h"
#include "models/pair_kind.h"

namespace loom {

namespace {

struct Mlp {
  int fc_w, fc_b, fc2_w, fc2_b;
};
// A block's first part, the same in both stacks: ln_1, then self-attention.
struct SelfAttn {
  int ln1_g, ln1_b, qkv_w, qkv_b, proj_w, proj_b;
};
struct EncLayer {
  SelfAttn sa;
  int ln2_g, ln2_b;
  Mlp mlp;
};
struct DecLayer {
  SelfAttn sa;
  int ln2_g, ln2_b, q_w, q_b, kv_w, kv_b, xproj_w, xproj_b;
  int ln3_g, ln3_b;
  Mlp mlp;
};

struct Params {
  int src_wte, tgt_wte, head, src_wpe, tgt_wpe;
  std::vector<EncLayer> enc;
  std::vector<DecLayer> dec;
  int enc_lnf_g, enc_lnf_b, dec_lnf_g, dec_lnf_b;
};

// Registers every parameter in one fixed order (the layout shared by every mode); the
// sinusoidal table, frozen, comes last so the trainable parameters are a prefix.
Params register_params(Graph& g, const ModelConfig& c) {
  const int64_t C = c.d_model, V = c.vocab;
  const float std0 = 0.02f;
  const float enc_res = std0 / std::sqrt(2.0f * c.n_enc_layer), dec_res = std0 / std::sqrt(3.0f * c.n_dec_layer);
  Params p{};
  if (c.tie_embeddings) {
    p.src_wte = p.tgt_wte = p.head = g.param("wte", {V, C}, Init::Normal, std0, true);
  } else {
    p.src_wte = g.param("enc.wte", {V, C}, Init::Normal, std0, true);
    p.tgt_wte = g.param("dec.wte", {V, C}, Init::Normal, std0, true);
    p.head = g.param("lm_head.weight", {V, C}, Init::Normal, std0, true);
  }
  const bool learned = c.positions == "learned";
  if (learned) {
    p.src_wpe = g.param("enc.wpe", {c.src_len, C}, Init::Normal, std0, true);
    p.tgt_wpe = g.param("dec.wpe", {c.seq_len, C}, Init::Normal, std0, true);
  }
  auto ln = [&](const std::string& n, int& gain, int& bias) {
    gain = g.param(n + ".weight", {C}, Init::Ones, 0, false);
    bias = g.param(n + ".bias", {C}, Init::Zeros, 0, false);
  };
  auto lin = [&](const std::string& n, int64_t out, int64_t in, float sd, int& w, int& b) {
    w = g.param(n + ".weight", {out, in}, Init::Normal, sd, true);
    b = g.param(n + ".bias", {out}, Init::Zeros, 0, false);
  };
  auto self_attn = [&](const std::string& s, float res, SelfAttn& a) {
    ln(s + "ln_1", a.ln1_g, a.ln1_b);
    lin(s + "attn.c_attn", 3 * C, C, std0, a.qkv_w, a.qkv_b);
    lin(s + "attn.c_proj", C, C, res, a.proj_w, a.proj_b);
  };
  auto mlp = [&](const std::string& n, float res, Mlp& m) {
    lin(n + ".c_fc", 4 * C, C, std0, m.fc_w, m.fc_b);
    lin(n + ".c_proj", C, 4 * C, res, m.fc2_w, m.fc2_b);
  };
  p.enc.resize(c.n_enc_layer);
  for (int l = 0; l < c.n_enc_layer; ++l) {
    const std::string s = "enc." + std::to_string(l) + ".";
    EncLayer& e = p.enc[l];
    self_attn(s, enc_res, e.sa);
    ln(s + "ln_2", e.ln2_g, e.ln2_b);
    mlp(s + "mlp", enc_res, e.mlp);
  }
  ln("enc.ln_f", p.enc_lnf_g, p.enc_lnf_b);
  p.dec.resize(c.n_dec_layer);
  for (int l = 0; l < c.n_dec_layer; ++l) {
    const std::string s = "dec." + std::to_string(l) + ".";
    DecLayer& d = p.dec[l];
    self_attn(s, dec_res, d.sa);
    ln(s + "ln_2", d.ln2_g, d.ln2_b);
    lin(s + "cross.q", C, C, std0, d.q_w, d.q_b);
    lin(s + "cross.kv", 2 * C, C, std0, d.kv_w, d.kv_b);
    lin(s + "cross.c_proj", C, C, dec_res, d.xproj_w, d.xproj_b);
    ln(s + "ln_3", d.ln3_g, d.ln3_b);
    mlp(s + "mlp", dec_res, d.mlp);
  }
  ln("dec.ln_f", p.dec_lnf_g, p.dec_lnf_b);
  if (!learned) {
    p.src_wpe = p.tgt_wpe = g.param("pos.sinusoid", {std::max(c.src_len, c.seq_len), C}, Init::Sinusoidal, std0, false);
    g.params.back().trainable = false;
  }
  return p;
}

int mlp_out(Graph& g, int h, const Mlp& m) { return g.linear(g.linear_gelu(h, m.fc_w, m.fc_b), m.fc2_w, m.fc2_b); }

// The encoder over m.source: what the decoder layers read of it (cross-attention keys/values,
// [B, S, 2C] each).
std::vector<int> build_encoder(Graph& g, const ModelConfig& c, const Params& p, const ModelGraph& m) {
  g.set_scope("enc.embed");
  int x = g.embedding(m.source, p.src_wte, p.src_wpe);
  for (int l = 0; l < c.n_enc_layer; ++l) {
    const EncLayer& e = p.enc[l];
    g.set_scope("enc." + std::to_string(l) + ".attn");
    const int h = g.layernorm(x, e.sa.ln1_g, e.sa.ln1_b);
    const int a = g.attention(g.linear(h, e.sa.qkv_w, e.sa.qkv_b), c.n_head, {.causal = false, .key_len = m.source_len});
    x = g.add(x, g.linear(a, e.sa.proj_w, e.sa.proj_b));
    g.set_scope("enc." + std::to_string(l) + ".mlp");
    x = g.add(x, mlp_out(g, g.layernorm(x, e.ln2_g, e.ln2_b), e.mlp));
  }
  g.set_scope("enc.ln_f");
  const int mem = g.layernorm(x, p.enc_lnf_g, p.enc_lnf_b);
  std::vector<int> kv;
  for (int l = 0; l < c.n_dec_layer; ++l) {
    g.set_scope("dec." + std::to_string(l) + ".cross");
    kv.push_back(g.linear(mem, p.dec[l].kv_w, p.dec[l].kv_b));
  }
  return kv;
}

ModelGraph build_encdec(const ModelConfig& c, GraphMode mode, int B, int T, DType dt, bool keep_logits, int S) {
  ModelGraph m(dt);
  Graph& g = m.g;
  m.B = B;
  m.T = T;
  m.S = S;
  const int64_t C = c.d_model, H = c.n_head;
  const Params p = register_params(g, c);
  const bool decode = mode == GraphMode::Decode;
  m.source_len = g.input("source_len", {B}, DType::I32);
  std::vector<int> kv;
  if (decode) {
    for (int l = 0; l < c.n_dec_layer; ++l)
      m.memory.push_back(g.input("memory." + std::to_string(l), {B, m.S, 2 * C}, dt));
    kv = m.memory;
  } else {
    m.source = g.input("source", {B, m.S}, DType::I32);
    kv = build_encoder(g, c, p, m);
  }
  if (mode == GraphMode::Encode) {
    m.memory = kv;
    finish_encode_graph(m);
    return m;
  }
  m.tokens = g.input("tokens", {B, T}, DType::I32);
  if (decode) {
    m.pos = g.input("pos", {1}, DType::I32);
    for (int l = 0; l < c.n_dec_layer; ++l)
      for (const char* n : {"k", "v"})
        m.caches.push_back(g.input("cache." + std::to_string(l) + "." + n, {B, H, c.seq_len, C / H}, dt));
  }
  g.set_scope("dec.embed");
  int y = g.embedding(m.tokens, p.tgt_wte, p.tgt_wpe, m.pos);
  for (int l = 0; l < c.n_dec_layer; ++l) {
    const DecLayer& d = p.dec[l];
    const std::string s = "dec." + std::to_string(l);
    g.set_scope(s + ".attn");
    const int qkv = g.linear(g.layernorm(y, d.sa.ln1_g, d.sa.ln1_b), d.sa.qkv_w, d.sa.qkv_b);
    const int a = decode ? g.attention_decode(qkv, m.caches[2 * l], m.caches[2 * l + 1], m.pos, c.n_head)
                         : g.attention(qkv, c.n_head);
    y = g.add(y, g.linear(a, d.sa.proj_w, d.sa.proj_b));
    g.set_scope(s + ".cross");
    const int q = g.linear(g.layernorm(y, d.ln2_g, d.ln2_b), d.q_w, d.q_b);
    const int x = decode ? g.cross_attention_decode(q, kv[l], c.n_head, m.source_len)
                         : g.cross_attention(q, kv[l], c.n_head, m.source_len);
    y = g.add(y, g.linear(x, d.xproj_w, d.xproj_b));
    g.set_scope(s + ".mlp");
    y = g.add(y, mlp_out(g, g.layernorm(y, d.ln3_g, d.ln3_b), d.mlp));
  }
  g.set_scope("dec.ln_f");
  const int hidden = g.layernorm(y, p.dec_lnf_g, p.dec_lnf_b);
  finish_pair_graph(m, hidden, g.linear(hidden, p.head), mode, keep_logits);
  return m;
}

// Encodes once (the Encode graph's outputs are copied into the Decode graph's memory inputs),
// then decodes one target token per step over the self-attention KV cache.
class EncDecDecoder final : public KvCacheDecoderOf<Seq2SeqDecoder> {
 public:
  EncDecDecoder(const ModelConfig& cfg, const std::vector<float>& params, Backend& be)
      : KvCacheDecoderOf(build_encdec(cfg, GraphMode::Decode, 1, 1, be.float_dtype(), false, cfg.src_len), params, be, cfg.seq_len,
                         cfg.n_head),
        enc_(build_encdec(cfg, GraphMode::Encode, 1, 1, be.float_dtype(), false, cfg.src_len), *weights_, be, cfg.src_len) {}
  void encode(std::span<const int32_t> source) override {
    const int32_t len = enc_.encode(source, *ex_, mg_.memory, {});
    ex_->set_input(mg_.source_len, &len, 4);
    encoded_ = true;
    reset();
  }
  std::vector<float> step(int32_t token, int pos) override {
    LOOM_CHECK(encoded_, "decoding before a source was encoded");
    return KvCacheDecoderOf::step(token, pos);
  }
  std::vector<float> hidden() override { return ex_->fetch_f32(mg_.hidden); }

 private:
  SourceEncoder enc_;
  bool encoded_ = false;
};

// Warm start from a GPT (EncDecKind::warm_start): copies `from`'s tensor `src` into this
// model's `dst`, the leading rows where the first dimensions differ (a vocabulary that the pair
// folder extends with its special tokens, a position table longer than a side needs).
class WeightCopier {
 public:
  WeightCopier(const ModelConfig& c, std::vector<float>& params, const ModelConfig& from, const std::vector<float>& fp)
      : dg_(build_model(c, GraphMode::Eval, 1, 1, DType::F32).g),
        sg_(build_model(from, GraphMode::Eval, 1, 1, DType::F32).g), d_(params), s_(fp) {}
  void copy(const std::string& dst, const std::string& src) {
    const ParamInfo& d = param(dg_, dst);
    const ParamInfo& s = param(sg_, src);
    LOOM_CHECK(d.shape.size() == s.shape.size() && (d.shape.size() == 1 ? d.shape[0] == s.shape[0] : d.shape[1] == s.shape[1]),
               dst, " and ", src, " differ in shape");
    const int64_t n = std::min(d.count(), s.count());
    std::copy_n(s_.begin() + s.offset, n, d_.begin() + d.offset);
    copied_ += n;
  }
  int64_t copied() const { return copied_; }

 private:
  static const ParamInfo& param(const Graph& g, const std::string& name) {
    const int i = g.find_param(name);
    LOOM_CHECK(i >= 0, "no parameter ", name);
    return g.params[static_cast<size_t>(i)];
  }
  Graph dg_, sg_;  // the two models' parameter layouts
  std::vector<float>& d_;
  const std::vector<float>& s_;
  int64_t copied_ = 0;
};

class EncDecKind final : public PairModelKind {
 public:
  const char* name() const override { return "encdec"; }
  std::vector<const char*> required_keys() const override {
    return {"model.n_enc_layer", "model.n_dec_layer", "model.n_head", "model.d_model", "model.src_len", "optim.lr"};
  }
  std::vector<const char*> keys() const override {
    return {"model.n_enc_layer", "model.n_dec_layer", "model.n_head",    "model.d_model",
            "model.src_len",     "model.tie_embeddings", "model.positions", "optim.*", "train.init_from"};
  }
  void validate(const ModelConfig& c, const Require& req) const override {
    require_in(req, c.n_enc_layer, 1, kMaxLayers, "model.n_enc_layer");
    require_in(req, c.n_dec_layer, 1, kMaxLayers, "model.n_dec_layer");
    require_in(req, c.d_model, 1, kMaxWidth, "model.d_model");
    require_in(req, c.n_head, 1, kMaxHeads, "model.n_head");
    req(c.d_model % c.n_head == 0, "model.d_model",
        "must be a positive multiple of model.n_head (" + std::to_string(c.n_head) + ")");
    req(c.positions != "sinusoidal" || c.d_model % 2 == 0, "model.d_model",
        "must be even with model.positions = sinusoidal");
  }
  std::string describe(const ModelConfig& c) const override {
    return "Lenc=" + std::to_string(c.n_enc_layer) + " Ldec=" + std::to_string(c.n_dec_layer) +
           " H=" + std::to_string(c.n_head) + " C=" + std::to_string(c.d_model) + " S=" + std::to_string(c.src_len) +
           (c.tie_embeddings ? " tied" : " untied") + " " + c.positions;
  }
  ModelGraph build(const ModelConfig& c, GraphMode mode, int B, int T, DType dt, bool keep_logits, int S) const override {
    return build_encdec(c, mode, B, T, dt, keep_logits, S);
  }
  // Per target token, as the run loop counts a pair kind's FLOPs: 6N (the tables only looked up
  // excluded: positions, and untied source and target embeddings), plus 6 N_src (S/T - 1) for
  // the parameters that work on the S source tokens of T target tokens (the encoder's layers and
  // every decoder layer's cross-attention key/value projection), plus the score and value
  // products: the encoder's bidirectional 4 S C per layer over S source tokens, the decoder's
  // causal self-attention (12 T C per layer, as GPT's) and its cross-attention (4 S C per
  // target token, x3 with backward).
  double flops_per_token(const ModelConfig& c) const override {
    const double C = c.d_model, S = c.src_len, T = c.seq_len;
    const double src = static_cast<double>(count_params_where(c, [](const std::string& n) {
      return (n.rfind("enc.", 0) == 0 && n != "enc.wte" && n != "enc.wpe") || n.find(".cross.kv.") != std::string::npos;
    }));
    return six_n_flops(c, {"enc.wpe", "dec.wpe", "pos.sinusoid", "enc.wte", "dec.wte"}) + 6.0 * src * (S / T - 1.0) +
           12.0 * c.n_enc_layer * S * C * (S / T) + 12.0 * c.n_dec_layer * T * C + 12.0 * c.n_dec_layer * S * C;
  }
  std::string flops_beyond_6n() const override {
    return "the source side's 6 N_src (S/T - 1) and attention's 12 L (S^2/T + T + S) C";
  }
  std::unique_ptr<Seq2SeqDecoder> seq2seq_decoder(const ModelConfig& c, const ModelWeights& w,
                                                  Backend& be) const override {
    return std::make_unique<EncDecDecoder>(c, w.params, be);
  }
  // From a GPT of the same width and heads (a language model of the same tokenizer): its layer l
  // becomes encoder layer l (bidirectional from here on) and decoder layer l's self-attention
  // and MLP (its ln_2, the norm before the MLP, is the decoder's ln_3); its final norm both
  // stacks'; its token rows the embeddings and classifier (the pair folder's special tokens and
  // sentinels follow them and keep their initialisation); its first positions both tables.
  // The cross-attention (with the norm before it) is new and stays as initialised.
  std::string warm_start(const ModelConfig& c, std::vector<float>& params, const ModelConfig& from,
                         const std::vector<float>& fp, const std::string& origin) const override {
    const std::string at = origin + " (train.init_from): ";
    LOOM_USER_CHECK(from.kind == "gpt", at, "model.kind = ", from.kind, "; an encdec starts only from a gpt");
    LOOM_USER_CHECK(from.lora_rank == 0, at, "holds LoRA adapters; start from its merged checkpoint (loom finetune --merge)");
    LOOM_USER_CHECK(from.d_model == c.d_model && from.n_head == c.n_head, at, "width ", from.d_model, " with ", from.n_head,
                    " heads; model.d_model = ", c.d_model, " and model.n_head = ", c.n_head, " must match it");
    const int layers = std::max(c.n_enc_layer, c.n_dec_layer);
    LOOM_USER_CHECK(from.n_layer >= layers, at, from.n_layer, " layers, fewer than the ", layers,
                    " of model.n_enc_layer / model.n_dec_layer");
    LOOM_USER_CHECK(c.positions == "learned", at, "a gpt's layers read learned positions; set model.positions = learned");
    LOOM_USER_CHECK(from.seq_len >= std::max(c.src_len, c.seq_len), at, "seq_len ", from.seq_len,
                    ": its positions do not cover model.src_len = ", c.src_len, " and model.seq_len = ", c.seq_len);
    LOOM_USER_CHECK(from.vocab <= c.vocab, at, "a vocabulary of ", from.vocab, " tokens, more than the data's ", c.vocab);
    WeightCopier w(c, params, from, fp);
    for (const char* e : c.tie_embeddings ? std::vector<const char*>{"wte"}
                                          : std::vector<const char*>{"enc.wte", "dec.wte", "lm_head.weight"})
      w.copy(e, "wte");
    w.copy("enc.wpe", "wpe");
    w.copy("dec.wpe", "wpe");
    for (const char* side : {"enc", "dec"}) {
      const int n = std::string(side) == "enc" ? c.n_enc_layer : c.n_dec_layer;
      for (int l = 0; l < n; ++l) {
        const std::string g = "h." + std::to_string(l) + ".", e = side + ("." + std::to_string(l) + ".");
        for (const char* t : {"ln_1", "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"})
          for (const char* wb : {".weight", ".bias"}) w.copy(e + t + wb, g + t + wb);
        for (const char* wb : {".weight", ".bias"})
          w.copy(e + (std::string(side) == "enc" ? "ln_2" : "ln_3") + wb, g + "ln_2" + wb);
      }
      for (const char* wb : {".weight", ".bias"}) w.copy(side + std::string(".ln_f") + wb, std::string("ln_f") + wb);
    }
    return "warm start: " + std::to_string(w.copied()) + " of " + std::to_string(params.size()) +
           " parameters from the gpt " + origin + " (" + std::to_string(from.n_layer) + " layers; its first " +
           std::to_string(from.vocab) + " token rows); cross-attention and the other " +
           std::to_string(c.vocab - from.vocab) + " token rows as initialised";
  }
};

}  // namespace

const ModelKind& encdec_kind() {
  static const EncDecKind kind;
  return kind;
}

}  // namespace loom
