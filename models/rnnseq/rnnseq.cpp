// rnnseq.cpp: the recurrent sequence-to-sequence model (model.kind = rnn-seq2seq), learned from
// pairs with teacher forcing: Luong et al. 2015's attentional encoder-decoder, with Bahdanau's
// additive score as an option.
//
// Encoder: the source embedding, then n_enc_layer recurrent layers (model.cell = lstm | gru)
// of width d_model over each row's real length (the recurrent op's per-row lengths: padding
// never moves the state, so a row's final state is the one after its EOS). With
// model.bidirectional a second layer runs over the source reversed within its length
// (seq_reverse), and the layer's output is the concatenation of both directions through a
// linear back to d_model (W [y_fwd; y_bwd] + b, as two products).
// Bridge: decoder layer l starts from tanh(W [s_fwd; s_bwd] + b) of encoder layer
// min(l, n_enc_layer - 1)'s final states; the LSTM's h and c go through the same W (the state
// is one [2, B, H] value).
// Decoder: the target embedding, n_dec_layer recurrent layers from the bridged states, then
// attention of the top layer's h_t over the encoder outputs with the source's key padding
// (model.attention: dot h.s, general (W h).s, additive v.tanh(W1 h + W2 s); the rnn_attention
// op), the attentional output tanh(Wc [c_t; h_t]) and the classifier.
// No input feeding (Luong's h~_{t-1} concatenated to the next input): every decoder step's
// input is then a known token, so teacher forcing runs the whole target through each layer as
// one recurrent op and the attention for every position as one rnn_attention op, instead of a
// graph node per target position; decoding is unaffected.
// Embeddings: one matrix for the source, the target and the classifier (model.tie_embeddings),
// or three. N(0, 1) as nn.Embedding (no layer norm rescales them; models/rnn/rnn_lm.cpp); an
// untied classifier and every other linear as nn.Linear in scale, std 1/sqrt(3 fan_in).
//
// Decoding (seq2seq_decoder): an Encode graph computes the encoder outputs (and the additive
// score's keys W2 s) and the bridged initial states once; a Decode graph feeds one target token
// over them and carries each decoder layer's state from step to step.
#include <climits>
#include <cmath>

#include "models/graph_decoder.h"
#include "models/pair_kind.h"
#include "models/recurrent_layer.h"

namespace loom {

namespace {

Cell cell_of(const ModelConfig& c) { return c.cell == "gru" ? Cell::GRU : Cell::LSTM; }

struct Linear {
  int w = -1, b = -1;
};
// A linear of the concatenation [a; b]: one weight per part, one bias.
struct PairLinear {
  int w_a = -1, w_b = -1, bias = -1;
};

struct Params {
  int src_wte, tgt_wte, head;
  std::vector<RecurrentWeights> enc_fwd, enc_bwd, dec;
  std::vector<PairLinear> merge;   // bidirectional: per encoder layer, [y_fwd; y_bwd] -> H
  std::vector<PairLinear> bridge;  // per decoder layer ([s_fwd; s_bwd], or s_fwd alone)
  Linear att_q, att_k;             // general: att_q (no bias); additive: W1 h and W2 s + b
  int att_v = -1;                  // additive: the scoring vector
  PairLinear out;                  // tanh(Wc [c; h] + b)
};

// Registers every parameter in one fixed order (the layout shared by every mode).
Params register_params(Graph& g, const ModelConfig& c) {
  const int64_t H = c.d_model, V = c.vocab;
  const Cell cell = cell_of(c);
  auto std_for = [](int64_t fan_in) { return 1.0f / std::sqrt(3.0f * static_cast<float>(fan_in)); };
  Params p{};
  if (c.tie_embeddings) {
    p.src_wte = p.tgt_wte = p.head = g.param("wte", {V, H}, Init::Normal, 1.0f, true);
  } else {
    p.src_wte = g.param("enc.wte", {V, H}, Init::Normal, 1.0f, true);
    p.tgt_wte = g.param("dec.wte", {V, H}, Init::Normal, 1.0f, true);
    p.head = g.param("lm_head.weight", {V, H}, Init::Normal, std_for(H), true);
  }
  auto pair_linear = [&](const std::string& n, bool two) {
    PairLinear l;
    const float sd = std_for(two ? 2 * H : H);
    l.w_a = g.param(n + (two ? ".fwd.weight" : ".weight"), {H, H}, Init::Normal, sd, true);
    if (two) l.w_b = g.param(n + ".bwd.weight", {H, H}, Init::Normal, sd, true);
    l.bias = g.param(n + ".bias", {H}, Init::Zeros, 0, false);
    return l;
  };
  const bool bi = c.bidirectional;
  for (int l = 0; l < c.n_enc_layer; ++l) {
    const std::string s = "enc." + std::to_string(l) + ".";
    p.enc_fwd.push_back(recurrent_params(g, cell, s + (bi ? "fwd." : ""), H, H));
    if (bi) {
      p.enc_bwd.push_back(recurrent_params(g, cell, s + "bwd.", H, H));
      p.merge.push_back(pair_linear(s + "merge", true));
    }
  }
  for (int l = 0; l < c.n_dec_layer; ++l) {
    p.bridge.push_back(pair_linear("bridge." + std::to_string(l), bi));
    p.dec.push_back(recurrent_params(g, cell, "dec." + std::to_string(l) + ".", H, H));
  }
  if (c.attention == "general") {
    p.att_q.w = g.param("attn.w", {H, H}, Init::Normal, std_for(H), true);
  } else if (c.attention == "additive") {
    p.att_q.w = g.param("attn.q.weight", {H, H}, Init::Normal, std_for(H), true);
    p.att_k.w = g.param("attn.k.weight", {H, H}, Init::Normal, std_for(H), true);
    p.att_k.b = g.param("attn.k.bias", {H}, Init::Zeros, 0, false);
    p.att_v = g.param("attn.v", {H}, Init::Normal, std_for(H), true);
  }
  p.out.w_a = g.param("attn_out.ctx.weight", {H, H}, Init::Normal, std_for(2 * H), true);
  p.out.w_b = g.param("attn_out.h.weight", {H, H}, Init::Normal, std_for(2 * H), true);
  p.out.bias = g.param("attn_out.bias", {H}, Init::Zeros, 0, false);
  return p;
}

// W [a; b] + bias (b < 0: W a + bias).
int apply(Graph& g, const PairLinear& l, int a, int b) {
  const int ya = g.linear(a, l.w_a, l.bias);
  return b < 0 ? ya : g.add(ya, g.linear(b, l.w_b));
}

// The encoder over m.source. Returns its outputs [B, S, H]; `final` gets each layer's final
// states {fwd, bwd (-1 when unidirectional)}.
int build_encoder(Graph& g, const ModelConfig& c, const Params& p, const ModelGraph& m,
                  std::vector<std::pair<int, int>>& final) {
  const Cell cell = cell_of(c);
  g.set_scope("enc.embed");
  int x = g.context_embedding(m.source, p.src_wte, 1, 0);
  // Every encoder layer starts from zero (an input nobody sets: the executor zeroes inputs).
  const int zero = g.input("enc.state0", {cell_states(cell), m.B, c.d_model}, g.stat_dtype());
  for (int l = 0; l < c.n_enc_layer; ++l) {
    g.set_scope("enc." + std::to_string(l));
    auto [y, s_fwd] = recurrent_layer(g, cell, x, p.enc_fwd[l], zero, m.source_len);
    int s_bwd = -1;
    if (c.bidirectional) {
      auto [yr, sb] = recurrent_layer(g, cell, g.seq_reverse(x, m.source_len), p.enc_bwd[l], zero, m.source_len);
      s_bwd = sb;
      y = apply(g, p.merge[l], y, g.seq_reverse(yr, m.source_len));
    }
    final.push_back({s_fwd, s_bwd});
    x = y;
  }
  return x;
}

// Decoder layer l's initial state from the encoder's final states (stat dtype [NS, B, H]).
int bridge(Graph& g, const ModelConfig& c, const Params& p, const std::vector<std::pair<int, int>>& final, int l) {
  g.set_scope("bridge." + std::to_string(l));
  const auto [f, b] = final[std::min(l, c.n_enc_layer - 1)];
  const DType dt = g.float_dtype();
  const int s = g.tanh(apply(g, p.bridge[l], g.cast(f, dt), b < 0 ? -1 : g.cast(b, dt)));
  return g.cast(s, g.stat_dtype());
}

ModelGraph build_rnnseq(const ModelConfig& c, GraphMode mode, int B, int T, DType dt, bool keep_logits, int S) {
  ModelGraph m(dt);
  Graph& g = m.g;
  m.B = B;
  m.T = T;
  m.S = S;
  const int64_t H = c.d_model;
  const Cell cell = cell_of(c);
  const Params p = register_params(g, c);
  const bool decode = mode == GraphMode::Decode, additive = c.attention == "additive";
  m.source_len = g.input("source_len", {B}, DType::I32);
  int mem = -1, keys = -1;
  std::vector<int> state0;
  if (decode) {
    mem = g.input("memory.outputs", {B, m.S, H}, dt);
    m.memory.push_back(mem);
    if (additive) m.memory.push_back(keys = g.input("memory.keys", {B, m.S, H}, dt));
    for (int l = 0; l < c.n_dec_layer; ++l)
      state0.push_back(g.input("state." + std::to_string(l), {cell_states(cell), B, H}, g.stat_dtype()));
    m.state_in = state0;
  } else {
    m.source = g.input("source", {B, m.S}, DType::I32);
    std::vector<std::pair<int, int>> final;
    mem = build_encoder(g, c, p, m, final);
    g.set_scope("attn");
    if (additive) keys = g.linear(mem, p.att_k.w, p.att_k.b);
    for (int l = 0; l < c.n_dec_layer; ++l) state0.push_back(bridge(g, c, p, final, l));
  }
  if (!additive) keys = mem;
  if (mode == GraphMode::Encode) {
    m.memory = additive ? std::vector<int>{mem, keys} : std::vector<int>{mem};
    m.state_out = state0;
    finish_encode_graph(m);
    return m;
  }
  m.tokens = g.input("tokens", {B, T}, DType::I32);
  g.set_scope("dec.embed");
  int y = g.context_embedding(m.tokens, p.tgt_wte, 1, 0);
  for (int l = 0; l < c.n_dec_layer; ++l) {
    g.set_scope("dec." + std::to_string(l));
    auto [h, sT] = recurrent_layer(g, cell, y, p.dec[l], state0[l]);
    if (decode) {
      g.mark_output(sT);
      m.state_out.push_back(sT);
    }
    y = h;
  }
  g.set_scope("attn");
  const int q = c.attention == "dot" ? y : g.linear(y, p.att_q.w);
  const int ctx = g.rnn_attention(q, keys, mem, p.att_v, m.source_len);
  g.set_scope("attn_out");
  const int hidden = g.tanh(apply(g, p.out, ctx, y));
  finish_pair_graph(m, hidden, g.linear(hidden, p.head), mode, keep_logits);
  return m;
}

// Encodes once (the Encode graph's outputs: the Decode graph's memory inputs and the decoder's
// initial states, kept to return to on reset()), then one target token per step with each
// layer's state carried.
class RnnSeqDecoder final : public GraphDecoderOf<Seq2SeqDecoder> {
 public:
  RnnSeqDecoder(const ModelConfig& cfg, const std::vector<float>& params, Backend& be)
      : GraphDecoderOf(build_rnnseq(cfg, GraphMode::Decode, 1, 1, be.float_dtype(), false, cfg.src_len), params, be),
        enc_(build_rnnseq(cfg, GraphMode::Encode, 1, 1, be.float_dtype(), false, cfg.src_len), *weights_, be, cfg.src_len) {}
  void encode(std::span<const int32_t> source) override {
    const int32_t len = enc_.encode(source, *ex_, mg_.memory, mg_.state_in);
    ex_->set_input(mg_.source_len, &len, 4);
    initial_ = save();
  }
  std::vector<float> step(int32_t token, int) override {
    LOOM_CHECK(initial_, "decoding before a source was encoded");
    return step_carrying_state(token);
  }
  std::vector<float> hidden() override { return ex_->fetch_f32(mg_.hidden); }
  void reset() override {
    if (initial_) restore(*initial_);
  }
  int capacity() const override { return INT_MAX; }
  std::unique_ptr<DecoderState> save() const override { return save_values(mg_.state_in); }
  void restore(const DecoderState& s) override { restore_values(s, mg_.state_in); }

 private:
  SourceEncoder enc_;
  std::unique_ptr<DecoderState> initial_;  // the bridged states of the encoded source
};

class RnnSeqKind final : public PairModelKind {
 public:
  const char* name() const override { return "rnn-seq2seq"; }
  std::vector<const char*> required_keys() const override {
    return {"model.n_enc_layer", "model.n_dec_layer", "model.d_model", "model.src_len", "optim.lr"};
  }
  std::vector<const char*> keys() const override {
    return {"model.n_enc_layer",    "model.n_dec_layer", "model.d_model",  "model.src_len", "model.tie_embeddings",
            "model.cell", "model.bidirectional", "model.attention", "optim.*"};
  }
  void validate(const ModelConfig& c, const Require& req) const override {
    require_in(req, c.n_enc_layer, 1, kMaxLayers, "model.n_enc_layer");
    require_in(req, c.n_dec_layer, 1, kMaxLayers, "model.n_dec_layer");
    require_in(req, c.d_model, 1, kMaxWidth, "model.d_model");
    req(c.cell == "lstm" || c.cell == "gru", "model.cell", "'" + c.cell + "' is not one of lstm, gru");
    req(c.attention == "dot" || c.attention == "general" || c.attention == "additive", "model.attention",
        "'" + c.attention + "' is not one of dot, general, additive");
  }
  std::string describe(const ModelConfig& c) const override {
    return "Lenc=" + std::to_string(c.n_enc_layer) + (c.bidirectional ? " (bidirectional)" : "") +
           " Ldec=" + std::to_string(c.n_dec_layer) + " " + c.cell + " H=" + std::to_string(c.d_model) +
           " S=" + std::to_string(c.src_len) + " attention=" + c.attention + (c.tie_embeddings ? " tied" : " untied");
  }
  ModelGraph build(const ModelConfig& c, GraphMode mode, int B, int T, DType dt, bool keep_logits, int S) const override {
    return build_rnnseq(c, mode, B, T, dt, keep_logits, S);
  }
  // Per target token: 6 N for the decoder side; the encoder's parameters work on S source
  // tokens per T target tokens; the attention's score and context products are 4 S H a
  // target token (x3 with backward).
  double flops_per_token(const ModelConfig& c) const override {
    const double enc = static_cast<double>(
        count_params_where(c, [](const std::string& n) { return n.rfind("enc.", 0) == 0 && n != "enc.wte"; }));
    const double S = c.src_len, T = c.seq_len;
    return six_n_flops(c, {"enc.wte", "dec.wte"}) + 6.0 * enc * (S / T - 1.0) + 12.0 * S * c.d_model;
  }
  std::string flops_beyond_6n() const override { return "the encoder's 6 N_enc (S/T - 1) and attention's 12 S H"; }
  std::unique_ptr<Seq2SeqDecoder> seq2seq_decoder(const ModelConfig& c, const ModelWeights& w,
                                                  Backend& be) const override {
    return std::make_unique<RnnSeqDecoder>(c, w.params, be);
  }
};

}  // namespace

const ModelKind& rnnseq_kind() {
  static const RnnSeqKind kind;
  return kind;
}

}  // namespace loom
