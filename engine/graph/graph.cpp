// graph.cpp: the graph builder. Each op builder checks its shapes (a shape error here is a
// bug in a model definition, so LOOM_CHECK) and records one node.
#include "engine/graph/graph.h"

#include "kernels/rnn/rnn.h"

namespace loom {

int Graph::new_value(const std::string& name, Shape shape, DType dtype, ValueKind kind) {
  Value v;
  v.name = name;
  v.shape = std::move(shape);
  v.dtype = dtype;
  v.kind = kind;
  values.push_back(std::move(v));
  return static_cast<int>(values.size()) - 1;
}

int Graph::input(const std::string& name, Shape shape, DType dtype) {
  return new_value(name, std::move(shape), dtype, ValueKind::Input);
}

int Graph::param(const std::string& name, Shape shape, Init init, float init_std, bool decay) {
  LOOM_CHECK(find_param(name) < 0, "duplicate parameter ", name);
  ParamInfo p;
  p.name = name;
  p.shape = shape;
  p.offset = param_count;
  p.init = init;
  p.init_std = init_std;
  p.decay = decay;
  p.value = new_value(name, std::move(shape), fdt_, ValueKind::Param);
  values[p.value].param = static_cast<int>(params.size());
  param_count += p.count();
  params.push_back(std::move(p));
  return params.back().value;
}

int64_t Graph::trainable_prefix() const { return loom::trainable_prefix(params, param_count); }

int64_t trainable_prefix(const std::vector<ParamInfo>& params, int64_t param_count) {
  int64_t end = 0;
  bool frozen_seen = false;
  for (const auto& p : params) {
    if (p.trainable) {
      LOOM_CHECK(!frozen_seen, "parameter ", p.name, " is trainable but follows a frozen one");
      end = p.offset + p.count();
    } else {
      frozen_seen = true;
    }
  }
  return frozen_seen ? end : param_count;
}

int Graph::find_param(const std::string& name) const {
  for (size_t i = 0; i < params.size(); ++i)
    if (params[i].name == name) return static_cast<int>(i);
  return -1;
}

namespace {
// "(x, g, b)": an op's slot list as ops.def writes it.
std::string slot_list(const OpSlots& s) {
  std::string r = "(";
  for (int i = 0; i < s.count; ++i) r += (i ? ", " : "") + std::string(s.name[i]);
  return r + ")";
}
}  // namespace

// Trailing optional slots may be left out; they are filled with -1 (absent).
void Graph::add_node(OpId op, std::vector<int> in, std::vector<int> out, Attrs attrs) {
  const OpInfo& info = op_info(op);
  LOOM_CHECK(static_cast<int>(in.size()) <= info.n_in, info.name, " takes ", info.n_in, " inputs ", slot_list(info.in),
             ", given ", in.size());
  LOOM_CHECK(static_cast<int>(out.size()) <= info.n_out, info.name, " has ", info.n_out, " outputs ",
             slot_list(info.out), ", given ", out.size());
  const int nv = static_cast<int>(values.size());
  for (size_t i = 0; i < in.size(); ++i)
    LOOM_CHECK(in[i] >= -1 && in[i] < nv, "input ", info.in.name[i], " of ", info.name, ": no value ", in[i]);
  for (size_t i = 0; i < out.size(); ++i)
    LOOM_CHECK(out[i] >= -1 && out[i] < nv, "output ", info.out.name[i], " of ", info.name, ": no value ", out[i]);
  in.resize(info.n_in, -1);
  out.resize(info.n_out, -1);
  nodes.push_back(Node{op, std::move(in), std::move(out), attrs, scope_});
}

std::string describe_slot(const Graph& g, size_t node, bool input, int slot) {
  const Node& n = g.nodes.at(node);
  const OpInfo& info = op_info(n.op);
  const int v = (input ? n.in : n.out).at(slot);
  std::string r = std::string(input ? "input " : "output ") + std::string((input ? info.in : info.out).name[slot]) +
                  " of " + info.name + " (node " + std::to_string(node);
  if (!n.scope.empty()) r += ", scope " + n.scope;
  if (v >= 0) r += ", value " + g.values[v].name;
  return r + ")";
}

namespace {
std::string vname(const Graph& g, const char* what) { return g.scope().empty() ? what : g.scope() + "." + what; }
}  // namespace

int Graph::embedding(int tokens, int wte, int wpe, int pos) {
  const Shape& ts = values[tokens].shape;
  LOOM_CHECK(ts.size() == 2 && values[tokens].dtype == DType::I32);
  LOOM_CHECK(values[wte].shape.size() == 2 && values[wpe].shape.size() == 2 &&
             values[wte].shape[1] == values[wpe].shape[1]);
  LOOM_CHECK(pos >= 0 || ts[1] <= values[wpe].shape[0], "sequence longer than the position table");
  const int out = new_value(vname(*this, "emb"), {ts[0], ts[1], values[wte].shape[1]}, fdt_);
  add_node(OpId::embedding, {tokens, wte, wpe, pos}, {out});
  return out;
}

int Graph::layernorm(int x, int g, int b, float eps) {
  const Shape& xs = values[x].shape;
  const int64_t C = xs.back(), N = numel(xs) / C;
  LOOM_CHECK(values[g].shape == Shape{C} && values[b].shape == Shape{C});
  const int y = new_value(vname(*this, "ln"), xs, fdt_);
  const int mean = new_value(vname(*this, "ln.mean"), {N}, stat_dtype());
  const int rstd = new_value(vname(*this, "ln.rstd"), {N}, stat_dtype());
  Attrs a;
  a.f[0] = eps;
  add_node(OpId::layernorm, {x, g, b}, {y, mean, rstd}, a);
  return y;
}

std::pair<int, int> Graph::residual_layernorm(int a, int b, int g, int beta, float eps) {
  const Shape xs = values[a].shape;  // a copy: new_value below may move `values`
  LOOM_CHECK(values[b].shape == xs, "residual_layernorm: ", shape_str(xs), " vs ", shape_str(values[b].shape));
  const int64_t C = xs.back(), N = numel(xs) / C;
  LOOM_CHECK(values[g].shape == Shape{C} && values[beta].shape == Shape{C});
  const int sum = new_value(vname(*this, "resid"), xs, fdt_);
  const int y = new_value(vname(*this, "ln"), xs, fdt_);
  const int mean = new_value(vname(*this, "ln.mean"), {N}, stat_dtype());
  const int rstd = new_value(vname(*this, "ln.rstd"), {N}, stat_dtype());
  Attrs at;
  at.f[0] = eps;
  add_node(OpId::residual_layernorm, {a, b, g, beta}, {sum, y, mean, rstd}, at);
  return {sum, y};
}

int Graph::linear(int x, int w, int b) {
  Shape ys = values[x].shape;
  const Shape& ws = values[w].shape;
  LOOM_CHECK(ws.size() == 2 && ws[1] == ys.back(), "linear: x ", shape_str(ys), " w ", shape_str(ws));
  LOOM_CHECK(b < 0 || values[b].shape == Shape{ws[0]});
  ys.back() = ws[0];
  const int y = new_value(vname(*this, "linear"), ys, fdt_);
  add_node(OpId::linear, {x, w, b}, {y});
  return y;
}

int Graph::gelu(int x) {
  const int y = new_value(vname(*this, "gelu"), values[x].shape, fdt_);
  add_node(OpId::gelu, {x}, {y});
  return y;
}

int Graph::add(int a, int b) {
  LOOM_CHECK(values[a].shape == values[b].shape, "add: ", shape_str(values[a].shape), " vs ",
             shape_str(values[b].shape));
  const int y = new_value(vname(*this, "add"), values[a].shape, fdt_);
  add_node(OpId::add, {a, b}, {y});
  return y;
}

int Graph::attention(int qkv, int n_head, int doc_start) { return attention(qkv, n_head, {.doc_start = doc_start}); }

int Graph::attention(int qkv, int n_head, const AttentionMask& mask) {
  const Shape s = values[qkv].shape;  // a copy: new_value below may move `values`
  LOOM_CHECK(s.size() == 3 && s[2] % 3 == 0 && (s[2] / 3) % n_head == 0);
  LOOM_CHECK(mask.doc_start < 0 ||
                 (values[mask.doc_start].shape == Shape{s[0], s[1]} && values[mask.doc_start].dtype == DType::I32),
             "attention: doc_start must be i32 [B, T]");
  LOOM_CHECK(mask.doc_start < 0 || (mask.causal && mask.key_len < 0),
             "attention: the document mask is for causal attention without key padding");
  LOOM_CHECK(mask.key_len < 0 ||
                 (values[mask.key_len].shape == Shape{s[0]} && values[mask.key_len].dtype == DType::I32),
             "attention: key_len must be i32 [B]");
  const int64_t C = s[2] / 3;
  const int out = new_value(vname(*this, "attn"), {s[0], s[1], C}, fdt_);
  const int lse = new_value(vname(*this, "attn.lse"), {s[0], n_head, s[1]}, stat_dtype());
  Attrs a;
  a.i[0] = n_head;
  a.i[1] = mask.causal ? 0 : 1;
  add_node(OpId::attention, {qkv, mask.doc_start, mask.key_len}, {out, lse}, a);
  return out;
}

namespace {
// q [Bq, Tq, C] and kv [Bk, Tk, 2C] with key_len [Bk]; returns C.
int64_t check_cross(const Graph& g, int q, int kv, int n_head, int key_len, const char* op) {
  const Shape& qs = g.values[q].shape;
  const Shape& ks = g.values[kv].shape;
  LOOM_CHECK(qs.size() == 3 && ks.size() == 3 && n_head > 0 && qs[2] % n_head == 0 && ks[2] == 2 * qs[2], op,
             ": q ", shape_str(qs), " and kv ", shape_str(ks), " are not [B, Tq, C] and [B, Tk, 2C]");
  LOOM_CHECK(key_len < 0 || (g.values[key_len].shape == Shape{ks[0]} && g.values[key_len].dtype == DType::I32), op,
             ": key_len must be i32 [B]");
  return qs[2];
}
}  // namespace

int Graph::cross_attention(int q, int kv, int n_head, int key_len) {
  const Shape s = values[q].shape;
  check_cross(*this, q, kv, n_head, key_len, "cross_attention");
  LOOM_CHECK(values[kv].shape[0] == s[0], "cross_attention: q and kv differ in batch");
  const int out = new_value(vname(*this, "xattn"), s, fdt_);
  const int lse = new_value(vname(*this, "xattn.lse"), {s[0], n_head, s[1]}, stat_dtype());
  Attrs a;
  a.i[0] = n_head;
  add_node(OpId::cross_attention, {q, kv, key_len}, {out, lse}, a);
  return out;
}

int Graph::cross_attention_decode(int q, int kv, int n_head, int key_len) {
  const Shape s = values[q].shape;
  check_cross(*this, q, kv, n_head, key_len, "cross_attention_decode");
  LOOM_CHECK(s[0] % values[kv].shape[0] == 0, "cross_attention_decode: ", s[0], " query rows for ",
             values[kv].shape[0], " key rows");
  const int out = new_value(vname(*this, "xattn"), s, fdt_);
  Attrs a;
  a.i[0] = n_head;
  add_node(OpId::cross_attention_decode, {q, kv, key_len}, {out}, a);
  return out;
}

int Graph::document_starts(int tokens, int eot) {
  const Shape s = values[tokens].shape;
  LOOM_CHECK(s.size() == 2 && values[tokens].dtype == DType::I32, "document_starts: tokens must be i32 [B, T]");
  const int starts = new_value(vname(*this, "doc_start"), s, DType::I32);
  Attrs a;
  a.i[0] = eot;
  add_node(OpId::document_starts, {tokens}, {starts}, a);
  return starts;
}

int Graph::attention_decode(int qkv, int kcache, int vcache, int pos, int n_head) {
  const Shape& s = values[qkv].shape;
  LOOM_CHECK(s.size() == 3 && values[kcache].shape.size() == 4 && values[kcache].shape == values[vcache].shape);
  const int out = new_value(vname(*this, "attn"), {s[0], s[1], s[2] / 3}, fdt_);
  Attrs a;
  a.i[0] = n_head;
  add_node(OpId::attention_decode, {qkv, kcache, vcache, pos}, {out}, a);
  return out;
}

int Graph::softmax_xent(int logits, int targets) {
  const Shape& s = values[logits].shape;
  const int64_t V = s.back(), N = numel(s) / V;
  LOOM_CHECK(numel(values[targets].shape) == N && values[targets].dtype == DType::I32);
  const int loss = new_value(vname(*this, "loss"), {1}, stat_dtype());
  const int lse = new_value(vname(*this, "xent.lse"), {N}, stat_dtype());
  add_node(OpId::softmax_xent, {logits, targets}, {loss, lse});
  return loss;
}

int Graph::linear_gelu(int x, int w, int b) {
  Shape ys = values[x].shape;
  const Shape& ws = values[w].shape;
  LOOM_CHECK(ws.size() == 2 && ws[1] == ys.back(), "linear_gelu: x ", shape_str(ys), " w ", shape_str(ws));
  LOOM_CHECK(b < 0 || values[b].shape == Shape{ws[0]});
  ys.back() = ws[0];
  const int y = new_value(vname(*this, "gelu"), ys, fdt_);
  const int pre = new_value(vname(*this, "linear"), ys, fdt_);
  add_node(OpId::linear_gelu, {x, w, b}, {y, pre});
  return y;
}

int Graph::scale(int x, float s) {
  const int y = new_value(vname(*this, "scale"), values[x].shape, fdt_);
  Attrs a;
  a.f[0] = s;
  add_node(OpId::scale, {x}, {y}, a);
  return y;
}

int Graph::tanh(int x) {
  const int y = new_value(vname(*this, "tanh"), values[x].shape, fdt_);
  add_node(OpId::tanh, {x}, {y});
  return y;
}

int Graph::rnn_attention(int q, int keys, int values_in, int v, int key_len) {
  const Shape qs = values[q].shape, ks = values[keys].shape, vs = values[values_in].shape;
  LOOM_CHECK(qs.size() == 3 && ks.size() == 3 && vs.size() == 3 && ks[0] == qs[0] && ks[2] == qs[2] &&
                 vs[0] == qs[0] && vs[1] == ks[1],
             "rnn_attention: q ", shape_str(qs), ", keys ", shape_str(ks), " and values ", shape_str(vs),
             " are not [B, Tq, A], [B, Tk, A] and [B, Tk, C]");
  LOOM_CHECK(v < 0 || values[v].shape == Shape{qs[2]}, "rnn_attention: v must be [A]");
  LOOM_CHECK(key_len < 0 || (values[key_len].shape == Shape{qs[0]} && values[key_len].dtype == DType::I32),
             "rnn_attention: key_len must be i32 [B]");
  const int ctx = new_value(vname(*this, "rnn_attn"), {qs[0], qs[1], vs[2]}, fdt_);
  const int probs = new_value(vname(*this, "rnn_attn.probs"), {qs[0], qs[1], ks[1]}, stat_dtype());
  Attrs a;
  a.i[0] = v < 0 ? 0 : 1;  // AttnScore: dot without a scoring vector, additive with one
  add_node(OpId::rnn_attention, {q, keys, values_in, v, key_len}, {ctx, probs}, a);
  return ctx;
}

int Graph::context_embedding(int tokens, int wte, int n, int pad) {
  const Shape& ts = values[tokens].shape;
  const Shape& ws = values[wte].shape;
  LOOM_CHECK(ts.size() == 2 && values[tokens].dtype == DType::I32 && ws.size() == 2 && n >= 1);
  LOOM_CHECK(pad >= 0 && pad < ws[0], "context_embedding: padding row ", pad, " outside wte ", shape_str(ws));
  const int out = new_value(vname(*this, "emb"), {ts[0], ts[1], n * ws[1]}, fdt_);
  Attrs a;
  a.i[0] = n;
  a.i[1] = pad;
  add_node(OpId::context_embedding, {tokens, wte}, {out}, a);
  return out;
}

std::pair<int, int> Graph::recurrent(int cell, int x, int w_ih, int w_hh, int b_ih, int b_hh, int state0, int len) {
  const Cell c = static_cast<Cell>(cell);
  const Shape& xs = values[x].shape;
  LOOM_CHECK(xs.size() == 3, "recurrent: x ", shape_str(xs));
  const int64_t B = xs[0], S = xs[1], I = xs[2], G = cell_gates(c);
  const int64_t H = values[w_hh].shape.at(1);
  LOOM_CHECK(values[w_ih].shape == (Shape{G * H, I}) && values[w_hh].shape == (Shape{G * H, H}) &&
                 values[b_ih].shape == Shape{G * H} && values[b_hh].shape == Shape{G * H},
             "recurrent: weight shapes");
  LOOM_CHECK(values[state0].shape == (Shape{cell_states(c), B, H}) && values[state0].dtype == stat_dtype(),
             "recurrent: state0 ", shape_str(values[state0].shape));
  LOOM_CHECK(len < 0 || (values[len].shape == Shape{B} && values[len].dtype == DType::I32),
             "recurrent: len must be i32 [B]");
  const int y = new_value(vname(*this, "rnn"), {B, S, H}, fdt_);
  const int stateT = new_value(vname(*this, "rnn.state"), {cell_states(c), B, H}, stat_dtype());
  const int saved = new_value(vname(*this, "rnn.saved"), {B, S, rnn_saved_width(c, H)}, stat_dtype());
  Attrs a;
  a.i[0] = cell;
  add_node(OpId::recurrent, {x, w_ih, w_hh, b_ih, b_hh, state0, len}, {y, stateT, saved}, a);
  return {y, stateT};
}

int Graph::cast(int x, DType dtype) {
  const int y = new_value(vname(*this, "cast"), values[x].shape, dtype);
  add_node(OpId::cast, {x}, {y});
  return y;
}

int Graph::seq_reverse(int x, int len) {
  const Shape& xs = values[x].shape;
  LOOM_CHECK(xs.size() == 3 && values[len].shape == Shape{xs[0]} && values[len].dtype == DType::I32,
             "seq_reverse: x ", shape_str(xs), " with len ", shape_str(values[len].shape));
  const int y = new_value(vname(*this, "rev"), xs, values[x].dtype);
  add_node(OpId::seq_reverse, {x, len}, {y});
  return y;
}

}  // namespace loom
