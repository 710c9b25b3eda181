// cpu_backend.cpp: the CPU backend. Each op unpacks its views into the argument struct of
// the kernel family's CPU reference (kernels/<family>/<family>_ref.cpp) and calls it. The
// same class runs in double for finite-difference gradient checks.
#include <cstdlib>
#include <cstring>

#include "engine/backend/backend.h"
#include "kernels/attention/attention.h"
#include "kernels/elementwise/elementwise.h"
#include "kernels/embedding/embedding.h"
#include "kernels/gelu/gelu.h"
#include "kernels/layernorm/layernorm.h"
#include "kernels/matmul/matmul.h"
#include "kernels/rnn/rnn.h"
#include "kernels/softmax_xent/softmax_xent.h"

namespace loom {

namespace {

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
  void zero(void* p, size_t bytes) override { std::memset(p, 0, bytes); }
  void copy(void* dst, const void* src, size_t bytes) override { std::memmove(dst, src, bytes); }

  void adamw(const ref::AdamWArgs& a, void* working, uint64_t) override {
    LOOM_CHECK(!working, "the cpu backend trains in f32: no working copy");
    ref::adamw_step(a);
  }
  double norm(const float* g, int64_t n) override { return ref::grad_norm(g, n); }

  void op_embedding(const OpCall& c) override {
    const TensorView &tok = c.in[0], &wte = c.in[1], &wpe = c.in[2];
    ref::embedding_fwd<T>({tok.as<int32_t>(), wte.as<T>(), wpe.as<T>(), c.out[0].as<T>(), tok.dim(0), tok.dim(1),
                           wte.dim(1), wte.dim(0), wpe.dim(0), c.in[3] ? c.in[3].as<int32_t>()[0] : 0});
  }
  void op_embedding_bwd(const OpCall& c) override {
    const TensorView &d = c.in[0], &tok = c.in[1], &dwte = c.out[0], &dwpe = c.out[1];
    ref::embedding_bwd<T>({d.as<T>(), tok.as<int32_t>(), dwte.as<T>(), dwpe.as<T>(), tok.dim(0), tok.dim(1),
                           dwte.dim(1), dwte.dim(0), dwpe.dim(0), c.in[2] ? c.in[2].as<int32_t>()[0] : 0});
  }
  void op_layernorm(const OpCall& c) override {
    const TensorView& x = c.in[0];
    ref::layernorm_fwd<T>({x.as<T>(), c.in[1].as<T>(), c.in[2].as<T>(), c.out[0].as<T>(), c.out[1].as<T>(),
                           c.out[2].as<T>(), x.rows(), x.dim(-1), c.attrs.f[0]});
  }
  void op_residual_layernorm(const OpCall& c) override {
    const TensorView& x = c.in[0];
    ref::layernorm_fwd<T>({x.as<T>(), c.in[2].as<T>(), c.in[3].as<T>(), c.out[1].as<T>(), c.out[2].as<T>(),
                           c.out[3].as<T>(), x.rows(), x.dim(-1), c.attrs.f[0], c.in[1].as<T>(),
                           c.out[0].as<T>()});
  }
  void op_layernorm_bwd(const OpCall& c) override {
    const TensorView& x = c.in[1];
    ref::layernorm_bwd<T>({c.in[0].as<T>(), x.as<T>(), c.in[2].as<T>(), c.in[3].as<T>(), c.in[4].as<T>(),
                           c.out[0].as<T>(), c.out[1].as<T>(), c.out[2].as<T>(), x.rows(), x.dim(-1),
                           c.in[5].as<T>()});
  }
  void op_linear(const OpCall& c) override {
    const TensorView &x = c.in[0], &w = c.in[1];
    ref::linear_fwd<T>({x.as<T>(), w.as<T>(), c.in[2].as<T>(), c.out[0].as<T>(), x.rows(), x.dim(-1), w.dim(0)});
  }
  void op_linear_bwd(const OpCall& c) override {
    const TensorView &x = c.in[1], &w = c.in[2];
    ref::linear_bwd<T>({c.in[0].as<T>(), x.as<T>(), w.as<T>(), c.out[0].as<T>(), c.out[1].as<T>(), c.out[2].as<T>(),
                        x.rows(), x.dim(-1), w.dim(0)});
  }
  void op_gelu(const OpCall& c) override { ref::gelu_fwd<T>({c.in[0].as<T>(), c.out[0].as<T>(), c.in[0].numel()}); }
  void op_gelu_bwd(const OpCall& c) override {
    ref::gelu_bwd<T>({c.in[0].as<T>(), c.in[1].as<T>(), c.out[0].as<T>(), c.in[0].numel()});
  }
  void op_add(const OpCall& c) override {
    ref::add<T>(c.in[0].as<T>(), c.in[1].as<T>(), c.out[0].as<T>(), c.out[0].numel());
  }
  void op_attention(const OpCall& c) override {
    const TensorView& qkv = c.in[0];
    ref::attention_fwd<T>({qkv.as<T>(), c.out[0].as<T>(), c.out[1].as<T>(), qkv.dim(0), qkv.dim(1), qkv.dim(2) / 3,
                           c.attrs.i[0]});
  }
  void op_attention_bwd(const OpCall& c) override {
    const TensorView& qkv = c.in[1];
    ref::attention_bwd<T>({c.in[0].as<T>(), qkv.as<T>(), c.in[2].as<T>(), c.in[3].as<T>(), c.out[0].as<T>(),
                           qkv.dim(0), qkv.dim(1), qkv.dim(2) / 3, c.attrs.i[0]});
  }
  void op_attention_decode(const OpCall& c) override {
    const TensorView &qkv = c.in[0], &kc = c.in[1];
    ref::attention_decode<T>({qkv.as<T>(), kc.as<T>(), c.in[2].as<T>(), c.out[0].as<T>(), qkv.dim(0), qkv.dim(1),
                              qkv.dim(2) / 3, c.attrs.i[0], kc.dim(2), c.in[3].as<int32_t>()[0]});
  }
  void op_softmax_xent(const OpCall& c) override {
    const TensorView& z = c.in[0];
    ref::softmax_xent_fwd<T>({z.as<T>(), c.in[1].as<int32_t>(), c.out[0].as<T>(), c.out[1].as<T>(), z.rows(), z.dim(-1)});
  }
  void op_linear_gelu(const OpCall& c) override {
    const TensorView &x = c.in[0], &w = c.in[1], &pre = c.out[1];
    ref::linear_fwd<T>({x.as<T>(), w.as<T>(), c.in[2].as<T>(), pre.as<T>(), x.rows(), x.dim(-1), w.dim(0)});
    ref::gelu_fwd<T>({pre.as<T>(), c.out[0].as<T>(), pre.numel()});
  }
  void op_scale(const OpCall& c) override {
    ref::scale<T>(c.in[0].as<T>(), static_cast<T>(c.attrs.f[0]), c.out[0].as<T>(), c.in[0].numel());
  }
  void op_tanh(const OpCall& c) override { ref::tanh_fwd<T>({c.in[0].as<T>(), c.out[0].as<T>(), c.in[0].numel()}); }
  void op_tanh_bwd(const OpCall& c) override {
    ref::tanh_bwd<T>({c.in[0].as<T>(), c.in[1].as<T>(), c.out[0].as<T>(), c.in[0].numel()});
  }
  void op_context_embedding(const OpCall& c) override {
    const TensorView &tok = c.in[0], &wte = c.in[1];
    ref::context_embedding_fwd<T>({tok.as<int32_t>(), wte.as<T>(), c.out[0].as<T>(), tok.dim(0), tok.dim(1), wte.dim(1),
                                   wte.dim(0), static_cast<int>(c.attrs.i[0]), static_cast<int>(c.attrs.i[1])});
  }
  void op_context_embedding_bwd(const OpCall& c) override {
    const TensorView &tok = c.in[1], &dwte = c.out[0];
    ref::context_embedding_bwd<T>({c.in[0].as<T>(), tok.as<int32_t>(), dwte.as<T>(), tok.dim(0), tok.dim(1),
                                   dwte.dim(1), dwte.dim(0), static_cast<int>(c.attrs.i[0]),
                                   static_cast<int>(c.attrs.i[1])});
  }
  void op_recurrent(const OpCall& c) override {
    const TensorView &x = c.in[0], &y = c.out[0];
    ref::rnn_fwd<T>({static_cast<Cell>(c.attrs.i[0]), x.as<T>(), c.in[1].as<T>(), c.in[2].as<T>(),
                     c.in[3].as<T>(), c.in[4].as<T>(), c.in[5].as<T>(), y.as<T>(), c.out[1].as<T>(), c.out[2].as<T>(),
                     x.dim(0), x.dim(1), x.dim(2), y.dim(2)});
  }
  void op_recurrent_bwd(const OpCall& c) override {
    const TensorView &x = c.in[1], &y = c.in[5];
    LOOM_CHECK(c.out[1] && c.out[2] && c.out[3] && c.out[4], "recurrent_bwd: frozen recurrent weights");
    ref::rnn_bwd<T>({static_cast<Cell>(c.attrs.i[0]), c.in[0].as<T>(), x.as<T>(), c.in[2].as<T>(),
                     c.in[3].as<T>(), c.in[4].as<T>(), y.as<T>(), c.in[6].as<T>(), c.out[0].as<T>(), c.out[1].as<T>(),
                     c.out[2].as<T>(), c.out[3].as<T>(), c.out[4].as<T>(), x.dim(0), x.dim(1), x.dim(2), y.dim(2)});
  }
  void op_softmax_xent_bwd(const OpCall& c) override {
    const TensorView& z = c.in[1];
    ref::softmax_xent_bwd<T>({c.in[0].as<T>(), z.as<T>(), c.in[2].as<int32_t>(), c.in[3].as<T>(), c.out[0].as<T>(),
                              z.rows(), z.dim(-1)});
  }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(DType float_dtype) {
  if (float_dtype == DType::F64) return std::make_unique<CpuBackend<double>>();
  LOOM_CHECK(float_dtype == DType::F32, "cpu backend runs f32 or f64");
  return std::make_unique<CpuBackend<float>>();
}

}  // namespace loom
