// cuda_backend.cpp: the CUDA backend of the executor. Mixed precision: bf16 activations and
// working weights, f32 statistics, parameter gradients, master weights and AdamW moments.
// One compute stream; matrix products through cuBLASLt (bf16 in, f32 accumulate, bias fused
// as an epilogue); everything else through the hand-written kernels of kernels/<family>/.
// The whole training step can be captured into a CUDA graph and replayed.
//
// The same file builds twice: against the real runtime (LOOM_CUDA_RUNTIME_HOST), and against
// the SIMT emulator, where "device" memory is host memory, kernels run on CPU threads and the
// matrix products fall back to the CPU reference (BLAS) -- so CI runs this backend end to end.
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "engine/backend/cuda/cuda_backend.h"
#include "kernels/common/cuda_check.h"
#include "kernels/adamw/adamw.h"
#include "kernels/attention/attention.h"
#include "kernels/common/cuda_compat.h"
#include "kernels/elementwise/elementwise.h"
#include "kernels/embedding/embedding.h"
#include "kernels/gelu/gelu.h"
#include "kernels/layernorm/layernorm.h"
#include "kernels/matmul/matmul.h"
#include "kernels/rnn/rnn.h"
#include "kernels/rnn_attention/rnn_attention.h"
#include "kernels/softmax_xent/softmax_xent.h"

#if LOOM_SIMT_EMULATION
#include <cblas.h>
#else
#include <cuda_profiler_api.h>
#include <nvtx3/nvToolsExt.h>

#include "engine/backend/cuda/lt_matmul.h"
#endif

namespace loom {

namespace {

const bf16* B16(const TensorView& v) { return static_cast<const bf16*>(v.data); }
bf16* W16(const TensorView& v) { return static_cast<bf16*>(v.data); }
const float* F32(const TensorView& v) { return static_cast<const float*>(v.data); }
float* WF32(const TensorView& v) { return static_cast<float*>(v.data); }
const int32_t* I32(const TensorView& v) { return static_cast<const int32_t*>(v.data); }
int32_t* WI32(const TensorView& v) { return static_cast<int32_t*>(v.data); }

class CudaBackend final : public Backend {
 public:
  CudaBackend() {
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }
  ~CudaBackend() override {
    cudaStreamSynchronize(stream_);
#if !LOOM_SIMT_EMULATION
    for (auto& g : graphs_) cudaGraphExecDestroy(g.exec);
#endif
    if (scratch_) cudaFree(scratch_);
    cudaStreamDestroy(stream_);
  }

  std::string name() const override { return LOOM_SIMT_EMULATION ? "cuda (emulated)" : "cuda"; }
  std::string device_name() const override {
#if LOOM_SIMT_EMULATION
    return "SIMT emulator";
#else
    int dev = 0;
    cudaDeviceProp p{};
    if (cudaGetDevice(&dev) != cudaSuccess || cudaGetDeviceProperties(&p, dev) != cudaSuccess) return "unknown CUDA device";
    return p.name;
#endif
  }
  DType float_dtype() const override { return DType::BF16; }
  void set_deterministic(bool on) override { deterministic_ = on; }

#if !LOOM_SIMT_EMULATION
  uint64_t free_memory() const override {
    size_t free = 0, total = 0;
    return cudaMemGetInfo(&free, &total) == cudaSuccess ? free : 0;
  }
#endif
  void* alloc(size_t bytes) override {
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) user_error("device memory: cannot allocate ", bytes / 1048576.0, " MiB (", cudaGetErrorString(e),
                                     "); lower train.batch_size or the model size");
    return p;
  }
  void release(void* p) override {
    cudaStreamSynchronize(stream_);
    cudaFree(p);
  }
  void to_device(void* dst, const void* host, size_t bytes) override {
    CUDA_CHECK(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void to_host(void* host, const void* src, size_t bytes) override {
    CUDA_CHECK(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void zero(void* p, size_t bytes) override { CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream_)); }
  void copy(void* dst, const void* src, size_t bytes) override {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
  }
  void synchronize() override { CUDA_CHECK(cudaStreamSynchronize(stream_)); }

  void adamw(const ref::AdamWArgs& a, void* working, uint64_t seed) override {
    cuda::adamw(a, static_cast<bf16*>(working), seed, stream_);
  }
  double norm(const float* g, int64_t n) override {
    float* s = scratch_floats(cuda::global_norm_scratch_floats(n) + 1);
    cuda::global_norm_sq(g, n, s + 1, s, stream_);
    float sq = 0;
    to_host(&sq, s, 4);
    return std::sqrt(static_cast<double>(sq));
  }
  void to_working(const float* master, void* working, int64_t n) override {
    cuda::cast_to_bf16(master, static_cast<bf16*>(working), n, stream_);
    synchronize();
  }

#if !LOOM_SIMT_EMULATION
  bool can_capture() const override { return true; }
  int capture(const std::function<void()>& step) override {
    graphs_.push_back({record(step), step, scratch_generation_});
    return static_cast<int>(graphs_.size()) - 1;
  }
  // A graph captured before the scratch buffer moved (a larger step ran eagerly since: a
  // training graph of another shape) would read freed memory: it is captured again first.
  void replay(int g) override {
    Captured& c = graphs_.at(g);
    if (c.scratch_generation != scratch_generation_) {
      CUDA_CHECK(cudaGraphExecDestroy(c.exec));
      c.exec = record(c.step);
      c.scratch_generation = scratch_generation_;
    }
    CUDA_CHECK(cudaGraphLaunch(c.exec, stream_));
  }
  void range_push(const char* name) override { nvtxRangePushA(name); }
  void range_pop() override { nvtxRangePop(); }
  void profiler_start() override { CUDA_CHECK(cudaProfilerStart()); }
  void profiler_stop() override {
    synchronize();
    CUDA_CHECK(cudaProfilerStop());
  }
#endif

  // ---- ops ----
  // Kernel argument structs are filled by designated initializers (.x = ...): C++20 rejects
  // fields out of declaration order, and these structs order some fields unlike their CPU
  // counterparts (lse before loss, residual before g), so a positional list would be one
  // swap away from a silent bug.
  void op_embedding(const OpCall& c) override {
    const TensorView &tok = c.in[0], &wte = c.in[1], &wpe = c.in[2];
    cuda::embedding_fwd({.tokens = I32(tok), .wte = B16(wte), .wpe = B16(wpe), .out = W16(c.out[0]), .B = tok.dim(0),
                         .T = tok.dim(1), .C = wte.dim(1), .V = wte.dim(0), .maxT = wpe.dim(0),
                         .pos0 = c.in[3] ? I32(c.in[3]) : nullptr},
                        stream_);
  }
  void op_embedding_bwd(const OpCall& c) override {
    const TensorView &tok = c.in[1], &dwte = c.out[0], &dwpe = c.out[1];
    int32_t* s = reinterpret_cast<int32_t*>(scratch_floats(cuda::embedding_bwd_scratch_ints(tok.numel(), dwte.dim(0))));
    cuda::embedding_bwd({.dout = B16(c.in[0]), .tokens = I32(tok), .dwte = WF32(dwte), .dwpe = WF32(dwpe), .scratch = s,
                         .B = tok.dim(0), .T = tok.dim(1), .C = dwte.dim(1), .V = dwte.dim(0), .maxT = dwpe.dim(0),
                         .pos0 = c.in[2] ? I32(c.in[2]) : nullptr},
                        stream_);
  }
  void op_layernorm(const OpCall& c) override {
    const TensorView& x = c.in[0];
    cuda::layernorm_fwd({.x = B16(x), .residual = nullptr, .sum = nullptr, .g = B16(c.in[1]), .b = B16(c.in[2]),
                         .y = W16(c.out[0]), .mean = WF32(c.out[1]), .rstd = WF32(c.out[2]), .N = x.rows(),
                         .C = x.dim(-1), .eps = c.attrs.f[0]},
                        stream_);
  }
  void op_residual_layernorm(const OpCall& c) override {
    const TensorView& x = c.in[0];
    cuda::layernorm_fwd({.x = B16(x), .residual = B16(c.in[1]), .sum = W16(c.out[0]), .g = B16(c.in[2]),
                         .b = B16(c.in[3]), .y = W16(c.out[1]), .mean = WF32(c.out[2]), .rstd = WF32(c.out[3]),
                         .N = x.rows(), .C = x.dim(-1), .eps = c.attrs.f[0]},
                        stream_);
  }
  void op_layernorm_bwd(const OpCall& c) override {
    const TensorView& x = c.in[1];
    float* s = scratch_floats(cuda::layernorm_bwd_scratch_floats(x.rows(), x.dim(-1)));
    cuda::layernorm_bwd({.dy = B16(c.in[0]), .x = B16(x), .g = B16(c.in[2]), .mean = F32(c.in[3]), .rstd = F32(c.in[4]),
                         .dresid = c.in[5] ? B16(c.in[5]) : nullptr, .dx = W16(c.out[0]), .dg = WF32(c.out[1]),
                         .db = WF32(c.out[2]), .scratch = s, .N = x.rows(), .C = x.dim(-1)},
                        stream_);
  }
  void op_linear(const OpCall& c) override {
    const TensorView &x = c.in[0], &w = c.in[1];
    linear_fwd(B16(x), B16(w), c.in[2] ? B16(c.in[2]) : nullptr, W16(c.out[0]), x.rows(), x.dim(-1), w.dim(0));
  }
  void op_linear_bwd(const OpCall& c) override {
    const TensorView &dy = c.in[0], &x = c.in[1], &w = c.in[2];
    const int64_t N = x.rows(), K = x.dim(-1), M = w.dim(0);
    linear_bwd(B16(dy), B16(x), B16(w), c.out[0] ? W16(c.out[0]) : nullptr, c.out[1] ? WF32(c.out[1]) : nullptr, N, K, M);
    if (c.out[2]) cuda::bias_grad(B16(dy), WF32(c.out[2]), scratch_floats(cuda::bias_grad_scratch_floats(N, M)), N, M, stream_);
  }
  void op_gelu(const OpCall& c) override { cuda::gelu_fwd(B16(c.in[0]), W16(c.out[0]), c.in[0].numel(), stream_); }
  void op_gelu_bwd(const OpCall& c) override {
    cuda::gelu_bwd(B16(c.in[0]), B16(c.in[1]), W16(c.out[0]), c.in[0].numel(), stream_);
  }
  // The attention kernels' head dims and grid (kernels/attention/attention.h): a model outside
  // them is a UserError when its graph is bound, not a failed check inside the first step.
  void check_supported(const OpCall& c) const override {
    const TensorView* x = nullptr;  // the queries' [B, T, C] (or [B, T, 3C] of packed q, k, v)
    int64_t parts = 1;
    switch (c.op) {
      case OpId::attention:
      case OpId::attention_decode:
        x = &c.in[0], parts = 3;
        break;
      case OpId::attention_bwd:
        x = &c.in[1], parts = 3;
        break;
      case OpId::cross_attention:
      case OpId::cross_attention_decode:
        x = &c.in[0];
        break;
      case OpId::cross_attention_bwd:
        x = &c.in[1];
        break;
      default:
        return;
    }
    const int64_t B = x->dim(0), H = c.attrs.i[0], D = x->dim(2) / parts / H;
    LOOM_USER_CHECK(cuda::attention_head_dim_supported(D), "model.d_model / model.n_head = ", D,
                    ": the CUDA attention kernels take head dims 16, 32, 64 and 128 (change model.n_head or "
                    "model.d_model, or run on --device cpu)");
    LOOM_USER_CHECK(B * H <= cuda::kAttentionMaxBatchHeads, "a micro-batch of ", B, " rows x ", H,
                    " heads: the CUDA attention kernels take at most ", cuda::kAttentionMaxBatchHeads,
                    " (lower train.batch_size and raise train.grad_accum)");
  }

  void op_add(const OpCall& c) override { cuda::add(B16(c.in[0]), B16(c.in[1]), W16(c.out[0]), c.out[0].numel(), stream_); }
  void op_attention(const OpCall& c) override {
    const TensorView& qkv = c.in[0];
    cuda::attention_fwd({.qkv = B16(qkv), .out = W16(c.out[0]), .lse = WF32(c.out[1]), .B = qkv.dim(0), .T = qkv.dim(1),
                         .C = qkv.dim(2) / 3, .H = c.attrs.i[0], .doc_start = I32(c.in[1]), .key_len = I32(c.in[2]),
                         .causal = c.attrs.i[1] == 0},
                        stream_);
  }
  void op_cross_attention(const OpCall& c) override {
    const TensorView &q = c.in[0], &kv = c.in[1];
    cuda::cross_attention_fwd({.q = B16(q), .kv = B16(kv), .out = W16(c.out[0]), .lse = WF32(c.out[1]), .B = q.dim(0),
                               .Tq = q.dim(1), .Tk = kv.dim(1), .C = q.dim(2), .H = c.attrs.i[0],
                               .key_len = I32(c.in[2])},
                              stream_);
  }
  void op_cross_attention_bwd(const OpCall& c) override {
    const TensorView &q = c.in[1], &kv = c.in[2];
    const int64_t B = q.dim(0), Tq = q.dim(1), C = q.dim(2), H = c.attrs.i[0];
    float* s = scratch_floats(cuda::attention_bwd_scratch_floats(B, Tq, C, H));
    cuda::cross_attention_bwd({.dout = B16(c.in[0]), .q = B16(q), .kv = B16(kv), .out = B16(c.in[3]),
                               .lse = F32(c.in[4]), .dq = c.out[0] ? W16(c.out[0]) : nullptr,
                               .dkv = c.out[1] ? W16(c.out[1]) : nullptr, .scratch = s, .B = B, .Tq = Tq,
                               .Tk = kv.dim(1), .C = C, .H = H, .key_len = I32(c.in[5]),
                               .deterministic = deterministic_},
                              stream_);
  }
  void op_cross_attention_decode(const OpCall& c) override {
    const TensorView &q = c.in[0], &kv = c.in[1];
    cuda::cross_attention_decode({.q = B16(q), .kv = B16(kv), .out = W16(c.out[0]), .Bq = q.dim(0), .Tn = q.dim(1),
                                  .Bk = kv.dim(0), .Tk = kv.dim(1), .C = q.dim(2), .H = c.attrs.i[0],
                                  .key_len = I32(c.in[2])},
                                 stream_);
  }
  void op_rnn_attention(const OpCall& c) override {
    const TensorView &q = c.in[0], &k = c.in[1], &val = c.in[2];
    cuda::rnn_attention_fwd({.score = static_cast<AttnScore>(c.attrs.i[0]), .q = B16(q), .keys = B16(k),
                             .values = B16(val), .v = c.in[3] ? B16(c.in[3]) : nullptr, .key_len = I32(c.in[4]),
                             .ctx = W16(c.out[0]), .probs = WF32(c.out[1]), .B = q.dim(0), .Tq = q.dim(1),
                             .Tk = k.dim(1), .A = q.dim(2), .C = val.dim(2)},
                            stream_);
  }
  void op_rnn_attention_bwd(const OpCall& c) override {
    const TensorView &q = c.in[1], &k = c.in[2], &val = c.in[3];
    const AttnScore score = static_cast<AttnScore>(c.attrs.i[0]);
    const int64_t B = q.dim(0), Tq = q.dim(1), Tk = k.dim(1), A = q.dim(2);
    float* s = scratch_floats(cuda::rnn_attention_bwd_scratch_floats(score, B, Tq, Tk, A));
    cuda::rnn_attention_bwd({.score = score, .dctx = B16(c.in[0]), .q = B16(q), .keys = B16(k), .values = B16(val),
                             .v = c.in[4] ? B16(c.in[4]) : nullptr, .key_len = I32(c.in[5]),
                             .probs = F32(c.in[6]), .dq = c.out[0] ? W16(c.out[0]) : nullptr,
                             .dkeys = c.out[1] ? W16(c.out[1]) : nullptr,
                             .dvalues = c.out[2] ? W16(c.out[2]) : nullptr, .dv = c.out[3] ? WF32(c.out[3]) : nullptr,
                             .scratch = s, .B = B, .Tq = Tq, .Tk = Tk, .A = A, .C = val.dim(2)},
                            stream_);
  }
  void op_document_starts(const OpCall& c) override {
    const TensorView& tok = c.in[0];
    cuda::document_starts(I32(tok), WI32(c.out[0]), tok.dim(0), tok.dim(1), c.attrs.i[0], stream_);
  }
  void op_attention_bwd(const OpCall& c) override {
    const TensorView& qkv = c.in[1];
    const int64_t B = qkv.dim(0), T = qkv.dim(1), C = qkv.dim(2) / 3, H = c.attrs.i[0];
    float* s = scratch_floats(cuda::attention_bwd_scratch_floats(B, T, C, H));
    cuda::attention_bwd({.dout = B16(c.in[0]), .qkv = B16(qkv), .out = B16(c.in[2]), .lse = F32(c.in[3]),
                         .dqkv = W16(c.out[0]), .scratch = s, .B = B, .T = T, .C = C, .H = H,
                         .doc_start = I32(c.in[4]), .key_len = I32(c.in[5]), .causal = c.attrs.i[1] == 0,
                         .deterministic = deterministic_},
                        stream_);
  }
  void op_attention_decode(const OpCall& c) override {
    const TensorView &qkv = c.in[0], &kc = c.in[1];
    cuda::attention_decode({.qkv = B16(qkv), .kcache = W16(kc), .vcache = W16(c.in[2]), .out = W16(c.out[0]),
                            .B = qkv.dim(0), .Tn = qkv.dim(1), .C = qkv.dim(2) / 3, .H = c.attrs.i[0],
                            .maxT = kc.dim(2), .pos0 = I32(c.in[3])},
                           stream_);
  }
  void op_softmax_xent(const OpCall& c) override {
    const TensorView& z = c.in[0];
    float* s = scratch_floats(cuda::softmax_xent_scratch_floats(z.rows()));
    cuda::softmax_xent_fwd({.logits = B16(z), .targets = I32(c.in[1]), .lse = WF32(c.out[1]), .loss = WF32(c.out[0]),
                            .scratch = s, .N = z.rows(), .V = z.dim(-1)},
                           stream_);
  }
  void op_softmax_xent_bwd(const OpCall& c) override {
    const TensorView& z = c.in[1];
    cuda::softmax_xent_bwd({.dloss = F32(c.in[0]), .logits = B16(z), .targets = I32(c.in[2]), .lse = F32(c.in[3]),
                            .dlogits = W16(c.out[0]), .N = z.rows(), .V = z.dim(-1)},
                           stream_);
  }

  void op_linear_gelu(const OpCall& c) override {
    const TensorView &x = c.in[0], &w = c.in[1];
    linear_gelu_fwd(B16(x), B16(w), c.in[2] ? B16(c.in[2]) : nullptr, W16(c.out[0]), W16(c.out[1]), x.rows(),
                    x.dim(-1), w.dim(0));
  }
  void op_scale(const OpCall& c) override {
    cuda::scale(B16(c.in[0]), c.attrs.f[0], W16(c.out[0]), c.in[0].numel(), stream_);
  }
  void op_tanh(const OpCall& c) override { cuda::tanh_fwd(B16(c.in[0]), W16(c.out[0]), c.in[0].numel(), stream_); }
  void op_tanh_bwd(const OpCall& c) override {
    cuda::tanh_bwd(B16(c.in[0]), B16(c.in[1]), W16(c.out[0]), c.in[0].numel(), stream_);
  }
  // The context embedding is an embedding without positions over B*T*n expanded tokens.
  void op_context_embedding(const OpCall& c) override {
    const TensorView &tok = c.in[0], &wte = c.in[1];
    const int n = static_cast<int>(c.attrs.i[0]), pad = static_cast<int>(c.attrs.i[1]);
    const int64_t rows = tok.numel() * n;
    int32_t* ctx = reinterpret_cast<int32_t*>(scratch_floats(rows));
    cuda::context_tokens(I32(tok), ctx, tok.dim(0), tok.dim(1), n, pad, stream_);
    cuda::embedding_fwd({.tokens = ctx, .wte = B16(wte), .wpe = nullptr, .out = W16(c.out[0]), .B = rows, .T = 1,
                         .C = wte.dim(1), .V = wte.dim(0), .maxT = 1, .pos0 = nullptr},
                        stream_);
  }
  void op_context_embedding_bwd(const OpCall& c) override {
    const TensorView &tok = c.in[1], &dwte = c.out[0];
    const int n = static_cast<int>(c.attrs.i[0]), pad = static_cast<int>(c.attrs.i[1]);
    const int64_t rows = tok.numel() * n, ctx_words = (rows + 1) / 2 * 2;  // keeps the rest 8-byte aligned
    int32_t* ctx = reinterpret_cast<int32_t*>(scratch_floats(ctx_words + cuda::embedding_bwd_scratch_ints(rows, dwte.dim(0))));
    cuda::context_tokens(I32(tok), ctx, tok.dim(0), tok.dim(1), n, pad, stream_);
    cuda::embedding_bwd({.dout = B16(c.in[0]), .tokens = ctx, .dwte = WF32(dwte), .dwpe = nullptr,
                         .scratch = ctx + ctx_words, .B = rows, .T = 1, .C = dwte.dim(1), .V = dwte.dim(0), .maxT = 1,
                         .pos0 = nullptr},
                        stream_);
  }
  void op_recurrent(const OpCall& c) override {
    const TensorView &x = c.in[0], &y = c.out[0];
    const Cell cell = static_cast<Cell>(c.attrs.i[0]);
    const int64_t B = x.dim(0), S = x.dim(1), I = x.dim(2), H = y.dim(2);
    float* s = scratch_floats(cuda::rnn_fwd_scratch_floats(cell, B, S, I, H));
    cuda::rnn_fwd({.cell = cell, .x = B16(x), .w_ih = B16(c.in[1]), .w_hh = B16(c.in[2]), .b_ih = B16(c.in[3]),
                   .b_hh = B16(c.in[4]), .state0 = F32(c.in[5]), .y = W16(y), .stateT = WF32(c.out[1]),
                   .saved = WF32(c.out[2]), .B = B, .S = S, .I = I, .H = H, .scratch = s, .len = I32(c.in[6])},
                  gemm_fn(), stream_);
  }
  void op_cast(const OpCall& c) override {
    const TensorView &x = c.in[0], &y = c.out[0];
    if (x.dtype == y.dtype) {
      CUDA_CHECK(cudaMemcpyAsync(y.data, x.data, x.bytes(), cudaMemcpyDeviceToDevice, stream_));
    } else if (x.dtype == DType::BF16 && y.dtype == DType::F32) {
      cuda::widen_bf16(B16(x), WF32(y), x.numel(), stream_);
    } else {
      LOOM_CHECK(x.dtype == DType::F32 && y.dtype == DType::BF16, "cast: ", dtype_name(x.dtype), " to ",
                 dtype_name(y.dtype));
      cuda::cast_to_bf16(F32(x), W16(y), x.numel(), stream_);
    }
  }
  void op_seq_reverse(const OpCall& c) override {
    const TensorView& x = c.in[0];
    cuda::seq_reverse(B16(x), I32(c.in[1]), W16(c.out[0]), x.dim(0), x.dim(1), x.dim(2), stream_);
  }
  void op_recurrent_bwd(const OpCall& c) override {
    const TensorView &x = c.in[1], &y = c.in[5];
    LOOM_CHECK(c.out[1] && c.out[2] && c.out[3] && c.out[4], "recurrent_bwd: frozen recurrent weights");
    const Cell cell = static_cast<Cell>(c.attrs.i[0]);
    const int64_t B = x.dim(0), S = x.dim(1), I = x.dim(2), H = y.dim(2);
    float* s = scratch_floats(cuda::rnn_bwd_scratch_floats(cell, B, S, I, H));
    cuda::rnn_bwd({.cell = cell, .dy = B16(c.in[0]), .x = B16(x), .w_ih = B16(c.in[2]), .w_hh = B16(c.in[3]),
                   .state0 = F32(c.in[4]), .y = B16(y), .saved = F32(c.in[6]), .dx = c.out[0] ? W16(c.out[0]) : nullptr,
                   .dw_ih = WF32(c.out[1]), .dw_hh = WF32(c.out[2]), .db_ih = WF32(c.out[3]), .db_hh = WF32(c.out[4]),
                   .B = B, .S = S, .I = I, .H = H, .scratch = s, .dstateT = F32(c.in[7]), .dstate0 = WF32(c.out[5]),
                   .len = I32(c.in[8])},
                  gemm_fn(), stream_);
  }

  cudaStream_t stream() const { return stream_; }
  void* compute_stream() override { return stream_; }
  // General matrix products for kernels that orchestrate their own (the recurrent layers).
  // Both operands share one type: bf16 x bf16 runs on tensor cores, f32 x f32 in f32. A mixed
  // call would need one operand converted at every call (the recurrent backward once widened
  // w_hh at every step that way); callers convert once and keep the copy instead.
  cuda::Gemm gemm_fn() {
    return [this](const cuda::GemmCall& g) {
      LOOM_CHECK(g.a_dtype == g.b_dtype, "gemm: operands of mixed types (", dtype_name(g.a_dtype), " x ",
                 dtype_name(g.b_dtype), "); convert one once, outside the call");
      LOOM_CHECK(g.a_dtype == DType::BF16 || g.a_dtype == DType::F32, "gemm: operand dtype");
      LOOM_CHECK(g.c_dtype == DType::BF16 || g.c_dtype == DType::F32, "gemm: output dtype");
      gemm(g);
    };
  }

 private:
  // Elements a row-major operand spans: rows of ld, the last one only `cols` long.
  static int64_t span(int64_t rows, int64_t cols, int64_t ld) { return rows == 0 ? 0 : (rows - 1) * ld + cols; }

  // One scratch buffer for every launcher that needs temporary space (launchers never
  // allocate). It grows during eager steps; a captured graph must never need more.
  float* scratch_floats(size_t n) { return grow(scratch_, scratch_bytes_, n); }
  // A scratch buffer of at least n floats (grown, never shrunk).
  float* grow(void*& buf, size_t& have, size_t n) {
    const size_t bytes = std::max<size_t>(n, 1) * 4;
    if (bytes > have) {
      LOOM_CHECK(!capturing_, "scratch must not grow inside a captured graph");
      if (buf) {
        CUDA_CHECK(cudaStreamSynchronize(stream_));
        CUDA_CHECK(cudaFree(buf));
      }
      CUDA_CHECK(cudaMalloc(&buf, bytes));
      have = bytes;
      ++scratch_generation_;
    }
    return static_cast<float*>(buf);
  }

#if LOOM_SIMT_EMULATION
  // Matrix products fall back to the CPU reference: device memory is host memory here.
  static std::vector<float> widen(const bf16* p, int64_t n) {
    std::vector<float> r(n);
    for (int64_t i = 0; i < n; ++i) r[i] = from_bf16(p[i]);
    return r;
  }
  static void narrow(const std::vector<float>& v, bf16* p) {
    for (size_t i = 0; i < v.size(); ++i) p[i] = to_bf16(v[i]);
  }
  void linear_fwd(const bf16* x, const bf16* w, const bf16* b, bf16* y, int64_t N, int64_t K, int64_t M) {
    synchronize();
    auto xf = widen(x, N * K), wf = widen(w, M * K);
    std::vector<float> bf, yf(N * M);
    if (b) bf = widen(b, M);
    ref::linear_fwd<float>({xf.data(), wf.data(), b ? bf.data() : nullptr, yf.data(), N, K, M});
    narrow(yf, y);
  }
  void linear_bwd(const bf16* dy, const bf16* x, const bf16* w, bf16* dx, float* dw, int64_t N, int64_t K, int64_t M) {
    synchronize();
    auto dyf = widen(dy, N * M), xf = widen(x, N * K), wf = widen(w, M * K);
    std::vector<float> dxf(dx ? N * K : 0);
    ref::linear_bwd<float>({dyf.data(), xf.data(), wf.data(), dx ? dxf.data() : nullptr, dw, nullptr, N, K, M});
    if (dx) narrow(dxf, dx);
  }
  void linear_gelu_fwd(const bf16* x, const bf16* w, const bf16* b, bf16* y, bf16* pre, int64_t N, int64_t K, int64_t M) {
    linear_fwd(x, w, b, pre, N, K, M);
    cuda::gelu_fwd(pre, y, N * M, stream_);
  }
  static std::vector<float> widen_any(const void* p, DType dt, int64_t n) {
    if (dt == DType::BF16) return widen(static_cast<const bf16*>(p), n);
    LOOM_CHECK(dt == DType::F32, "gemm: operand dtype");
    const float* f = static_cast<const float*>(p);
    return std::vector<float>(f, f + n);
  }
  void gemm(const cuda::GemmCall& g) {
    synchronize();
    const int64_t ar = g.ta ? g.k : g.m, ac = g.ta ? g.m : g.k, br = g.tb ? g.n : g.k, bc = g.tb ? g.k : g.n;
    auto a = widen_any(g.A, g.a_dtype, span(ar, ac, g.lda)), b = widen_any(g.B, g.b_dtype, span(br, bc, g.ldb));
    const int64_t cn = span(g.m, g.n, g.ldc);
    std::vector<float> cf = g.c_dtype == DType::F32 ? std::vector<float>() : widen_any(g.C, g.c_dtype, cn);
    float* C = g.c_dtype == DType::F32 ? static_cast<float*>(g.C) : cf.data();
    if (g.m > 0 && g.n > 0)
      cblas_sgemm(CblasRowMajor, g.ta ? CblasTrans : CblasNoTrans, g.tb ? CblasTrans : CblasNoTrans, int(g.m), int(g.n),
                  int(g.k), g.alpha, a.data(), int(g.lda), b.data(), int(g.ldb), g.beta, C, int(g.ldc));
    if (g.c_dtype == DType::BF16) narrow(cf, static_cast<bf16*>(g.C));
  }
#else
  // Products through the one cuBLASLt plan cache (lt_matmul.h), in its column-major terms:
  // the row-major y[N,M] = x[N,K] W[M,K]^T is y^T = W^T' x^T, W read transposed.
  // C[m,n] (ldc = m) = op(A) op(B) (+ beta C) on packed operands, with the epilogue that `bias`
  // and `aux` ask for: + bias[m] broadcast over n; with aux (bf16, shaped as C) C = GELU(...)
  // and aux the pre-activation (GELU_AUX(_BIAS)).
  void lt_matmul(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void* A, const void* B, void* C,
                 cudaDataType_t ctype, float beta, const bf16* bias, bf16* aux = nullptr) {
    const LtEpilogue epi = aux ? (bias ? LtEpilogue::GeluAuxBias : LtEpilogue::GeluAux)
                               : (bias ? LtEpilogue::Bias : LtEpilogue::None);
    lt_.run({.ta = ta, .tb = tb, .m = m, .n = n, .k = k,
             .A = A, .lda = ta ? k : m,
             .B = B, .ldb = tb ? n : k,
             .C = C, .ldc = m, .c_type = ctype,
             .beta = beta, .epilogue = epi, .bias = bias, .aux = aux},
            stream_);
  }
  void linear_fwd(const bf16* x, const bf16* w, const bf16* b, bf16* y, int64_t N, int64_t K, int64_t M) {
    lt_matmul(true, false, M, N, K, w, x, y, CUDA_R_16BF, 0.0f, b);
  }
  void linear_bwd(const bf16* dy, const bf16* x, const bf16* w, bf16* dx, float* dw, int64_t N, int64_t K, int64_t M) {
    if (dx) lt_matmul(false, false, K, N, M, w, dy, dx, CUDA_R_16BF, 0.0f, nullptr);  // dx^T = W^T dy^T
    if (dw) lt_matmul(false, true, K, M, N, x, dy, dw, CUDA_R_32F, 1.0f, nullptr);    // dW^T += x^T dy
  }
  // GELU(x W^T + b) with the pre-activation kept for backward, in the product's epilogue.
  // cuBLASLt wants the aux leading dimension a multiple of 8; other widths take two launches.
  void linear_gelu_fwd(const bf16* x, const bf16* w, const bf16* b, bf16* y, bf16* pre, int64_t N, int64_t K, int64_t M) {
    if (M % 8 == 0) {
      lt_matmul(true, false, M, N, K, w, x, y, CUDA_R_16BF, 0.0f, b, pre);
    } else {
      linear_fwd(x, w, b, pre, N, K, M);
      cuda::gelu_fwd(pre, y, N * M, stream_);
    }
  }

  // Row-major C[m,n] = alpha op(A) op(B) + beta C with any leading dimensions, as the
  // column-major product C^T = op(B)^T op(A)^T; both operands of one type (gemm_fn checks).
  void gemm(const cuda::GemmCall& g) {
    if (g.m == 0 || g.n == 0) return;
    const cudaDataType_t it = g.a_dtype == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F;
    const cudaDataType_t ct = g.c_dtype == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F;
    // First operand B (column-major view B^T), second A.
    lt_.run({.ta = g.tb, .tb = g.ta, .m = g.n, .n = g.m, .k = g.k,
             .A = g.B, .lda = g.ldb, .a_type = it,
             .B = g.A, .ldb = g.lda, .b_type = it,
             .C = g.C, .ldc = g.ldc, .c_type = ct,
             .alpha = g.alpha, .beta = g.beta},
            stream_);
  }

  // The step's launches as an instantiated graph (nothing runs).
  cudaGraphExec_t record(const std::function<void()>& step) {
    synchronize();
    capturing_ = true;
    cudaGraph_t graph = nullptr;
    CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    step();
    CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
    capturing_ = false;
    cudaGraphExec_t exec = nullptr;
    CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    CUDA_CHECK(cudaGraphDestroy(graph));
    return exec;
  }

  struct Captured {
    cudaGraphExec_t exec = nullptr;
    std::function<void()> step;   // kept to capture it again
    uint64_t scratch_generation;  // scratch_generation_ when it was captured
  };
  LtMatmul lt_;
  std::vector<Captured> graphs_;
#endif

  cudaStream_t stream_ = nullptr;
  void* scratch_ = nullptr;
  bool deterministic_ = false;
  size_t scratch_bytes_ = 0;
  uint64_t scratch_generation_ = 0;  // bumped each time a scratch buffer moves
  bool capturing_ = false;
};

}  // namespace

// For `loom bench kernels`: the backend's compute stream and its general product (cuBLASLt;
// the CPU fallback under the emulator), which the recurrent launchers call in that stream.
cuda::Stream cuda_backend_stream(Backend& be) { return static_cast<CudaBackend&>(be).stream(); }
cuda::Gemm cuda_backend_gemm(Backend& be) { return static_cast<CudaBackend&>(be).gemm_fn(); }

// Found by engine/backend/device.cpp. Returns null (with the reason) when no device answers.
std::unique_ptr<Backend> make_cuda_backend(std::string* why) {
#if !LOOM_SIMT_EMULATION
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    if (why) *why = e != cudaSuccess ? cudaGetErrorString(e) : "no CUDA device";
    cudaGetLastError();  // clear the sticky error of a missing driver
    return nullptr;
  }
#endif
  return std::make_unique<CudaBackend>();
}

}  // namespace loom
