// softmax_xent.cu: the fused classifier loss on the GPU (and, through cuda_compat.h, under the
// SIMT emulator): forward log-sum-exp + mean cross-entropy, backward straight from the logits
// and the saved log-sum-exp, and a plain row softmax. The [N, V] probabilities are never
// stored: at V = 50304 they would be the largest activation of the step.
//
// Work split. A row of V logits is handled either by one warp (V <= kWarpRowMaxV: 8 rows a
// 256-thread block, no barriers) or by a whole 256-thread block (larger V, e.g. 50304: 100 KB
// a row, which one warp would stream far too slowly). Both shapes run the same code through
// row_max / row_sum, which pick warp or block reductions at compile time.
//
// Vector loads. Rows start at row * V elements, so with V % 8 != 0 (or an offset base
// pointer) rows are not 16-byte aligned. Each row is split into a scalar head up to the first
// 16-byte boundary, a body of 16-byte packs, and a scalar tail, so every V takes the vector
// path for all but at most 14 elements a row.
#include "kernels/common/cuda_compat.h"
#include "kernels/common/launch.cuh"
#include "kernels/common/reduce.cuh"
#include "kernels/common/vec.cuh"
#include "kernels/softmax_xent/softmax_xent.h"

#include <climits>
#include <cstdint>

#include "core/check.h"

namespace loom::cuda {
namespace {

constexpr int kBlock = 256;
// Up to 4096 logits (16 packs a lane) one warp keeps enough loads in flight; beyond that a
// block per row.
constexpr int kWarpRowMaxV = 4096;
static_assert(valid_block(kBlock));

using Bf16Pack = Pack128<__nv_bfloat16>;
constexpr int kPack = Bf16Pack::kSize;  // 8 bf16 in 16 bytes

// How one row is visited: `head` scalar elements up to the first 16-byte boundary, `packs`
// 16-byte packs, then the tail; head and tail together are `scalars` elements, visited one by
// one. When the row is read from one buffer and written to another whose addresses are not
// congruent modulo 16, no split serves both, and the whole row is scalar.
struct RowSplit {
  int head, packs, scalars;
  __device__ __forceinline__ int scalar_col(int j) const { return j < head ? j : j + kPack * packs; }
};

__device__ __forceinline__ RowSplit split_row(const void* in, const void* out, int V) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(in), b = reinterpret_cast<uintptr_t>(out);
  if (((a ^ b) & 15u) != 0) return RowSplit{V, 0, V};
  int head = int((16u - (a & 15u)) & 15u) / int(sizeof(__nv_bfloat16));
  head = head < V ? head : V;
  const int packs = (V - head) / kPack;
  return RowSplit{head, packs, V - kPack * packs};
}

// Reductions over the threads of one row: a warp or the whole block.
template <int kRowThreads, class Op>
__device__ __forceinline__ float row_reduce(float v, Op op, float identity) {
  if constexpr (kRowThreads == 32) {
    return warp_reduce(v, op);
  } else {
    return block_reduce(v, op, identity);
  }
}

// Online log-sum-exp of one thread's share of a row: a running max m and s = sum exp(x - m),
// rescaled when the max grows, so the row is read once. A NaN input reaches s (exp(NaN)),
// although fmaxf would hide it from m.
struct OnlineLse {
  float m = -INFINITY;
  float s = 0.f;

  __device__ __forceinline__ void add(float x) {
    if (x > m) {
      s = s * __expf(m - x) + 1.f;  // m = -inf at first: 0 * 0 + 1
      m = x;
    } else {
      s += __expf(x - m);
    }
  }
  // One rescale per pack at most: the max usually stops growing after a few packs.
  __device__ __forceinline__ void add(const Bf16Pack& p) {
    float x[kPack];
    float pm = -INFINITY;
#pragma unroll
    for (int k = 0; k < kPack; ++k) {
      x[k] = to_float(p[k]);
      pm = fmaxf(pm, x[k]);
    }
    if (pm > m) {
      s *= __expf(m - pm);
      m = pm;
    }
    float t = 0.f;
#pragma unroll
    for (int k = 0; k < kPack; ++k) t += __expf(x[k] - m);
    s += t;
  }
};

// Row statistics (max M, sum S of exp(x - M)) of the row at z, merged over its threads.
// t: this thread's index within the row's threads.
template <int kRowThreads>
__device__ __forceinline__ void row_stats(const __nv_bfloat16* z, int V, int t, float& M, float& S) {
  const RowSplit sp = split_row(z, z, V);
  OnlineLse acc;
  const __nv_bfloat16* body = z + sp.head;
#pragma unroll 4
  for (int p = t; p < sp.packs; p += kRowThreads) acc.add(load_128(body + p * kPack));
  for (int j = t; j < sp.scalars; j += kRowThreads) acc.add(to_float(z[sp.scalar_col(j)]));
  M = row_reduce<kRowThreads>(acc.m, MaxOp{}, -INFINITY);
  // A thread that saw no element (m = -inf) adds nothing; exp(-inf - M) would be NaN when
  // M is -inf too.
  S = row_reduce<kRowThreads>(acc.m == -INFINITY ? 0.f : acc.s * __expf(acc.m - M), SumOp{}, 0.f);
}

// out[c] = f(z[c], c) over this thread's share of a row (t: its index among the row's
// threads), 16-byte packs through the row's split, scalars for head and tail. The inputs are
// streamed (evict-first): these passes are the row's last readers. out may be z itself.
template <int kRowThreads, class F>
__device__ __forceinline__ void map_row(const __nv_bfloat16* z, __nv_bfloat16* out, int V, int t, F f) {
  const RowSplit sp = split_row(z, out, V);
#pragma unroll 2
  for (int p = t; p < sp.packs; p += kRowThreads) {
    const int c0 = sp.head + p * kPack;
    const Bf16Pack x = load_128_cs(z + c0);
    Bf16Pack o;
#pragma unroll
    for (int k = 0; k < kPack; ++k) o[k] = from_float<__nv_bfloat16>(f(to_float(x[k]), c0 + k));
    store_128_global(out + c0, o);
  }
  for (int j = t; j < sp.scalars; j += kRowThreads) {
    const int c = sp.scalar_col(j);
    out[c] = from_float<__nv_bfloat16>(f(to_float(z[c]), c));
  }
}

}  // namespace

// ---- forward ----------------------------------------------------------------------------

// lse[r] = log sum exp(z[r, :]); row_loss[r] = lse[r] - z[r, y[r]], 0 for the ignored target -1
// (padding), NaN for any other target outside the vocabulary: the mean then says so, instead of
// a read out of bounds.
template <int kRowThreads>
static __global__ void __launch_bounds__(kBlock)
    xent_fwd_kernel(const __nv_bfloat16* logits, const int32_t* targets, float* lse, float* row_loss,
                    int64_t N, int V) {
  constexpr int kRows = kBlock / kRowThreads;
  const int t = int(threadIdx.x) % kRowThreads;
  // The loop bound is uniform over the threads of a row, as the reductions need.
  for (int64_t r = int64_t(blockIdx.x) * kRows + threadIdx.x / kRowThreads; r < N; r += int64_t(gridDim.x) * kRows) {
    const __nv_bfloat16* z = logits + r * V;
    float M, S;
    row_stats<kRowThreads>(z, V, t, M, S);
    if (t == 0) {
      const float l = M + logf(S);
      const int32_t y = targets[r];
      lse[r] = l;
      row_loss[r] = (y >= 0 && y < V) ? l - to_float(z[y]) : y == kIgnoreTarget ? 0.f : NAN;
    }
  }
}

// loss[0] = mean of row_loss[0, N): one block, each thread summing a fixed stride in double,
// then a fixed tree. The order depends on N alone, so the loss is the same bits every run.
static __global__ void __launch_bounds__(kBlock) mean_kernel(const float* row_loss, float* loss, int64_t N) {
  double s = 0;
  for (int64_t i = threadIdx.x; i < N; i += kBlock) s += double(row_loss[i]);
  s = block_sum(s);
  if (threadIdx.x == 0) loss[0] = float(s / double(N));
}

// ---- backward ---------------------------------------------------------------------------

// dlogits = (exp(z - lse) - onehot(y)) * dloss / N, a zero row for the ignored target -1. Every element is read and then written
// by the same thread, so dlogits may be logits itself (no __restrict__ here on purpose).
template <int kRowThreads>
static __global__ void __launch_bounds__(kBlock)
    xent_bwd_kernel(const float* dloss, const __nv_bfloat16* logits, const int32_t* targets, const float* lse,
                    __nv_bfloat16* dlogits, int64_t N, int V) {
  constexpr int kRows = kBlock / kRowThreads;
  const int t = int(threadIdx.x) % kRowThreads;
  const float scale = dloss[0] / float(N);
  for (int64_t r = int64_t(blockIdx.x) * kRows + threadIdx.x / kRowThreads; r < N; r += int64_t(gridDim.x) * kRows) {
    const __nv_bfloat16* z = logits + r * V;
    __nv_bfloat16* d = dlogits + r * V;
    const float l = lse[r];
    const int32_t y = targets[r];
    // Any other bad target poisons its row rather than being silently dropped.
    const float sc = (y >= 0 && y < V) ? scale : y == kIgnoreTarget ? 0.f : NAN;
    map_row<kRowThreads>(z, d, V, t, [&](float x, int c) { return (__expf(x - l) - (c == y ? 1.f : 0.f)) * sc; });
  }
}

// ---- plain softmax ----------------------------------------------------------------------

// y = softmax(x) per row: statistics in one online pass, then a second pass that writes.
template <int kRowThreads>
static __global__ void __launch_bounds__(kBlock)
    softmax_kernel(const __nv_bfloat16* x, __nv_bfloat16* y, int64_t N, int V) {
  constexpr int kRows = kBlock / kRowThreads;
  const int t = int(threadIdx.x) % kRowThreads;
  for (int64_t r = int64_t(blockIdx.x) * kRows + threadIdx.x / kRowThreads; r < N; r += int64_t(gridDim.x) * kRows) {
    const __nv_bfloat16* z = x + r * V;
    __nv_bfloat16* o = y + r * V;
    float M, S;
    row_stats<kRowThreads>(z, V, t, M, S);
    const float inv = 1.f / S;
    map_row<kRowThreads>(z, o, V, t, [&](float x, int) { return __expf(x - M) * inv; });
  }
}

// ---- launchers --------------------------------------------------------------------------

namespace {

void check_shape(int64_t N, int64_t V, const char* what) {
  LOOM_CHECK(N > 0 && V > 0, what, ": empty shape [", N, ", ", V, "]");
  LOOM_CHECK(V <= INT_MAX, what, ": V = ", V, " does not fit the kernels' int columns");
}

// kRowThreads threads a row (a warp or the block), at most one wave of `kernel`: the blocks
// the occupancy calculator fits on each SM (6 of 256 threads at these kernels' 40 registers,
// not the 8 that threads alone allow); the row loops stride over the rest.
template <int kRowThreads, class Kernel>
int rows_grid(Kernel* kernel, int64_t rows) {
  return grid_for(rows * kRowThreads, kBlock, blocks_per_sm(kernel, kBlock, 0));
}

// f(std::integral_constant<int, threads a row>): a warp a row up to kWarpRowMaxV, else a block.
template <class F>
void with_row_threads(int V, F&& f) {
  with_value<32, kBlock>("softmax row threads", V <= kWarpRowMaxV ? 32 : kBlock, f);
}

bool overlaps(const void* a, size_t na, const void* b, size_t nb) {
  const auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
  return pa < pb + nb && pb < pa + na;
}

}  // namespace

size_t softmax_xent_scratch_floats(int64_t N) { return N > 0 ? size_t(N) : 0; }

void softmax_xent_fwd(const SoftmaxXentFwd& a, Stream s) {
  check_shape(a.N, a.V, "softmax_xent_fwd");
  LOOM_CHECK(a.logits && a.targets && a.lse && a.loss && a.scratch, "softmax_xent_fwd: null pointer");
  const size_t n = size_t(a.N) * sizeof(float);
  LOOM_CHECK(!overlaps(a.scratch, n, a.lse, n) && !overlaps(a.scratch, n, a.loss, sizeof(float)),
             "softmax_xent_fwd: scratch overlaps lse or loss");
  const auto* z = reinterpret_cast<const __nv_bfloat16*>(a.logits);
  const int V = int(a.V);
  with_row_threads(V, [&](auto r) {
    constexpr int R = decltype(r)::value;
    LOOM_LAUNCH((xent_fwd_kernel<R>), rows_grid<R>(xent_fwd_kernel<R>, a.N), kBlock, 0, s, z, a.targets, a.lse, a.scratch, a.N, V);
  });
  LOOM_LAUNCH(mean_kernel, 1, kBlock, 0, s, static_cast<const float*>(a.scratch), a.loss, a.N);
}

void softmax_xent_bwd(const SoftmaxXentBwd& a, Stream s) {
  check_shape(a.N, a.V, "softmax_xent_bwd");
  LOOM_CHECK(a.dloss && a.logits && a.targets && a.lse && a.dlogits, "softmax_xent_bwd: null pointer");
  // In place is fine; a partial overlap would let one row's writes reach another's reads.
  const size_t bytes = size_t(a.N) * size_t(a.V) * sizeof(bf16);
  LOOM_CHECK(static_cast<const void*>(a.dlogits) == static_cast<const void*>(a.logits) ||
                 !overlaps(a.dlogits, bytes, a.logits, bytes),
             "softmax_xent_bwd: dlogits overlaps logits without being them");
  const auto* z = reinterpret_cast<const __nv_bfloat16*>(a.logits);
  auto* d = reinterpret_cast<__nv_bfloat16*>(a.dlogits);
  const int V = int(a.V);
  with_row_threads(V, [&](auto r) {
    constexpr int R = decltype(r)::value;
    LOOM_LAUNCH((xent_bwd_kernel<R>), rows_grid<R>(xent_bwd_kernel<R>, a.N), kBlock, 0, s, a.dloss, z, a.targets, a.lse, d, a.N, V);
  });
}

void softmax_fwd(const bf16* x, bf16* y, int64_t N, int64_t V, Stream s) {
  check_shape(N, V, "softmax_fwd");
  LOOM_CHECK(x && y, "softmax_fwd: null pointer");
  const size_t bytes = size_t(N) * size_t(V) * sizeof(bf16);
  LOOM_CHECK(static_cast<const void*>(x) == static_cast<const void*>(y) || !overlaps(x, bytes, y, bytes),
             "softmax_fwd: y overlaps x without being it");
  const auto* xi = reinterpret_cast<const __nv_bfloat16*>(x);
  auto* yo = reinterpret_cast<__nv_bfloat16*>(y);
  with_row_threads(int(V), [&](auto r) {
    constexpr int R = decltype(r)::value;
    LOOM_LAUNCH((softmax_kernel<R>), rows_grid<R>(softmax_kernel<R>, N), kBlock, 0, s, xi, yo, N, int(V));
  });
}

}  // namespace loom::cuda
