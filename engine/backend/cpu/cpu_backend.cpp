// cpu_backend.cpp: the CPU backend. Each op unpacks its views into the argument struct of
// the kernel family's CPU reference (kernels/<family>/<family>_ref.cpp) and calls it. The
// same class runs in double for finite-difference gradient checks.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "engine/backend/backend.h"
#include "kernels/attention/attention.h"
#include "kernels/elementwise/elementwise.h"
#include "kernels/embedding/embedding.h"
#include "kernels/gelu/gelu.h"
#include "kernels/layernorm/layernorm.h"
#include "kernels/matmul/matmul.h"
#include "kernels/rnn/rnn.h"
#include "kernels/rnn_attention/rnn_attention.h"
#include "kernels/softmax_xent/softmax_xent.h"

namespace loom {

namespace {

// An optional int32 input (a mask's positions or lengths): nullptr when absent.
const int32_t* ints(const TensorView& v) { return v ? v.as<int32_t>() : nullptr; }

template <typename T>
class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  DType float_dtype() const override { return std::is_same_v<T, double> ? DType::F64 : DType::F32; }

  void* alloc(size_t bytes) override {
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    LOOM_USER_CHECK(p, "host memory: cannot allocate ", bytes / 1048576.0, " MiB; lower train.batch_size, "
                    "model.seq_len or the model size");
    return p;
  }
  void release(void* p) override { std::free(p); }
  void to_device(void* dst, const void* host, size_t bytes) override { std::memcpy(dst, host, bytes); }
  void to_host(void* host, const void* src, size_t bytes) override { std::memcpy(host, src, bytes); }
  void zero(void* p, size_t bytes) override {
    // The gradient buffer is zeroed every step: one core's stores do not fill the memory bus.
    constexpr size_t kPiece = size_t{1} << 18;
    if (bytes < 4 * kPiece) {
      std::memset(p, 0, bytes);
      return;
    }
    const int64_t pieces = static_cast<int64_t>((bytes + kPiece - 1) / kPiece);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < pieces; ++i) {
      const size_t off = static_cast<size_t>(i) * kPiece;
      std::memset(static_cast<char*>(p) + off, 0, std::min(kPiece, bytes - off));
    }
  }
  void copy(void* dst, const void* src, size_t bytes) override { std::memmove(dst, src, bytes); }

  void adamw(const ref::AdamWArgs& a, void* working, uint64_t) override {
    LOOM_CHECK(!working, "the cpu backend trains in f32: no working copy");
    ref::adamw_step(a);
  }
  double norm(const float* g, int64_t n) override { return ref::grad_norm(g, n); }

  // Every kernel argument is designated (.x = ...): C++20 rejects fields out of declaration
  // order, so a view cannot slide into its neighbour's field unnoticed.
  void op_embedding(const OpCall& c) override {
    const TensorView &tok = c.in[0], &wte = c.in[1], &wpe = c.in[2];
    ref::embedding_fwd<T>({.tokens = tok.as<int32_t>(), .wte = wte.as<T>(), .wpe = wpe.as<T>(), .out = c.out[0].as<T>(),
                           .B = tok.dim(0), .seq = tok.dim(1), .C = wte.dim(1), .V = wte.dim(0), .maxT = wpe.dim(0),
                           .pos0 = c.in[3] ? c.in[3].as<int32_t>()[0] : 0});
  }
  void op_embedding_bwd(const OpCall& c) override {
    const TensorView &d = c.in[0], &tok = c.in[1], &dwte = c.out[0], &dwpe = c.out[1];
    ref::embedding_bwd<T>({.dout = d.as<T>(), .tokens = tok.as<int32_t>(), .dwte = dwte.as<T>(), .dwpe = dwpe.as<T>(),
                           .B = tok.dim(0), .seq = tok.dim(1), .C = dwte.dim(1), .V = dwte.dim(0), .maxT = dwpe.dim(0),
                           .pos0 = c.in[2] ? c.in[2].as<int32_t>()[0] : 0});
  }
  void op_layernorm(const OpCall& c) override {
    const TensorView& x = c.in[0];
    ref::layernorm_fwd<T>({.x = x.as<T>(), .g = c.in[1].as<T>(), .b = c.in[2].as<T>(), .y = c.out[0].as<T>(),
                           .mean = c.out[1].as<T>(), .rstd = c.out[2].as<T>(), .N = x.rows(), .C = x.dim(-1),
                           .eps = c.attrs.f[0]});
  }
  void op_residual_layernorm(const OpCall& c) override {
    const TensorView& x = c.in[0];
    ref::layernorm_fwd<T>({.x = x.as<T>(), .g = c.in[2].as<T>(), .b = c.in[3].as<T>(), .y = c.out[1].as<T>(),
                           .mean = c.out[2].as<T>(), .rstd = c.out[3].as<T>(), .N = x.rows(), .C = x.dim(-1),
                           .eps = c.attrs.f[0], .residual = c.in[1].as<T>(), .sum = c.out[0].as<T>()});
  }
  void op_layernorm_bwd(const OpCall& c) override {
    const TensorView& x = c.in[1];
    ref::layernorm_bwd<T>({.dy = c.in[0].as<T>(), .x = x.as<T>(), .g = c.in[2].as<T>(), .mean = c.in[3].as<T>(),
                           .rstd = c.in[4].as<T>(), .dx = c.out[0].as<T>(), .dg = c.out[1].as<T>(), .db = c.out[2].as<T>(),
                           .N = x.rows(), .C = x.dim(-1), .dresid = c.in[5].as<T>()});
  }
  void op_linear(const OpCall& c) override {
    const TensorView &x = c.in[0], &w = c.in[1];
    ref::linear_fwd<T>({.x = x.as<T>(), .w = w.as<T>(), .b = c.in[2].as<T>(), .y = c.out[0].as<T>(), .N = x.rows(),
                        .K = x.dim(-1), .M = w.dim(0)});
  }
  void op_linear_bwd(const OpCall& c) override {
    const TensorView &x = c.in[1], &w = c.in[2];
    ref::linear_bwd<T>({.dy = c.in[0].as<T>(), .x = x.as<T>(), .w = w.as<T>(), .dx = c.out[0].as<T>(),
                        .dw = c.out[1].as<T>(), .db = c.out[2].as<T>(), .N = x.rows(), .K = x.dim(-1), .M = w.dim(0)});
  }
  void op_gelu(const OpCall& c) override {
    ref::gelu_fwd<T>({.x = c.in[0].as<T>(), .y = c.out[0].as<T>(), .n = c.in[0].numel()});
  }
  void op_gelu_bwd(const OpCall& c) override {
    ref::gelu_bwd<T>({.dy = c.in[0].as<T>(), .x = c.in[1].as<T>(), .dx = c.out[0].as<T>(), .n = c.in[0].numel()});
  }
  void op_add(const OpCall& c) override {
    ref::add<T>(c.in[0].as<T>(), c.in[1].as<T>(), c.out[0].as<T>(), c.out[0].numel());
  }
  void op_attention(const OpCall& c) override {
    const TensorView& qkv = c.in[0];
    ref::attention_fwd<T>({.qkv = qkv.as<T>(), .out = c.out[0].as<T>(), .lse = c.out[1].as<T>(), .B = qkv.dim(0),
                           .seq = qkv.dim(1), .C = qkv.dim(2) / 3, .H = c.attrs.i[0],
                           .doc_start = ints(c.in[1]), .key_len = ints(c.in[2]), .causal = c.attrs.i[1] == 0});
  }
  void op_cross_attention(const OpCall& c) override {
    const TensorView &q = c.in[0], &kv = c.in[1];
    ref::cross_attention_fwd<T>({.q = q.as<T>(), .kv = kv.as<T>(), .out = c.out[0].as<T>(), .lse = c.out[1].as<T>(),
                                 .B = q.dim(0), .Tq = q.dim(1), .Tk = kv.dim(1), .C = q.dim(2), .H = c.attrs.i[0],
                                 .key_len = ints(c.in[2])});
  }
  void op_cross_attention_bwd(const OpCall& c) override {
    const TensorView &q = c.in[1], &kv = c.in[2];
    // An input without a gradient still takes its rows of the product: scratch.
    std::vector<T> dq_tmp(c.out[0] ? 0 : q.numel()), dkv_tmp(c.out[1] ? 0 : kv.numel());
    ref::cross_attention_bwd<T>({.dout = c.in[0].as<T>(), .q = q.as<T>(), .kv = kv.as<T>(), .out = c.in[3].as<T>(),
                                 .lse = c.in[4].as<T>(), .dq = c.out[0] ? c.out[0].as<T>() : dq_tmp.data(),
                                 .dkv = c.out[1] ? c.out[1].as<T>() : dkv_tmp.data(), .B = q.dim(0), .Tq = q.dim(1),
                                 .Tk = kv.dim(1), .C = q.dim(2), .H = c.attrs.i[0], .key_len = ints(c.in[5])});
  }
  void op_cross_attention_decode(const OpCall& c) override {
    const TensorView &q = c.in[0], &kv = c.in[1];
    ref::cross_attention_decode<T>({.q = q.as<T>(), .kv = kv.as<T>(), .out = c.out[0].as<T>(), .Bq = q.dim(0),
                                    .Tn = q.dim(1), .Bk = kv.dim(0), .Tk = kv.dim(1), .C = q.dim(2), .H = c.attrs.i[0],
                                    .key_len = ints(c.in[2])});
  }
  void op_rnn_attention(const OpCall& c) override {
    const TensorView &q = c.in[0], &k = c.in[1], &val = c.in[2];
    ref::rnn_attention_fwd<T>({.score = static_cast<AttnScore>(c.attrs.i[0]), .q = q.as<T>(), .keys = k.as<T>(),
                               .values = val.as<T>(), .v = c.in[3] ? c.in[3].as<T>() : nullptr,
                               .key_len = ints(c.in[4]), .ctx = c.out[0].as<T>(), .probs = c.out[1].as<T>(),
                               .B = q.dim(0), .Tq = q.dim(1), .Tk = k.dim(1), .A = q.dim(2), .C = val.dim(2)});
  }
  void op_rnn_attention_bwd(const OpCall& c) override {
    const TensorView &q = c.in[1], &k = c.in[2], &val = c.in[3];
    auto opt = [](const TensorView& t) { return t ? t.as<T>() : nullptr; };
    ref::rnn_attention_bwd<T>({.score = static_cast<AttnScore>(c.attrs.i[0]), .dctx = c.in[0].as<T>(),
                               .q = q.as<T>(), .keys = k.as<T>(), .values = val.as<T>(), .v = opt(c.in[4]),
                               .key_len = ints(c.in[5]), .probs = c.in[6].as<T>(),
                               .dq = opt(c.out[0]), .dkeys = opt(c.out[1]), .dvalues = opt(c.out[2]),
                               .dv = opt(c.out[3]), .B = q.dim(0), .Tq = q.dim(1), .Tk = k.dim(1), .A = q.dim(2),
                               .C = val.dim(2)});
  }
  void op_document_starts(const OpCall& c) override {
    const TensorView& tok = c.in[0];
    ref::document_starts(tok.as<int32_t>(), c.out[0].as<int32_t>(), tok.dim(0), tok.dim(1), c.attrs.i[0]);
  }
  void op_attention_bwd(const OpCall& c) override {
    const TensorView& qkv = c.in[1];
    ref::attention_bwd<T>({.dout = c.in[0].as<T>(), .qkv = qkv.as<T>(), .out = c.in[2].as<T>(), .lse = c.in[3].as<T>(),
                           .dqkv = c.out[0].as<T>(), .B = qkv.dim(0), .seq = qkv.dim(1), .C = qkv.dim(2) / 3,
                           .H = c.attrs.i[0], .doc_start = ints(c.in[4]), .key_len = ints(c.in[5]),
                           .causal = c.attrs.i[1] == 0});
  }
  void op_attention_decode(const OpCall& c) override {
    const TensorView &qkv = c.in[0], &kc = c.in[1];
    ref::attention_decode<T>({.qkv = qkv.as<T>(), .kcache = kc.as<T>(), .vcache = c.in[2].as<T>(),
                              .out = c.out[0].as<T>(), .B = qkv.dim(0), .Tn = qkv.dim(1), .C = qkv.dim(2) / 3,
                              .H = c.attrs.i[0], .maxT = kc.dim(2), .pos0 = c.in[3].as<int32_t>()[0]});
  }
  void op_softmax_xent(const OpCall& c) override {
    const TensorView& z = c.in[0];
    ref::softmax_xent_fwd<T>({.logits = z.as<T>(), .targets = c.in[1].as<int32_t>(), .loss = c.out[0].as<T>(),
                              .lse = c.out[1].as<T>(), .N = z.rows(), .V = z.dim(-1)});
  }
  void op_linear_gelu(const OpCall& c) override {
    const TensorView &x = c.in[0], &w = c.in[1], &pre = c.out[1];
    ref::linear_gelu_fwd<T>({.x = x.as<T>(), .w = w.as<T>(), .b = c.in[2].as<T>(), .y = pre.as<T>(), .N = x.rows(),
                             .K = x.dim(-1), .M = w.dim(0)},
                            c.out[0].as<T>());
  }
  void op_scale(const OpCall& c) override {
    ref::scale<T>(c.in[0].as<T>(), static_cast<T>(c.attrs.f[0]), c.out[0].as<T>(), c.in[0].numel());
  }
  void op_tanh(const OpCall& c) override {
    ref::tanh_fwd<T>({.x = c.in[0].as<T>(), .y = c.out[0].as<T>(), .n = c.in[0].numel()});
  }
  void op_tanh_bwd(const OpCall& c) override {
    // tanh's backward reads the forward output y through GeluBwdArgs::x.
    ref::tanh_bwd<T>({.dy = c.in[0].as<T>(), .x = c.in[1].as<T>(), .dx = c.out[0].as<T>(), .n = c.in[0].numel()});
  }
  void op_context_embedding(const OpCall& c) override {
    const TensorView &tok = c.in[0], &wte = c.in[1];
    ref::context_embedding_fwd<T>({.tokens = tok.as<int32_t>(), .wte = wte.as<T>(), .out = c.out[0].as<T>(),
                                   .B = tok.dim(0), .seq = tok.dim(1), .E = wte.dim(1), .V = wte.dim(0),
                                   .n = static_cast<int>(c.attrs.i[0]), .pad = static_cast<int>(c.attrs.i[1])});
  }
  void op_context_embedding_bwd(const OpCall& c) override {
    const TensorView &tok = c.in[1], &dwte = c.out[0];
    ref::context_embedding_bwd<T>({.dout = c.in[0].as<T>(), .tokens = tok.as<int32_t>(), .dwte = dwte.as<T>(),
                                   .B = tok.dim(0), .seq = tok.dim(1), .E = dwte.dim(1), .V = dwte.dim(0),
                                   .n = static_cast<int>(c.attrs.i[0]), .pad = static_cast<int>(c.attrs.i[1])});
  }
  void op_recurrent(const OpCall& c) override {
    const TensorView &x = c.in[0], &y = c.out[0];
    ref::rnn_fwd<T>({.cell = static_cast<Cell>(c.attrs.i[0]), .x = x.as<T>(), .w_ih = c.in[1].as<T>(),
                     .w_hh = c.in[2].as<T>(), .b_ih = c.in[3].as<T>(), .b_hh = c.in[4].as<T>(),
                     .state0 = c.in[5].as<T>(), .y = y.as<T>(), .stateT = c.out[1].as<T>(), .saved = c.out[2].as<T>(),
                     .B = x.dim(0), .S = x.dim(1), .I = x.dim(2), .H = y.dim(2), .len = c.in[6].as<int32_t>()});
  }
  // The CPU computes everything in one dtype (statistics included): a copy.
  void op_cast(const OpCall& c) override {
    LOOM_CHECK(c.in[0].dtype == c.out[0].dtype, "cast: the CPU backend has one dtype");
    std::memcpy(c.out[0].data, c.in[0].data, c.in[0].bytes());
  }
  void op_seq_reverse(const OpCall& c) override {
    const TensorView& x = c.in[0];
    ref::seq_reverse<T>(x.as<T>(), c.in[1].as<int32_t>(), c.out[0].as<T>(), x.dim(0), x.dim(1), x.dim(2));
  }
  void op_recurrent_bwd(const OpCall& c) override {
    const TensorView &x = c.in[1], &y = c.in[5];
    LOOM_CHECK(c.out[1] && c.out[2] && c.out[3] && c.out[4], "recurrent_bwd: frozen recurrent weights");
    ref::rnn_bwd<T>({.cell = static_cast<Cell>(c.attrs.i[0]), .dy = c.in[0].as<T>(), .x = x.as<T>(),
                     .w_ih = c.in[2].as<T>(), .w_hh = c.in[3].as<T>(), .state0 = c.in[4].as<T>(), .y = y.as<T>(),
                     .saved = c.in[6].as<T>(), .dx = c.out[0].as<T>(), .dw_ih = c.out[1].as<T>(),
                     .dw_hh = c.out[2].as<T>(), .db_ih = c.out[3].as<T>(), .db_hh = c.out[4].as<T>(), .B = x.dim(0),
                     .S = x.dim(1), .I = x.dim(2), .H = y.dim(2), .dstateT = c.in[7].as<T>(),
                     .dstate0 = c.out[5].as<T>(), .len = c.in[8].as<int32_t>()});
  }
  void op_softmax_xent_bwd(const OpCall& c) override {
    const TensorView& z = c.in[1];
    ref::softmax_xent_bwd<T>({.dloss = c.in[0].as<T>(), .logits = z.as<T>(), .targets = c.in[2].as<int32_t>(),
                              .lse = c.in[3].as<T>(), .dlogits = c.out[0].as<T>(), .N = z.rows(), .V = z.dim(-1)});
  }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(DType float_dtype) {
  if (float_dtype == DType::F64) return std::make_unique<CpuBackend<double>>();
  LOOM_CHECK(float_dtype == DType::F32, "cpu backend runs f32 or f64");
  return std::make_unique<CpuBackend<float>>();
}

}  // namespace loom
