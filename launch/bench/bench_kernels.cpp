// bench_kernels.cpp: `loom bench kernels`: every kernel family on a GPT-2 124M training shape
// (the memory-bound ones at B=16, T=1024, C=768, V=50257, where launch overhead no longer
// hides the kernel), timed with CUDA events (median of repeats after warm-up), with the bytes
// or FLOPs of its floor, the achieved rate, and that rate as a share of a ceiling measured in
// the same run: device-to-device copy bandwidth for memory-bound kernels, the bf16 GEMM rate of
// the CUDA backend's cuBLASLt products for attention. Each row also says how many blocks of
// the launch's largest kernel fit on one SM (cudaOccupancyMaxActiveBlocksPerMultiprocessor),
// with its block size. Beside attention, cuDNN's fused flash attention on the same inputs (with
// the speedup loom/cuDNN = cuDNN ms / loom ms and the largest output difference), and cuDNN's
// LSTM (bench_cudnn.h) where CMake found cuDNN. Under the emulator the same code runs on tiny
// shapes, once, to show the kernels run and agree with the launch contract -- its times mean
// nothing, and occupancy and the cuDNN baselines read "n/a (emulator)".
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <unordered_set>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/backend/cuda/cuda_backend.h"
#include "launch/bench/bench_kernels.h"
#include "launch/bench/bench_cudnn.h"
#include "kernels/common/cuda_check.h"
#include "core/dtype.h"
#include "core/rng.h"
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

// LOOM_HAVE_CUDNN: set by CMake for the real backend when it found cuDNN (bench_cudnn.cpp).
#ifndef LOOM_HAVE_CUDNN
#define LOOM_HAVE_CUDNN 0
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
  template <typename T>
  T* upload(const std::vector<T>& h) {
    T* d = alloc<T>(h.size());
    CUDA_CHECK(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
    return d;
  }
  // Random bf16 values in [-1, 1) (never zeros), uploaded.
  bf16* rand_bf16(size_t n, Rng& r) {
    std::vector<bf16> h(n);
    for (auto& v : h) v = to_bf16(2 * r.uniform() - 1);
    return upload(h);
  }
  float* rand_f32(size_t n, Rng& r, float lo, float hi) {
    std::vector<float> h(n);
    for (auto& v : h) v = lo + (hi - lo) * r.uniform();
    return upload(h);
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

// The occupancy cell of a row: what `launch` queues on s is captured into a CUDA graph (not
// run), whose kernel nodes carry each kernel's function, grid, block and dynamic shared memory,
// so the kernels stay `static` in their .cu files and still answer
// cudaOccupancyMaxActiveBlocksPerMultiprocessor. The cell describes the launch's largest
// kernel (most threads), "6 blk/SM x256", and counts the other launches ("+2 launches"); where the
// query fails it gives the launch shape and says n/a.
std::string occupancy_cell([[maybe_unused]] cudaStream_t s, [[maybe_unused]] const std::function<void()>& launch) {
#if LOOM_SIMT_EMULATION
  return "n/a (emulator)";
#else
  cudaGraph_t graph = nullptr;
  CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  launch();
  CUDA_CHECK(cudaStreamEndCapture(s, &graph));
  size_t count = 0;
  CUDA_CHECK(cudaGraphGetNodes(graph, nullptr, &count));
  std::vector<cudaGraphNode_t> nodes(count);
  CUDA_CHECK(cudaGraphGetNodes(graph, nodes.data(), &count));
  cudaKernelNodeParams big{};
  int64_t big_threads = -1, kernels = 0;
  std::string why;
  for (cudaGraphNode_t node : nodes) {
    cudaGraphNodeType type{};
    CUDA_CHECK(cudaGraphNodeGetType(node, &type));
    if (type != cudaGraphNodeTypeKernel) continue;
    ++kernels;
    cudaKernelNodeParams p{};
    const cudaError_t e = cudaGraphKernelNodeGetParams(node, &p);
    if (e != cudaSuccess) {
      why = cudaGetErrorString(e);
      cudaGetLastError();
      continue;
    }
    const int64_t threads = int64_t(p.gridDim.x) * p.gridDim.y * p.gridDim.z * p.blockDim.x * p.blockDim.y * p.blockDim.z;
    if (threads > big_threads) big_threads = threads, big = p;
  }
  CUDA_CHECK(cudaGraphDestroy(graph));
  if (big_threads < 0) return "n/a (" + (kernels ? why : std::string("no kernel")) + ")";
  const int block = int(big.blockDim.x * big.blockDim.y * big.blockDim.z);
  const std::string more = kernels > 1 ? " +" + std::to_string(kernels - 1) + (kernels > 2 ? " launches" : " launch") : "";
  int blocks = 0;
  const cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, big.func, block, big.sharedMemBytes);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return "grid " + std::to_string(big.gridDim.x * big.gridDim.y * big.gridDim.z) + " x" + std::to_string(block) +
           ", smem " + std::to_string(big.sharedMemBytes) + ": n/a (" + cudaGetErrorString(e) + ")" + more;
  }
  return std::to_string(blocks) + " blk/SM x" + std::to_string(block) + more;
#endif
}

// Why there is no cuDNN baseline in this build ("" where there is one).
const char* cudnn_absent() {
  if (LOOM_SIMT_EMULATION) return "emulator";
  return LOOM_HAVE_CUDNN ? "" : "built without cuDNN";
}

// At most n characters of a reason, for a table cell (the full text is printed below the rows).
std::string clip(const std::string& why, size_t n = 90) { return why.size() <= n ? why : why.substr(0, n - 3) + "..."; }

// The baseline cell beside a loom row: " | cuDNN 0.3120 ms 110.1 TFLOP/s, loom/cuDNN 0.87x".
std::string vs_cudnn(bool ok, double cudnn_ms, double loom_ms, double flops, const std::string& why) {
  if (!ok) return " | cuDNN n/a (" + clip(why) + ")";
  char b[160];
  std::snprintf(b, sizeof b, " | cuDNN %.4f ms %.1f TFLOP/s, loom/cuDNN %.2fx", cudnn_ms, flops / (cudnn_ms * 1e9),
                cudnn_ms / loom_ms);
  return b;
}

// Largest |a - b| over n bf16 device values, and the largest |a| (for scale).
std::pair<float, float> max_diff_bf16(const bf16* a, const bf16* b, size_t n) {
  std::vector<bf16> ha(n), hb(n);
  CUDA_CHECK(cudaMemcpy(ha.data(), a, n * 2, cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(hb.data(), b, n * 2, cudaMemcpyDeviceToHost));
  float diff = 0, mag = 0;
  for (size_t i = 0; i < n; ++i) {
    const float x = from_bf16(ha[i]), y = from_bf16(hb[i]);
    diff = std::max(diff, std::fabs(x - y));
    mag = std::max(mag, std::fabs(x));
  }
  return {diff, mag};
}

}  // namespace

// Prints the table; returns 0.
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
  // The CUDA backend: its cuBLASLt products (engine/backend/cuda/lt_matmul.h) give the GEMM
  // ceiling, and the recurrent launchers call them in its stream.
  auto be = make_cuda_backend(nullptr);
  LOOM_CHECK(be, "bench kernels: the CUDA backend did not start");
  const cudaStream_t bs = cuda_backend_stream(*be);
  const cuda::Gemm gemm = cuda_backend_gemm(*be);
  // GPT-2 124M training shapes: B=16 sequences of T=1024, C=768, H=12, the 50257-token
  // vocabulary and its P parameters; tiny under emulation.
  const int64_t B = emu ? 1 : 16, T = emu ? 32 : 1024, C = emu ? 64 : 768, H = emu ? 2 : 12, V = emu ? 96 : 50257;
  const int64_t N = B * T, P = emu ? 4096 : 124439808;

  // Ceiling 1: device-to-device copy bandwidth (read + write counted).
  const size_t copy_bytes = emu ? (1u << 16) : (size_t(1) << 30);
  char* src = d.alloc<char>(copy_bytes);
  char* dst = d.alloc<char>(copy_bytes);
  CUDA_CHECK(cudaMemset(src, 1, copy_bytes));
  const double copy_ms = time_ms(s, warm, reps, [&] {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, copy_bytes, cudaMemcpyDeviceToDevice, s));
  });
  const double copy_gbs = 2.0 * copy_bytes / (copy_ms * 1e6);

  // Ceiling 2: a bf16 GEMM (8192^3, f32 accumulate) through the backend's products, the
  // tensor-core rate this card reaches. Not under the emulator, whose products run on the CPU.
  double gemm_tflops = 0;
  if (!emu) {
    const int64_t n = 8192;
    const cuda::GemmCall g{.m = n, .n = n, .k = n,
                           .A = d.rand_bf16(n * n, rng), .a_dtype = DType::BF16, .lda = n,
                           .B = d.rand_bf16(n * n, rng), .b_dtype = DType::BF16, .ldb = n,
                           .C = d.alloc<bf16>(n * n), .c_dtype = DType::BF16, .ldc = n};
    const double ms = time_ms(bs, 3, 10, [&] { gemm(g); });
    gemm_tflops = 2.0 * n * n * n / (ms * 1e9);
  }

  std::printf("loom bench kernels%s\n", emu ? " (SIMT emulator: tiny shapes, times are not GPU times)" : "");
  std::printf("ceilings measured in this run: copy %.1f GB/s (d2d, read+write)", copy_gbs);
  if (gemm_tflops > 0) std::printf(" | cuBLASLt bf16 GEMM 8192^3 %.1f TFLOP/s", gemm_tflops);
  std::printf("\n%-22s %-26s %10s %12s %9s  %-26s%s\n", "kernel", "shape", "median ms", "rate", "% ceiling",
              "occupancy (largest kernel)", " | baseline (attention)");
  std::fflush(stdout);
  // Memory-bound rows count their floor, not their traffic: the fewest bytes the kernel must
  // move between device memory and the chip -- each input read once, each output written once,
  // an accumulated (+=) output read and written, a gathered table row counted once however many
  // tokens share it. rate = floor bytes / time, so "% ceiling" is the floor's time over the
  // measured time at the copy bandwidth above, and a kernel that moves more than its floor shows
  // it as a lower percentage, not as more GB/s: softmax_fwd reads each row twice (statistics,
  // then the pass that writes) yet is credited one read and one write, 4·N·V bytes.
  auto row_bw = [&](const char* name, const std::string& shape, double bytes, const std::function<void()>& fn) {
    const std::string occ = occupancy_cell(s, fn);
    const double ms = time_ms(s, warm, reps, fn);
    const double gbs = bytes / (ms * 1e6);
    std::printf("%-22s %-26s %10.4f %8.1f GB/s %8.1f%%  %s\n", name, shape.c_str(), ms, gbs, 100 * gbs / copy_gbs,
                occ.c_str());
    std::fflush(stdout);
  };
  // `extra(ms)`, when given, is printed at the end of the row (the library baseline beside it).
  auto row_fl = [&](const char* name, const std::string& shape, double flops, const std::function<void()>& fn,
                    const std::function<std::string(double)>& extra = nullptr) {
    const std::string occ = occupancy_cell(s, fn);
    const double ms = time_ms(s, warm, reps, fn);
    const double tf = flops / (ms * 1e9);
    if (gemm_tflops > 0)
      std::printf("%-22s %-26s %10.4f %6.1f TFLOP/s %8.1f%%  %-26s", name, shape.c_str(), ms, tf,
                  100 * tf / gemm_tflops, occ.c_str());
    else
      std::printf("%-22s %-26s %10.4f %6.3f TFLOP/s %9s  %-26s", name, shape.c_str(), ms, tf, "-", occ.c_str());
    std::printf("%s\n", extra ? extra(ms).c_str() : "");
    std::fflush(stdout);
    return ms;
  };
  const std::string nc = std::to_string(N) + "x" + std::to_string(C);
  const std::string n4c = std::to_string(N) + "x" + std::to_string(4 * C);

  // Layer norm, fused with the residual add: reads x, residual, g, b; writes sum, y, mean, rstd.
  bf16* x = d.rand_bf16(N * C, rng);
  bf16* r = d.rand_bf16(N * C, rng);
  bf16* sum = d.alloc<bf16>(N * C);
  bf16* y = d.alloc<bf16>(N * C);
  bf16* g = d.rand_bf16(C, rng);
  bf16* bb = d.rand_bf16(C, rng);
  float* mean = d.alloc<float>(N);
  float* rstd = d.alloc<float>(N);
  row_bw("residual_layernorm", nc, 4.0 * N * C * 2 + 2.0 * C * 2 + 2.0 * N * 4, [&] {
    cuda::layernorm_fwd({.x = x, .residual = r, .sum = sum, .g = g, .b = bb, .y = y, .mean = mean, .rstd = rstd,
                         .N = N, .C = C, .eps = 1e-5f},
                        s);
  });
  // Backward: reads dy, x, dresid, g, mean, rstd; writes dx; accumulates dg, db (f32).
  bf16* dy = d.rand_bf16(N * C, rng);
  bf16* dx = d.alloc<bf16>(N * C);
  float* dg = d.alloc<float>(C);
  float* db = d.alloc<float>(C);
  float* lscr = d.alloc<float>(cuda::layernorm_bwd_scratch_floats(N, C));
  row_bw("layernorm_bwd", nc, 4.0 * N * C * 2 + C * 2.0 + 2.0 * N * 4 + 2.0 * C * 8, [&] {
    cuda::layernorm_bwd({.dy = dy, .x = sum, .g = g, .mean = mean, .rstd = rstd, .dresid = r, .dx = dx, .dg = dg,
                         .db = db, .scratch = lscr, .N = N, .C = C},
                        s);
  });
  // GELU on the MLP's 4C activations: x in, y out; backward dy, x in, dx out.
  bf16* h4 = d.rand_bf16(N * 4 * C, rng);
  bf16* o4 = d.alloc<bf16>(N * 4 * C);
  row_bw("gelu", n4c, 2.0 * N * 4 * C * 2, [&] { cuda::gelu_fwd(h4, o4, N * 4 * C, s); });
  row_bw("gelu_bwd", n4c, 3.0 * N * 4 * C * 2, [&] { cuda::gelu_bwd(o4, h4, o4, N * 4 * C, s); });
  row_bw("add", nc, 3.0 * N * C * 2, [&] { cuda::add(x, r, y, N * C, s); });
  // Bias gradient of the MLP's first product: reads dy [N, 4C], accumulates db [4C] (f32).
  float* bgs = d.alloc<float>(cuda::bias_grad_scratch_floats(N, 4 * C));
  float* bg = d.alloc<float>(4 * C);
  row_bw("bias_grad", n4c, N * 4.0 * C * 2 + 4.0 * C * 8, [&] { cuda::bias_grad(h4, bg, bgs, N, 4 * C, s); });
  // Embedding: reads the tokens, the distinct wte rows they name and the T wpe rows (shared by
  // the B sequences); writes out. Backward: reads dout and the tokens; accumulates (f32) the
  // same wte rows and the T wpe rows.
  std::vector<int32_t> tokens(static_cast<size_t>(N));
  for (auto& t : tokens) t = static_cast<int32_t>(rng.below(V));
  const double wte_rows = double(std::unordered_set<int32_t>(tokens.begin(), tokens.end()).size());
  int32_t* tok = d.upload(tokens);
  bf16* wte = d.rand_bf16(V * C, rng);
  bf16* wpe = d.rand_bf16(T * C, rng);
  const std::string emb = std::to_string(N) + " tok, C=" + std::to_string(C);
  row_bw("embedding", emb, N * 4.0 + wte_rows * C * 2 + T * C * 2.0 + N * C * 2.0, [&] {
    cuda::embedding_fwd({.tokens = tok, .wte = wte, .wpe = wpe, .out = y, .B = B, .T = T, .C = C, .V = V, .maxT = T,
                         .pos0 = nullptr},
                        s);
  });
  float* dwte = d.alloc<float>(V * C);
  float* dwpe = d.alloc<float>(T * C);
  int32_t* escr = d.alloc<int32_t>(cuda::embedding_bwd_scratch_ints(N, V));
  row_bw("embedding_bwd", emb, N * C * 2.0 + N * 4.0 + wte_rows * C * 8 + T * C * 8.0, [&] {
    cuda::embedding_bwd({.dout = dy, .tokens = tok, .dwte = dwte, .dwpe = dwpe, .scratch = escr, .B = B, .T = T,
                         .C = C, .V = V, .maxT = T, .pos0 = nullptr},
                        s);
  });
  // Fused classifier over the vocabulary. Forward: reads logits and targets, writes lse and
  // the loss. Backward: reads logits, targets, lse; writes dlogits. Plain softmax: x in, y out.
  bf16* logits = d.rand_bf16(N * V, rng);
  float* lse = d.alloc<float>(N);
  float* loss = d.alloc<float>(1);
  float* xscr = d.alloc<float>(cuda::softmax_xent_scratch_floats(N));
  const std::string nv = std::to_string(N) + "x" + std::to_string(V);
  row_bw("softmax_xent", nv, N * V * 2.0 + N * 8.0 + 4, [&] {
    cuda::softmax_xent_fwd({.logits = logits, .targets = tok, .lse = lse, .loss = loss, .scratch = xscr, .N = N, .V = V},
                           s);
  });
  float* one = d.rand_f32(1, rng, 1, 1);
  bf16* dlog = d.alloc<bf16>(N * V);
  row_bw("softmax_xent_bwd", nv, N * V * 4.0 + N * 8.0 + 4, [&] {
    cuda::softmax_xent_bwd({.dloss = one, .logits = logits, .targets = tok, .lse = lse, .dlogits = dlog, .N = N, .V = V},
                           s);
  });
  row_bw("softmax", nv, N * V * 4.0, [&] { cuda::softmax_fwd(logits, dlog, N, V, s); });
  // Optimizer over the flat buffers: f32 param/m/v read+write, f32 grad read, bf16 write.
  float* pm = d.rand_f32(P, rng, -0.1f, 0.1f);
  float* gm = d.rand_f32(P, rng, -0.01f, 0.01f);
  float* mm = d.rand_f32(P, rng, -0.001f, 0.001f);
  float* vm = d.rand_f32(P, rng, 0.0f, 0.001f);
  bf16* wm = d.alloc<bf16>(P);
  row_bw("adamw", std::to_string(P) + " params", P * (4.0 * 2 * 3 + 4 + 2), [&] {
    cuda::adamw({.param = pm, .grad = gm, .m = mm, .v = vm, .decay = nullptr, .n = P, .lr = 1e-4f, .beta1 = 0.9f,
                 .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f, .grad_scale = 1.0f, .step = 10},
                wm, 7, s);
  });
  float* nscr = d.alloc<float>(cuda::global_norm_scratch_floats(P) + 1);
  row_bw("global_norm", std::to_string(P) + " params", 4.0 * P,
         [&] { cuda::global_norm_sq(gm, P, nscr + 1, nscr, s); });
  // Attention's device buffers for one shape: qkv and dout random, the rest the kernels write.
  struct AttnBuffers {
    bf16 *qkv, *out, *dout, *dqkv;
    float *lse, *scratch;
  };
  auto attn_buffers = [&](int64_t Ba, int64_t Ta, int64_t Ca, int64_t Ha) {
    AttnBuffers ab;
    ab.qkv = d.rand_bf16(Ba * Ta * 3 * Ca, rng);
    ab.out = d.alloc<bf16>(Ba * Ta * Ca);
    ab.lse = d.alloc<float>(Ba * Ha * Ta);
    ab.dout = d.rand_bf16(Ba * Ta * Ca, rng);
    ab.dqkv = d.alloc<bf16>(Ba * Ta * 3 * Ca);
    ab.scratch = d.alloc<float>(cuda::attention_bwd_scratch_floats(Ba, Ta, Ca, Ha));
    return ab;
  };
  // Causal flash attention, head dims 64 and 128 (FLOPs: fwd 4·B·H·T²·D / 2, bwd 2.5x), with
  // cuDNN's fused flash attention on the same qkv and dout (its own out, stats and dqkv) beside.
  std::vector<std::string> cudnn_notes;
  for (int64_t D : {int64_t(emu ? 16 : 64), int64_t(emu ? 32 : 128)}) {
    const int64_t Ha = emu ? H : (D == 64 ? 12 : 16), Ca = Ha * D, Ta = emu ? T : 2048, Ba = emu ? B : 4;
    const AttnBuffers ab = attn_buffers(Ba, Ta, Ca, Ha);
    bf16 *qkv = ab.qkv, *out = ab.out, *dout = ab.dout, *dqkv = ab.dqkv;
    float *alse = ab.lse, *ascr = ab.scratch;
    const double fl = 4.0 * Ba * Ha * Ta * Ta * D / 2;
    char shp[64];
    std::snprintf(shp, sizeof shp, "B%lld H%lld T%lld D%lld", (long long)Ba, (long long)Ha, (long long)Ta,
                  (long long)D);
    cudnn_bench::AttnResult cr;
    cr.why = cudnn_absent();
    bf16* c_out = nullptr;
    bf16* c_dqkv = nullptr;
#if LOOM_HAVE_CUDNN
    c_out = d.alloc<bf16>(Ba * Ta * Ca);
    float* c_stats = d.alloc<float>(Ba * Ha * Ta);
    c_dqkv = d.alloc<bf16>(Ba * Ta * 3 * Ca);
    cr = cudnn_bench::attention({qkv, c_out, c_stats, dout, c_dqkv}, Ba, Ta, Ca, Ha, s, warm, reps);
#endif
    row_fl(
        "attention_fwd", shp, fl,
        [&] { cuda::attention_fwd({.qkv = qkv, .out = out, .lse = alse, .B = Ba, .T = Ta, .C = Ca, .H = Ha}, s); },
        [&](double ms) { return vs_cudnn(cr.fwd_ok, cr.fwd_ms, ms, fl, cr.why); });
    row_fl(
        "attention_bwd", shp, 2.5 * fl,
        [&] {
          cuda::attention_bwd({.dout = dout, .qkv = qkv, .out = out, .lse = alse, .dqkv = dqkv, .scratch = ascr,
                               .B = Ba, .T = Ta, .C = Ca, .H = Ha},
                              s);
        },
        [&](double ms) { return vs_cudnn(cr.bwd_ok, cr.bwd_ms, ms, 2.5 * fl, cr.why); });
    if (cr.fwd_ok || cr.bwd_ok) {
      CUDA_CHECK(cudaStreamSynchronize(s));
      std::string line = "  cuDNN D" + std::to_string(D) + ": " + cr.engines;
      char b[200];
      std::snprintf(b, sizeof b, ", graphs+plans built in %.1f s", cr.build_s);
      line += b;
      if (cr.fwd_ok) {
        const auto [diff, mag] = max_diff_bf16(out, c_out, size_t(Ba * Ta * Ca));
        std::snprintf(b, sizeof b, "; max|out loom - cuDNN| %.3g (max|out| %.3g)", diff, mag);
        line += b;
      }
      if (cr.bwd_ok && cr.fwd_ok) {
        const auto [diff, mag] = max_diff_bf16(dqkv, c_dqkv, size_t(Ba * Ta * 3 * Ca));
        std::snprintf(b, sizeof b, "; max|dqkv loom - cuDNN| %.3g (max|dqkv| %.3g)", diff, mag);
        line += b;
      }
      std::printf("%s\n", line.c_str());
    }
    if (!(cr.fwd_ok && cr.bwd_ok) && cr.why.size() > 90)
      cudnn_notes.push_back("cuDNN attention D" + std::to_string(D) + ": " + cr.why);
    std::fflush(stdout);
  }

  // The encoder-decoder modes at D = 64 (16 emulated): bidirectional self-attention over a
  // padded batch (key lengths 3/4 of T on every other row; FLOPs counted for the whole T x T
  // square, fwd 4·B·H·T²·D, bwd 2.5x), cross-attention of T/2 decoder queries over T encoder
  // keys (fwd 4·B·H·Tq·Tk·D), and a one-query decode step against the cached encoder keys and
  // values (bandwidth: the kv rows, bytes).
  {
    const int64_t D = emu ? 16 : 64, Ha = emu ? H : 12, Ca = Ha * D, Ta = emu ? T : 2048, Ba = emu ? B : 4;
    const int64_t Tq = Ta / 2;
    const AttnBuffers ab = attn_buffers(Ba, Ta, Ca, Ha);
    bf16 *qkv = ab.qkv, *out = ab.out, *dout = ab.dout, *dqkv = ab.dqkv;
    float *alse = ab.lse, *ascr = ab.scratch;
    std::vector<int32_t> lens(static_cast<size_t>(Ba), static_cast<int32_t>(Ta));
    for (size_t b = 1; b < lens.size(); b += 2) lens[b] = int32_t(Ta * 3 / 4);
    const int32_t* klen = d.upload(lens);
    char shp[64];
    std::snprintf(shp, sizeof shp, "B%lld H%lld T%lld D%lld pad", (long long)Ba, (long long)Ha, (long long)Ta,
                  (long long)D);
    const double fl = 4.0 * Ba * Ha * Ta * Ta * D;
    row_fl("attention_bidir_fwd", shp, fl, [&] {
      cuda::attention_fwd({.qkv = qkv, .out = out, .lse = alse, .B = Ba, .T = Ta, .C = Ca, .H = Ha, .key_len = klen,
                           .causal = false},
                          s);
    });
    row_fl("attention_bidir_bwd", shp, 2.5 * fl, [&] {
      cuda::attention_bwd({.dout = dout, .qkv = qkv, .out = out, .lse = alse, .dqkv = dqkv, .scratch = ascr, .B = Ba,
                           .T = Ta, .C = Ca, .H = Ha, .key_len = klen, .causal = false},
                          s);
    });
    // Cross-attention's q [B, Tq, C] and kv [B, T, 2C] (and its dkv) are the leading parts of
    // the buffers above: only the shapes matter here.
    bf16* dq = d.alloc<bf16>(Ba * Tq * Ca);
    std::snprintf(shp, sizeof shp, "B%lld H%lld Tq%lld Tk%lld D%lld", (long long)Ba, (long long)Ha, (long long)Tq,
                  (long long)Ta, (long long)D);
    const double xfl = 4.0 * Ba * Ha * Tq * Ta * D;
    row_fl("cross_attention_fwd", shp, xfl, [&] {
      cuda::cross_attention_fwd({.q = dout, .kv = qkv, .out = out, .lse = alse, .B = Ba, .Tq = Tq, .Tk = Ta, .C = Ca,
                                 .H = Ha, .key_len = klen},
                                s);
    });
    row_fl("cross_attention_bwd", shp, 2.5 * xfl, [&] {
      cuda::cross_attention_bwd({.dout = dout, .q = dout, .kv = qkv, .out = out, .lse = alse, .dq = dq, .dkv = dqkv,
                                 .scratch = ascr, .B = Ba, .Tq = Tq, .Tk = Ta, .C = Ca, .H = Ha, .key_len = klen},
                                s);
    });
    std::snprintf(shp, sizeof shp, "B%lld H%lld Tn1 Tk%lld D%lld", (long long)Ba, (long long)Ha, (long long)Ta,
                  (long long)D);
    row_bw("cross_attention_decode", shp, 2.0 * Ba * Ta * 2 * Ca, [&] {
      cuda::cross_attention_decode(
          {.q = dout, .kv = qkv, .out = out, .Bq = Ba, .Tn = 1, .Bk = Ba, .Tk = Ta, .C = Ca, .H = Ha, .key_len = klen},
          s);
    });
    std::fflush(stdout);
  }

  // The recurrent decoder's attention step (kernels/rnn_attention) at a Luong-sized shape, every
  // target position at once (teacher forcing), with key padding. FLOPs: forward 2·B·Tq·Tk·(A+C)
  // for dot scores (tanh counted as one for additive: 4·B·Tq·Tk·A + 2·B·Tq·Tk·C); backward
  // twice the forward's products (dscore, dq, dkeys, dvalues).
  {
    const int64_t Br = emu ? 2 : 64, Tq = emu ? 9 : 50, Tk = emu ? 11 : 50, Ar = emu ? 16 : 512;
    bf16 *rq = d.rand_bf16(Br * Tq * Ar, rng), *rk = d.rand_bf16(Br * Tk * Ar, rng), *rv = d.rand_bf16(Ar, rng);
    bf16 *rctx = d.alloc<bf16>(Br * Tq * Ar), *rdctx = d.rand_bf16(Br * Tq * Ar, rng);
    bf16 *rdq = d.alloc<bf16>(Br * Tq * Ar), *rdk = d.alloc<bf16>(Br * Tk * Ar), *rdval = d.alloc<bf16>(Br * Tk * Ar);
    float *rprobs = d.alloc<float>(Br * Tq * Tk), *rdv = d.rand_f32(Ar, rng, -1, 1);
    float* rscr = d.alloc<float>(cuda::rnn_attention_bwd_scratch_floats(AttnScore::Additive, Br, Tq, Tk, Ar));
    std::vector<int32_t> lens(static_cast<size_t>(Br), static_cast<int32_t>(Tk));
    for (size_t b = 1; b < lens.size(); b += 2) lens[b] = int32_t(Tk * 3 / 4);
    const int32_t* klen = d.upload(lens);
    char shp[64];
    std::snprintf(shp, sizeof shp, "B%lld Tq%lld Tk%lld A%lld C%lld pad", (long long)Br, (long long)Tq, (long long)Tk,
                  (long long)Ar, (long long)Ar);
    for (AttnScore score : {AttnScore::Dot, AttnScore::Additive}) {
      const bool add = score == AttnScore::Additive;
      const double fl = double(Br * Tq * Tk) * ((add ? 4.0 : 2.0) * Ar + 2.0 * Ar);
      const bf16* v = add ? rv : nullptr;
      row_fl(add ? "rnn_attention_add_fwd" : "rnn_attention_dot_fwd", shp, fl, [&] {
        cuda::rnn_attention_fwd({.score = score, .q = rq, .keys = rk, .values = rk, .v = v, .key_len = klen,
                                 .ctx = rctx, .probs = rprobs, .B = Br, .Tq = Tq, .Tk = Tk, .A = Ar, .C = Ar},
                                s);
      });
      row_fl(add ? "rnn_attention_add_bwd" : "rnn_attention_dot_bwd", shp, 2.0 * fl, [&] {
        cuda::rnn_attention_bwd({.score = score, .dctx = rdctx, .q = rq, .keys = rk, .values = rk, .v = v,
                                 .key_len = klen, .probs = rprobs, .dq = rdq, .dkeys = rdk,
                                 .dvalues = rdval, .dv = add ? rdv : nullptr, .scratch = rscr, .B = Br, .Tq = Tq,
                                 .Tk = Tk, .A = Ar, .C = Ar},
                                s);
      });
    }
    std::fflush(stdout);
  }

  // LSTM: loom's layer (kernels/rnn: per-step cuBLASLt products + one fused cell kernel a step,
  // or the persistent kernel where w_hh fits on chip) and cuDNN's on the same shapes. One
  // unidirectional layer, input size H, FLOPs of the gate GEMMs only, 2·4H·(I+H)·B·T forward
  // and 3x that for forward + backward. The products run in the CUDA backend's stream.
  auto loom_lstm = [&](int64_t Hl, int64_t Bl, int64_t Tl, bool persistent) {
    const Cell cell = Cell::LSTM;
    const int64_t G = 4, W = rnn_saved_width(cell, Hl);
    bf16* lx = d.rand_bf16(Bl * Tl * Hl, rng);
    bf16* wih = d.rand_bf16(G * Hl * Hl, rng);
    bf16* whh = d.rand_bf16(G * Hl * Hl, rng);
    bf16* bih = d.rand_bf16(G * Hl, rng);
    bf16* bhh = d.rand_bf16(G * Hl, rng);
    float* st0 = d.rand_f32(2 * Bl * Hl, rng, -0.5f, 0.5f);
    bf16* ly = d.alloc<bf16>(Bl * Tl * Hl);
    float* stT = d.alloc<float>(2 * Bl * Hl);
    float* saved = d.alloc<float>(Bl * Tl * W);
    bf16* ldy = d.rand_bf16(Bl * Tl * Hl, rng);
    bf16* ldx = d.alloc<bf16>(Bl * Tl * Hl);
    float* dw = d.alloc<float>(2 * G * Hl * Hl + 2 * G * Hl);
    float* fscr = d.alloc<float>(cuda::rnn_fwd_scratch_floats(cell, Bl, Tl, Hl, Hl));
    float* bscr = d.alloc<float>(cuda::rnn_bwd_scratch_floats(cell, Bl, Tl, Hl, Hl));
    const cuda::RnnFwd f{.cell = cell, .x = lx, .w_ih = wih, .w_hh = whh, .b_ih = bih, .b_hh = bhh, .state0 = st0,
                         .y = ly, .stateT = stT, .saved = saved, .B = Bl, .S = Tl, .I = Hl, .H = Hl, .scratch = fscr,
                         .allow_persistent = persistent};
    const cuda::RnnBwd b{.cell = cell, .dy = ldy, .x = lx, .w_ih = wih, .w_hh = whh, .state0 = st0, .y = ly,
                         .saved = saved, .dx = ldx, .dw_ih = dw, .dw_hh = dw + G * Hl * Hl, .db_ih = dw + 2 * G * Hl * Hl,
                         .db_hh = dw + 2 * G * Hl * Hl + G * Hl, .B = Bl, .S = Tl, .I = Hl, .H = Hl, .scratch = bscr};
    const double fwd = time_ms(bs, warm, reps, [&] { cuda::rnn_fwd(f, gemm, bs); });
    const double both = time_ms(bs, warm, reps, [&] {
      cuda::rnn_fwd(f, gemm, bs);
      cuda::rnn_bwd(b, gemm, bs);
    });
    return std::pair<double, double>{fwd, both};
  };
  // The persistent kernel's regime first (w_hh of H=96 is 72 KiB of bf16), then the shapes of
  // the cuDNN comparison.
  {
    const int64_t Hp = emu ? 16 : 96, Bp = emu ? 2 : 64, Tp = emu ? 4 : 128;
    const double lfl = cudnn_bench::lstm_fwd_flops(Hp, Hp, Bp, Tp);
    const bool fits = cuda::rnn_persistent_fits(Cell::LSTM, Hp);
    const auto [pf, pb] = loom_lstm(Hp, Bp, Tp, true);
    const auto [sf, sb] = loom_lstm(Hp, Bp, Tp, false);
    std::printf("lstm loom H=%lld B=%lld T=%lld: persistent%s fwd %.3f ms %.3f TFLOP/s (fwd+bwd %.3f ms) | "
                "per-step fwd %.3f ms %.3f TFLOP/s (fwd+bwd %.3f ms) | persistent/per-step fwd %.2fx\n",
                (long long)Hp, (long long)Bp, (long long)Tp, fits ? "" : " (does not fit: per-step)", pf,
                lfl / (pf * 1e9), pb, sf, lfl / (sf * 1e9), sb, sf / pf);
    std::fflush(stdout);
  }
  // The two target shapes, and the small-H, large-batch, long-sequence end of the range.
  for (const auto& [Hfull, Bfull, Tfull] : {std::array<int64_t, 3>{512, 64, 128}, std::array<int64_t, 3>{1024, 32, 128},
                                            std::array<int64_t, 3>{256, 128, 256}}) {
    const int64_t Hl = emu ? Hfull / 32 : Hfull, Bl = emu ? 2 : Bfull, Tl = emu ? 4 : Tfull;
    const double lfl = cudnn_bench::lstm_fwd_flops(Hl, Hl, Bl, Tl);
    const auto [lf, lb] = loom_lstm(Hl, Bl, Tl, true);
    std::printf("lstm loom  H=%lld B=%lld T=%lld (bf16, f32 math): fwd %.3f ms %.3f TFLOP/s | fwd+bwd %.3f ms %.3f "
                "TFLOP/s\n",
                (long long)Hl, (long long)Bl, (long long)Tl, lf, lfl / (lf * 1e9), lb, 3 * lfl / (lb * 1e9));
    std::printf("lstm cudnn H=%lld B=%lld T=%lld", (long long)Hl, (long long)Bl, (long long)Tl);
    cudnn_bench::LstmResult lr;
    lr.why = cudnn_absent();
#if LOOM_HAVE_CUDNN
    lr = cudnn_bench::lstm(Hl, Bl, Tl, s, warm, reps);
#endif
    if (lr.ok)
      std::printf(" (%s, f32 math): fwd %.3f ms %.1f TFLOP/s | fwd+bwd %.3f ms %.1f TFLOP/s | loom/cuDNN fwd %.2fx, "
                  "fwd+bwd %.2fx\n",
                  lr.dtype.c_str(), lr.fwd_ms, lfl / (lr.fwd_ms * 1e9), lr.fwdbwd_ms, 3 * lfl / (lr.fwdbwd_ms * 1e9),
                  lr.fwd_ms / lf, lr.fwdbwd_ms / lb);
    else
      std::printf(": n/a (%s)\n", clip(lr.why, 160).c_str());
    if (!lr.ok && lr.why.size() > 160) cudnn_notes.push_back("cuDNN lstm H=" + std::to_string(Hl) + ": " + lr.why);
    std::fflush(stdout);
  }
  for (const auto& n : cudnn_notes) std::printf("%s\n", n.c_str());
#if LOOM_HAVE_CUDNN
  const std::string cudnn_name = cudnn_bench::version();
#else
  const std::string cudnn_name = std::string("cuDNN n/a (") + cudnn_absent() + ")";
#endif
  std::printf("baselines: %s for attention (fused flash attention, graph API) and LSTM (cudnnRNNForward + "
              "BackwardData/Weights_v8); PyTorch peers (SDPA, layer_norm, fused AdamW, nn.LSTM, GPT step) in "
              "tests/gpu/run.sh\n",
              cudnn_name.c_str());
  CUDA_CHECK(cudaStreamSynchronize(s));
  CUDA_CHECK(cudaStreamDestroy(s));
  return 0;
}

}  // namespace loom
