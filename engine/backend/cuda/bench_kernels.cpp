// bench_kernels.cpp: `loom bench kernels`: every kernel family on its GPT-2-124M-sized
// shape, timed with CUDA events (median of repeats after warm-up), with the bytes or FLOPs it
// must move/do, the achieved rate, and that rate as a share of a ceiling measured in the same
// run: device-to-device copy bandwidth for memory-bound kernels, the cuBLASLt bf16 GEMM rate
// for attention. Under the emulator the same code runs on tiny shapes, once, to show the
// kernels run and agree with the launch contract -- its times mean nothing.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "engine/backend/cuda/cuda_check.h"
#include "engine/core/dtype.h"
#include "engine/core/rng.h"
#include "kernels/adamw/adamw.h"
#include "kernels/attention/attention.h"
#include "kernels/common/cuda_compat.h"
#include "kernels/elementwise/elementwise.h"
#include "kernels/embedding/embedding.h"
#include "kernels/gelu/gelu.h"
#include "kernels/layernorm/layernorm.h"
#include "kernels/matmul/matmul.h"
#include "kernels/softmax_xent/softmax_xent.h"

#if !LOOM_SIMT_EMULATION
#include <cublasLt.h>
#endif

namespace loom {

namespace {

struct Dev {
  std::vector<void*> ptrs;
  ~Dev() {
    for (void* p : ptrs) cudaFree(p);
  }
  template <typename T>
  T* alloc(size_t n) {
    void* p = nullptr;
    CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)));
    ptrs.push_back(p);
    return static_cast<T*>(p);
  }
  // Random bf16 values in [-1, 1) (never zeros), uploaded.
  bf16* rand_bf16(size_t n, Rng& r) {
    std::vector<bf16> h(n);
    for (auto& v : h) v = to_bf16(2 * r.uniform() - 1);
    bf16* d = alloc<bf16>(n);
    CUDA_CHECK(cudaMemcpy(d, h.data(), n * 2, cudaMemcpyHostToDevice));
    return d;
  }
  float* rand_f32(size_t n, Rng& r, float lo, float hi) {
    std::vector<float> h(n);
    for (auto& v : h) v = lo + (hi - lo) * r.uniform();
    float* d = alloc<float>(n);
    CUDA_CHECK(cudaMemcpy(d, h.data(), n * 4, cudaMemcpyHostToDevice));
    return d;
  }
  int32_t* rand_tokens(size_t n, int32_t V, Rng& r) {
    std::vector<int32_t> h(n);
    for (auto& v : h) v = static_cast<int32_t>(r.below(V));
    int32_t* d = alloc<int32_t>(n);
    CUDA_CHECK(cudaMemcpy(d, h.data(), n * 4, cudaMemcpyHostToDevice));
    return d;
  }
};

// Median milliseconds of `fn` over `reps` timed runs after `warm` untimed ones.
double time_ms(cudaStream_t s, int warm, int reps, const std::function<void()>& fn) {
  for (int i = 0; i < warm; ++i) fn();
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  std::vector<float> ms;
  for (int i = 0; i < reps; ++i) {
    CUDA_CHECK(cudaEventRecord(a, s));
    fn();
    CUDA_CHECK(cudaEventRecord(b, s));
    CUDA_CHECK(cudaEventSynchronize(b));
    float t = 0;
    CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  CUDA_CHECK(cudaEventDestroy(a));
  CUDA_CHECK(cudaEventDestroy(b));
  std::sort(ms.begin(), ms.end());
  CUDA_CHECK(cudaGetLastError());
  return ms[ms.size() / 2];
}

}  // namespace

// Prints the table; returns 0. `emulated` shapes are tiny.
int bench_kernels_main() {
  const bool emu = LOOM_SIMT_EMULATION;
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0)
    user_error("bench kernels: no usable CUDA device (", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices",
               "); build with -DLOOM_CUDA_EMULATION=ON (or use build/loom-emu) to run the kernels on the CPU");
  cudaStream_t s = nullptr;
  CUDA_CHECK(cudaStreamCreate(&s));
  const int warm = emu ? 0 : 5, reps = emu ? 1 : 20;
  Rng rng(1);
  Dev d;
  // GPT-2 124M shapes (B=4 sequences of T=1024, C=768, H=12, V=50304); tiny under emulation.
  const int64_t B = emu ? 1 : 4, T = emu ? 32 : 1024, C = emu ? 64 : 768, H = emu ? 2 : 12, V = emu ? 96 : 50304;
  const int64_t N = B * T, P = emu ? 4096 : 124475904;

  // Ceiling 1: device-to-device copy bandwidth (read + write counted).
  const size_t copy_bytes = emu ? (1u << 16) : (size_t(1) << 30);
  char* src = d.alloc<char>(copy_bytes);
  char* dst = d.alloc<char>(copy_bytes);
  CUDA_CHECK(cudaMemset(src, 1, copy_bytes));
  const double copy_ms = time_ms(s, warm, reps, [&] {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, copy_bytes, cudaMemcpyDeviceToDevice, s));
  });
  const double copy_gbs = 2.0 * copy_bytes / (copy_ms * 1e6);

  // Ceiling 2: cuBLASLt bf16 GEMM (8192^3), the tensor-core rate this card reaches.
  double gemm_tflops = 0;
#if !LOOM_SIMT_EMULATION
  {
    const int64_t n = 8192;
    bf16* A = d.rand_bf16(n * n, rng);
    bf16* Bm = d.rand_bf16(n * n, rng);
    bf16* Cm = d.alloc<bf16>(n * n);
    cublasLtHandle_t lt;
    CUBLAS_CHECK(cublasLtCreate(&lt));
    cublasLtMatmulDesc_t op;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasLtMatrixLayout_t la;
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, n, n, n));
    size_t ws_bytes = 32u << 20;
    void* ws = d.alloc<char>(ws_bytes);
    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes,
                                                      sizeof ws_bytes));
    cublasLtMatmulHeuristicResult_t h{};
    int found = 0;
    CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(lt, op, la, la, la, la, pref, 1, &h, &found));
    const float alpha = 1, beta = 0;
    const double ms = time_ms(s, 3, 10, [&] {
      CUBLAS_CHECK(cublasLtMatmul(lt, op, &alpha, A, la, Bm, la, &beta, Cm, la, Cm, la, &h.algo, ws, ws_bytes, s));
    });
    gemm_tflops = 2.0 * n * n * n / (ms * 1e9);
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatmulDescDestroy(op);
    cublasLtDestroy(lt);
  }
#endif

  std::printf("loom bench kernels%s\n", emu ? " (SIMT emulator: tiny shapes, times are not GPU times)" : "");
  std::printf("ceilings measured in this run: copy %.1f GB/s (d2d, read+write)", copy_gbs);
  if (gemm_tflops > 0) std::printf(" | cuBLASLt bf16 GEMM 8192^3 %.1f TFLOP/s", gemm_tflops);
  std::printf("\n%-22s %-26s %10s %12s %9s\n", "kernel", "shape", "median ms", "rate", "% ceiling");
  auto row_bw = [&](const char* name, const std::string& shape, double bytes, const std::function<void()>& fn) {
    const double ms = time_ms(s, warm, reps, fn);
    const double gbs = bytes / (ms * 1e6);
    std::printf("%-22s %-26s %10.4f %8.1f GB/s %8.1f%%\n", name, shape.c_str(), ms, gbs, 100 * gbs / copy_gbs);
  };
  auto row_fl = [&](const char* name, const std::string& shape, double flops, const std::function<void()>& fn) {
    const double ms = time_ms(s, warm, reps, fn);
    const double tf = flops / (ms * 1e9);
    if (gemm_tflops > 0)
      std::printf("%-22s %-26s %10.4f %6.1f TFLOP/s %8.1f%%\n", name, shape.c_str(), ms, tf, 100 * tf / gemm_tflops);
    else
      std::printf("%-22s %-26s %10.4f %6.3f TFLOP/s %9s\n", name, shape.c_str(), ms, tf, "-");
  };
  const std::string nc = std::to_string(N) + "x" + std::to_string(C);

  // Layer norm (fused residual): reads x, residual, writes sum, y (bf16) + stats.
  bf16* x = d.rand_bf16(N * C, rng);
  bf16* r = d.rand_bf16(N * C, rng);
  bf16* sum = d.alloc<bf16>(N * C);
  bf16* y = d.alloc<bf16>(N * C);
  bf16* g = d.rand_bf16(C, rng);
  bf16* bb = d.rand_bf16(C, rng);
  float* mean = d.alloc<float>(N);
  float* rstd = d.alloc<float>(N);
  row_bw("residual_layernorm", nc, 4.0 * N * C * 2 + 8.0 * N, [&] {
    cuda::layernorm_fwd({x, r, sum, g, bb, y, mean, rstd, N, C, 1e-5f}, s);
  });
  bf16* dy = d.rand_bf16(N * C, rng);
  bf16* dx = d.alloc<bf16>(N * C);
  float* dg = d.alloc<float>(C);
  float* db = d.alloc<float>(C);
  float* lscr = d.alloc<float>(cuda::layernorm_bwd_scratch_floats(N, C));
  row_bw("layernorm_bwd", nc, 4.0 * N * C * 2 + 8.0 * N, [&] {
    cuda::layernorm_bwd({dy, sum, g, mean, rstd, r, dx, dg, db, lscr, N, C}, s);
  });
  // GELU on the MLP's 4C activations.
  bf16* h4 = d.rand_bf16(N * 4 * C, rng);
  bf16* o4 = d.alloc<bf16>(N * 4 * C);
  row_bw("gelu", std::to_string(N) + "x" + std::to_string(4 * C), 2.0 * N * 4 * C * 2,
         [&] { cuda::gelu_fwd(h4, o4, N * 4 * C, s); });
  row_bw("gelu_bwd", std::to_string(N) + "x" + std::to_string(4 * C), 3.0 * N * 4 * C * 2,
         [&] { cuda::gelu_bwd(o4, h4, o4, N * 4 * C, s); });
  row_bw("add", nc, 3.0 * N * C * 2, [&] { cuda::add(x, r, y, N * C, s); });
  float* bgs = d.alloc<float>(cuda::bias_grad_scratch_floats(N, 4 * C));
  float* bg = d.alloc<float>(4 * C);
  row_bw("bias_grad", std::to_string(N) + "x" + std::to_string(4 * C), 2.0 * N * 4 * C,
         [&] { cuda::bias_grad(h4, bg, bgs, N, 4 * C, s); });
  // Embedding.
  int32_t* tok = d.rand_tokens(N, static_cast<int32_t>(V), rng);
  bf16* wte = d.rand_bf16(V * C, rng);
  bf16* wpe = d.rand_bf16(T * C, rng);
  row_bw("embedding", std::to_string(N) + " tok, C=" + std::to_string(C), 3.0 * N * C * 2,
         [&] { cuda::embedding_fwd({tok, wte, wpe, y, B, T, C, V, T, nullptr}, s); });
  float* dwte = d.alloc<float>(V * C);
  float* dwpe = d.alloc<float>(T * C);
  int32_t* escr = d.alloc<int32_t>(cuda::embedding_bwd_scratch_ints(N, V));
  row_bw("embedding_bwd", std::to_string(N) + " tok, C=" + std::to_string(C), N * C * (2.0 + 8.0 + 8.0),
         [&] { cuda::embedding_bwd({dy, tok, dwte, dwpe, escr, B, T, C, V, T, nullptr}, s); });
  // Fused classifier over the vocabulary.
  bf16* logits = d.rand_bf16(N * V, rng);
  float* lse = d.alloc<float>(N);
  float* loss = d.alloc<float>(1);
  float* xscr = d.alloc<float>(cuda::softmax_xent_scratch_floats(N));
  const std::string nv = std::to_string(N) + "x" + std::to_string(V);
  row_bw("softmax_xent", nv, 2.0 * N * V, [&] { cuda::softmax_xent_fwd({logits, tok, lse, loss, xscr, N, V}, s); });
  float* one = d.rand_f32(1, rng, 1, 1);
  bf16* dlog = d.alloc<bf16>(N * V);
  row_bw("softmax_xent_bwd", nv, 4.0 * N * V, [&] { cuda::softmax_xent_bwd({one, logits, tok, lse, dlog, N, V}, s); });
  row_bw("softmax", nv, 4.0 * N * V, [&] { cuda::softmax_fwd(logits, dlog, N, V, s); });
  // Optimizer over the flat buffers: f32 param/m/v read+write, f32 grad read, bf16 write.
  float* pm = d.rand_f32(P, rng, -0.1f, 0.1f);
  float* gm = d.rand_f32(P, rng, -0.01f, 0.01f);
  float* mm = d.rand_f32(P, rng, -0.001f, 0.001f);
  float* vm = d.rand_f32(P, rng, 0.0f, 0.001f);
  bf16* wm = d.alloc<bf16>(P);
  row_bw("adamw", std::to_string(P) + " params", P * (4.0 * 2 * 3 + 4 + 2), [&] {
    cuda::adamw({pm, gm, mm, vm, nullptr, P, 1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f, 10}, wm, 7, s);
  });
  float* nscr = d.alloc<float>(cuda::global_norm_scratch_floats(P) + 1);
  row_bw("global_norm", std::to_string(P) + " params", 4.0 * P,
         [&] { cuda::global_norm_sq(gm, P, nscr + 1, nscr, s); });
  // Causal flash attention, head dims 64 and 128 (FLOPs: fwd 4·B·H·T²·D / 2, bwd 2.5x).
  for (int64_t D : {int64_t(emu ? 16 : 64), int64_t(emu ? 32 : 128)}) {
    const int64_t Ha = emu ? H : (D == 64 ? 12 : 16), Ca = Ha * D, Ta = emu ? T : 2048, Ba = emu ? B : 4;
    bf16* qkv = d.rand_bf16(Ba * Ta * 3 * Ca, rng);
    bf16* out = d.alloc<bf16>(Ba * Ta * Ca);
    float* alse = d.alloc<float>(Ba * Ha * Ta);
    const double fl = 4.0 * Ba * Ha * Ta * Ta * D / 2;
    const std::string shp = "B" + std::to_string(Ba) + " H" + std::to_string(Ha) + " T" + std::to_string(Ta) + " D" +
                            std::to_string(D);
    row_fl("attention_fwd", shp, fl, [&] { cuda::attention_fwd({qkv, out, alse, Ba, Ta, Ca, Ha}, s); });
    bf16* dout = d.rand_bf16(Ba * Ta * Ca, rng);
    bf16* dqkv = d.alloc<bf16>(Ba * Ta * 3 * Ca);
    float* ascr = d.alloc<float>(cuda::attention_bwd_scratch_floats(Ba, Ta, Ca, Ha));
    row_fl("attention_bwd", shp, 2.5 * fl,
           [&] { cuda::attention_bwd({dout, qkv, out, alse, dqkv, ascr, Ba, Ta, Ca, Ha}, s); });
  }
  std::printf("baselines: cuDNN / PyTorch peers are measured by tests/gpu/run.sh (torch SDPA, layer_norm, fused AdamW)\n");
  CUDA_CHECK(cudaStreamSynchronize(s));
  CUDA_CHECK(cudaStreamDestroy(s));
  return 0;
}

}  // namespace loom
