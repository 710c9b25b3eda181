// autodiff.cpp: reverse-mode autodiff as one table of backward rules, one per op.
//
// Walks the forward nodes backwards. A value's gradient is the sum of its contributions;
// contributions are collected and summed with `add` nodes only when the gradient is first
// read, so a value used once (most of them) costs nothing extra and `add`'s backward just
// forwards the incoming gradient to both inputs. Parameter gradients are not contributions:
// backward ops accumulate (+=) straight into the flat gradient buffer, which is how tied
// weights (GPT's wte) and gradient accumulation add up.
#include <functional>

#include "engine/graph/graph.h"

namespace loom {

namespace {

class Autodiff {
 public:
  Autodiff(Graph& g) : g_(g), needs_(g.values.size(), 0), contrib_(g.values.size()) {}

  Graph& g() { return g_; }
  bool needs(int v) const { return v >= 0 && v < static_cast<int>(needs_.size()) && needs_[v]; }

  void mark_needs(const std::vector<int>& wrt) {
    for (const auto& p : g_.params)
      if (p.trainable) needs_[p.value] = 1;
    for (int v : wrt) needs_[v] = 1;
    for (size_t n = 0; n < g_.forward_end; ++n) {
      const Node& node = g_.nodes[n];
      bool any = false;
      for (int v : node.in) any |= needs(v);
      if (!any) continue;
      const int nd = op_info(node.op).n_diff_out;
      for (int i = 0; i < nd; ++i) grow(node.out[i]), needs_[node.out[i]] = 1;
    }
  }

  void contribute(int v, int grad) {
    grow(v);
    contrib_[v].push_back(grad);
  }

  // The gradient of v (summing contributions on first read), or -1 if nothing flows into it.
  int grad(int v) {
    if (v < 0) return -1;
    grow(v);
    auto& c = contrib_[v];
    if (c.empty()) return -1;
    while (c.size() > 1) {
      const int sum = fresh(v, "sum");
      g_.add_node(OpId::add, {c[0], c[1]}, {sum});
      c.erase(c.begin(), c.begin() + 2);
      c.insert(c.begin(), sum);
    }
    return c[0];
  }

  // An output slot that a backward op WRITES: a fresh gradient value for an activation.
  int written(int v) {
    if (!needs(v)) return -1;
    LOOM_CHECK(g_.values[v].kind != ValueKind::Param, "op writes (not accumulates) the gradient of parameter ",
               g_.values[v].name);
    const int d = fresh(v, "grad");
    contribute(v, d);
    return d;
  }

  // An output slot that a backward op ACCUMULATES into: the parameter's flat-buffer gradient.
  int accumulated(int v) {
    if (!needs(v)) return -1;
    const Value& val = g_.values[v];
    LOOM_CHECK(val.kind == ValueKind::Param, "op accumulates into the gradient of non-parameter ", val.name);
    ParamInfo& p = g_.params[val.param];
    if (p.grad_value < 0) {
      p.grad_value = g_.new_value("grad." + p.name, p.shape, g_.grad_dtype(), ValueKind::ParamGrad);
      g_.values[p.grad_value].param = val.param;
    }
    return p.grad_value;
  }

  // A new gradient value shaped like v (not yet a contribution to anything).
  int fresh(int v, const char* what) {
    const Value& val = g_.values[v];
    const int d = g_.new_value(std::string(what) + "." + val.name, val.shape, val.dtype);
    grow(d);
    return d;
  }

 private:
  void grow(int v) {
    if (v >= static_cast<int>(needs_.size())) {
      needs_.resize(v + 1, 0);
      contrib_.resize(v + 1);
    }
  }

  Graph& g_;
  std::vector<char> needs_;
  std::vector<std::vector<int>> contrib_;
};

using BackwardRule = void (*)(Autodiff&, const Node&);

void backward_embedding(Autodiff& ad, const Node& n) {
  const int dout = ad.grad(n.out[0]);
  int dwte = ad.accumulated(n.in[1]), dwpe = ad.accumulated(n.in[2]);
  if (dout < 0 || (dwte < 0 && dwpe < 0)) return;
  // One frozen table (a fixed sinusoidal position table): the op still writes both, so the
  // frozen one's gradient goes to a scratch value nobody reads.
  Graph& g = ad.g();
  for (int* d : {&dwte, &dwpe})
    if (*d < 0) {
      const Value& table = g.values[n.in[d == &dwte ? 1 : 2]];
      *d = g.new_value("grad.unused." + table.name, table.shape, g.grad_dtype());
    }
  g.add_node(OpId::embedding_bwd, {dout, n.in[0], n.in[3]}, {dwte, dwpe});
}

void backward_layernorm(Autodiff& ad, const Node& n) {
  const int dy = ad.grad(n.out[0]);
  if (dy < 0) return;
  const int dx = ad.written(n.in[0]), dg = ad.accumulated(n.in[1]), db = ad.accumulated(n.in[2]);
  LOOM_CHECK((dg >= 0) == (db >= 0), "layer norm gain and bias must be trainable together");
  if (dx < 0 && dg < 0) return;
  ad.g().add_node(OpId::layernorm_bwd, {dy, n.in[0], n.in[1], n.out[1], n.out[2]}, {dx, dg, db}, n.attrs);
}

void backward_residual_layernorm(Autodiff& ad, const Node& n) {
  // sum = a + b feeds the layer norm and the rest of the residual stream: d(sum) is the
  // layer norm's dx plus the stream's own gradient, added inside layernorm_bwd (dresid).
  const int dy = ad.grad(n.out[1]), dsum = ad.grad(n.out[0]);
  const bool need_a = ad.needs(n.in[0]), need_b = ad.needs(n.in[1]);
  int dx = dsum;
  if (dy >= 0) {
    const int dg = ad.accumulated(n.in[2]), db = ad.accumulated(n.in[3]);
    LOOM_CHECK((dg >= 0) == (db >= 0), "layer norm gain and bias must be trainable together");
    dx = (need_a || need_b) ? ad.fresh(n.out[0], "grad") : -1;
    if (dx >= 0 || dg >= 0)
      ad.g().add_node(OpId::layernorm_bwd, {dy, n.out[0], n.in[2], n.out[2], n.out[3], dsum}, {dx, dg, db}, n.attrs);
  }
  if (dx < 0) return;
  if (need_a) ad.contribute(n.in[0], dx);
  if (need_b) ad.contribute(n.in[1], dx);
}

void backward_linear(Autodiff& ad, const Node& n) {
  const int dy = ad.grad(n.out[0]);
  if (dy < 0) return;
  const int dx = ad.written(n.in[0]), dw = ad.accumulated(n.in[1]), db = ad.accumulated(n.in[2]);
  if (dx < 0 && dw < 0 && db < 0) return;
  ad.g().add_node(OpId::linear_bwd, {dy, n.in[0], n.in[1]}, {dx, dw, db});
}

void backward_gelu(Autodiff& ad, const Node& n) {
  const int dy = ad.grad(n.out[0]);
  const int dx = dy < 0 ? -1 : ad.written(n.in[0]);
  if (dx >= 0) ad.g().add_node(OpId::gelu_bwd, {dy, n.in[0]}, {dx});
}

void backward_add(Autodiff& ad, const Node& n) {
  // d(a + b) = dy for both: forward the same (read-only) gradient value.
  const int dy = ad.grad(n.out[0]);
  if (dy < 0) return;
  for (int i = 0; i < 2; ++i)
    if (ad.needs(n.in[i])) {
      LOOM_CHECK(ad.g().values[n.in[i]].kind != ValueKind::Param, "add of a parameter");
      ad.contribute(n.in[i], dy);
    }
}

void backward_attention(Autodiff& ad, const Node& n) {
  const int dout = ad.grad(n.out[0]);
  const int dqkv = dout < 0 ? -1 : ad.written(n.in[0]);
  if (dqkv >= 0)
    ad.g().add_node(OpId::attention_bwd, {dout, n.in[0], n.out[0], n.out[1], n.in[1], n.in[2]}, {dqkv}, n.attrs);
}

void backward_cross_attention(Autodiff& ad, const Node& n) {
  const int dout = ad.grad(n.out[0]);
  if (dout < 0) return;
  const int dq = ad.written(n.in[0]), dkv = ad.written(n.in[1]);
  if (dq >= 0 || dkv >= 0)
    ad.g().add_node(OpId::cross_attention_bwd, {dout, n.in[0], n.in[1], n.out[0], n.out[1], n.in[2]}, {dq, dkv},
                    n.attrs);
}

// Integer positions from integer tokens: nothing to differentiate.
void backward_document_starts(Autodiff&, const Node&) {}

void backward_softmax_xent(Autodiff& ad, const Node& n) {
  const int dloss = ad.grad(n.out[0]);
  const int dlogits = dloss < 0 ? -1 : ad.written(n.in[0]);
  if (dlogits >= 0) ad.g().add_node(OpId::softmax_xent_bwd, {dloss, n.in[0], n.in[1], n.out[1]}, {dlogits});
}

void backward_linear_gelu(Autodiff& ad, const Node& n) {
  // y = gelu(pre), pre = x w^T + b: GELU's backward into a fresh d(pre), then linear's.
  const int dy = ad.grad(n.out[0]);
  if (dy < 0) return;
  const int dx = ad.written(n.in[0]), dw = ad.accumulated(n.in[1]), db = ad.accumulated(n.in[2]);
  if (dx < 0 && dw < 0 && db < 0) return;
  const int dpre = ad.fresh(n.out[1], "grad");
  ad.g().add_node(OpId::gelu_bwd, {dy, n.out[1]}, {dpre});
  ad.g().add_node(OpId::linear_bwd, {dpre, n.in[0], n.in[1]}, {dx, dw, db});
}

void backward_tanh(Autodiff& ad, const Node& n) {
  const int dy = ad.grad(n.out[0]);
  const int dx = dy < 0 ? -1 : ad.written(n.in[0]);
  if (dx >= 0) ad.g().add_node(OpId::tanh_bwd, {dy, n.out[0]}, {dx});
}

void backward_scale(Autodiff& ad, const Node& n) {
  const int dy = ad.grad(n.out[0]);
  const int dx = dy < 0 ? -1 : ad.written(n.in[0]);
  if (dx >= 0) ad.g().add_node(OpId::scale, {dy}, {dx}, n.attrs);
}

void backward_context_embedding(Autodiff& ad, const Node& n) {
  const int dout = ad.grad(n.out[0]);
  const int dwte = dout < 0 ? -1 : ad.accumulated(n.in[1]);
  if (dwte >= 0) ad.g().add_node(OpId::context_embedding_bwd, {dout, n.in[0]}, {dwte}, n.attrs);
}

void backward_recurrent(Autodiff& ad, const Node& n) {
  // The language models' state0 is an Input and their stateT a carried output (truncated
  // BPTT): neither has a gradient there. A sequence-to-sequence model's are computed values.
  const int dy = ad.grad(n.out[0]), dstateT = ad.grad(n.out[1]);
  if (dy < 0 && dstateT < 0) return;
  const int dx = ad.written(n.in[0]), dwi = ad.accumulated(n.in[1]), dwh = ad.accumulated(n.in[2]),
            dbi = ad.accumulated(n.in[3]), dbh = ad.accumulated(n.in[4]), ds0 = ad.written(n.in[5]);
  LOOM_CHECK((dwi >= 0) == (dwh >= 0) && (dwi >= 0) == (dbi >= 0) && (dbi >= 0) == (dbh >= 0),
             "a recurrent layer's weights must be trainable together");
  if (dx < 0 && dwi < 0 && ds0 < 0) return;
  ad.g().add_node(OpId::recurrent_bwd,
                  {dy, n.in[0], n.in[1], n.in[2], n.in[5], n.out[0], n.out[2], dstateT, n.in[6]},
                  {dx, dwi, dwh, dbi, dbh, ds0}, n.attrs);
}

void backward_cast(Autodiff& ad, const Node& n) {
  const int dy = ad.grad(n.out[0]);
  const int dx = dy < 0 ? -1 : ad.written(n.in[0]);
  if (dx >= 0) ad.g().add_node(OpId::cast, {dy}, {dx});
}

void backward_seq_reverse(Autodiff& ad, const Node& n) {
  const int dy = ad.grad(n.out[0]);
  const int dx = dy < 0 ? -1 : ad.written(n.in[0]);
  if (dx >= 0) ad.g().add_node(OpId::seq_reverse, {dy, n.in[1]}, {dx});
}

void backward_rnn_attention(Autodiff& ad, const Node& n) {
  const int dctx = ad.grad(n.out[0]);
  if (dctx < 0) return;
  const int dq = ad.written(n.in[0]), dk = ad.written(n.in[1]), dval = ad.written(n.in[2]),
            dv = n.in[3] < 0 ? -1 : ad.accumulated(n.in[3]);
  if (dq >= 0 || dk >= 0 || dval >= 0 || dv >= 0)
    ad.g().add_node(OpId::rnn_attention_bwd, {dctx, n.in[0], n.in[1], n.in[2], n.in[3], n.in[4], n.out[1]},
                    {dq, dk, dval, dv}, n.attrs);
}

// Ops that never appear in a forward graph that is differentiated.
#define LOOM_NO_BACKWARD(name) \
  void backward_##name(Autodiff&, const Node&) { LOOM_CHECK(false, "op " #name " has no backward rule"); }
LOOM_NO_BACKWARD(attention_decode)
LOOM_NO_BACKWARD(cross_attention_decode)
LOOM_NO_BACKWARD(embedding_bwd)
LOOM_NO_BACKWARD(layernorm_bwd)
LOOM_NO_BACKWARD(linear_bwd)
LOOM_NO_BACKWARD(gelu_bwd)
LOOM_NO_BACKWARD(attention_bwd)
LOOM_NO_BACKWARD(cross_attention_bwd)
LOOM_NO_BACKWARD(softmax_xent_bwd)
LOOM_NO_BACKWARD(tanh_bwd)
LOOM_NO_BACKWARD(context_embedding_bwd)
LOOM_NO_BACKWARD(recurrent_bwd)
LOOM_NO_BACKWARD(rnn_attention_bwd)
#undef LOOM_NO_BACKWARD

// The table: one rule per op, in ops.def order. A missing backward_<op> fails to compile.
constexpr BackwardRule kBackwardRules[] = {
#define LOOM_OP(name, in, out, n_diff) &backward_##name,
#include "engine/ops/ops.def"
#undef LOOM_OP
};
static_assert(sizeof(kBackwardRules) / sizeof(kBackwardRules[0]) == kNumOps, "one backward rule per op");

}  // namespace

std::map<int, int> build_backward(Graph& g, const std::vector<std::pair<int, int>>& seeds, const std::vector<int>& wrt) {
  g.forward_end = g.nodes.size();
  Autodiff ad(g);
  ad.mark_needs(wrt);
  for (auto [value, seed] : seeds) ad.contribute(value, seed);
  for (size_t n = g.forward_end; n-- > 0;) {
    const Node node = g.nodes[n];  // copy: add_node may reallocate the node list
    const std::string saved_scope = g.scope();
    g.set_scope(node.scope);
    kBackwardRules[static_cast<int>(node.op)](ad, node);
    g.set_scope(saved_scope);
  }
  std::map<int, int> result;
  for (int v : wrt) {
    const int d = ad.grad(v);
    if (d >= 0) {
      g.values[d].keep = true;
      result[v] = d;
    }
  }
  return result;
}

}  // namespace loom
