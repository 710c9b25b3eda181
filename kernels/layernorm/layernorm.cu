// layernorm.cu: layer norm over the last dimension for bf16 activations, with f32 statistics
// and f32 parameter gradients; the CUDA side of layernorm.h (loom::ref is the ground truth).
//
// Forward (optionally fused with the residual add, so the sum is written once and never read
// back) and backward are memory-bound: one warp per row, the row held in registers between
// its reductions, 16-byte accesses when rows are aligned. The backward's dg/db need a sum over
// all rows; float atomics would make it depend on timing, so each block writes one partial row
// into a bounded scratch buffer and a second kernel adds the partials in a fixed order: results
// are bit-identical run to run on a given device. docs/kernels_memory_bound.md has the byte
// counts and launch configurations.
#include "kernels/common/cuda_compat.h"
#include "kernels/common/launch.cuh"
#include "kernels/common/reduce.cuh"
#include "kernels/common/vec.cuh"

#include <algorithm>
#include <climits>
#include <iterator>
#include <type_traits>

#include "core/check.h"
#include "kernels/layernorm/layernorm.h"

namespace loom::cuda {
namespace {

using Bf = __nv_bfloat16;
using Pack = Pack128<Bf>;

constexpr int kPack = Pack::kSize;      // bf16 per 16-byte access
constexpr int kSlotCols = 32 * kPack;   // columns one warp covers with one pack per lane
// Pack slots a lane holds on the register path, by instantiation: up to 8 (C = 2048); wider
// rows take the looped path. Odd counts round up (GPT-2's 768, 1024, 1280, 1600 need 3, 4,
// 5, 7), which costs predicated-off loads, not bytes.
constexpr int kSlotBuckets[] = {1, 2, 3, 4, 6, 8};
constexpr int kFwdWarps = 8;            // forward: rows per block (one warp each)
constexpr int kBwdWarps = 4;            // backward: warps per block sharing one partial row
constexpr int kMaxPartials = 1024;      // bound on dg/db partial rows (scratch size)
static_assert(valid_block(kFwdWarps * 32) && valid_block(kBwdWarps * 32));
// The register-path backward keeps a block's dg/db partial row in dynamic shared memory:
// 2 * C floats a warp, at most 64 KiB for the widest bucket (C = 2048).
static_assert(size_t(kBwdWarps) * 2 * kSlotBuckets[std::size(kSlotBuckets) - 1] * kSlotCols * sizeof(float) <=
                  kSmemPerBlockLimit,
              "layernorm backward: the widest bucket's partial rows exceed a block's shared memory");

// Column held in element k of pack slot i of `lane`. The vector path gives a lane 8 adjacent
// columns (one 16-byte access); the scalar path, for rows that are not 16-byte aligned,
// interleaves the lanes so that each of the 8 scalar accesses is coalesced across the warp.
// Forward, backward and the dg/db combine only need the mapping to be the same everywhere.
template <bool kVector>
__device__ __forceinline__ int column(int i, int lane, int k) {
  return kVector ? (i * 32 + lane) * kPack + k : i * kSlotCols + k * 32 + lane;
}

__device__ __forceinline__ Pack zero_pack() {
  Pack p;
#pragma unroll
  for (int k = 0; k < kPack; ++k) p[k] = from_float<Bf>(0.f);
  return p;
}

// One pack slot of a row; columns at or past C read as 0, so sums need no masking. The vector
// path needs C % 8 == 0 (checked by the launcher), so a slot is either whole or absent.
template <bool kVector, bool kStream>
__device__ __forceinline__ Pack load_slot(const Bf* row, int i, int lane, int C) {
  if constexpr (kVector) {
    const int c = column<true>(i, lane, 0);
    if (c >= C) return zero_pack();
    return kStream ? load_128_cs(row + c) : load_128(row + c);
  } else {
    Pack p;
#pragma unroll
    for (int k = 0; k < kPack; ++k) {
      const int c = column<false>(i, lane, k);
      p[k] = c < C ? row[c] : from_float<Bf>(0.f);
    }
    return p;
  }
}

template <bool kVector>
__device__ __forceinline__ void store_slot(Bf* row, int i, int lane, int C, const Pack& p) {
  if constexpr (kVector) {
    const int c = column<true>(i, lane, 0);
    if (c < C) store_128(row + c, p);
  } else {
#pragma unroll
    for (int k = 0; k < kPack; ++k) {
      const int c = column<false>(i, lane, k);
      if (c < C) row[c] = p[k];
    }
  }
}

// acc[column] += v[k] for the columns of slot i of `lane` (shared-memory accumulators, f32).
template <bool kVector>
__device__ __forceinline__ void add_slot(float* acc, int i, int lane, int C, const float (&v)[kPack]) {
  if constexpr (kVector) {
    const int c = column<true>(i, lane, 0);
    if (c >= C) return;
#pragma unroll
    for (int h = 0; h < kPack; h += 4) {
      Pack128<float> p = load_128(acc + c + h);
#pragma unroll
      for (int k = 0; k < 4; ++k) p[k] += v[h + k];
      store_128(acc + c + h, p);
    }
  } else {
#pragma unroll
    for (int k = 0; k < kPack; ++k) {
      const int c = column<false>(i, lane, k);
      if (c < C) acc[c] += v[k];
    }
  }
}

// ---- forward ---------------------------------------------------------------------------

// Slot i of the row at `off` that the forward normalises: x, or with a residual the bf16 sum
// x + residual, which is also written to `sum` (the backward's x). kStream: x is read only
// here. (residual and sum are offset only when present: no arithmetic on null pointers.)
template <bool kVector, bool kStream>
__device__ __forceinline__ Pack input_slot(const Bf* x, const Bf* residual, Bf* sum, size_t off, int i, int lane,
                                           int C) {
  Pack p = load_slot<kVector, kStream>(x + off, i, lane, C);
  if (residual) {
    const Pack r = load_slot<kVector, true>(residual + off, i, lane, C);
#pragma unroll
    for (int k = 0; k < kPack; ++k) p[k] = from_float<Bf>(to_float(p[k]) + to_float(r[k]));
    store_slot<kVector>(sum + off, i, lane, C, p);
  }
  return p;
}

// Register path: the row stays in v[][] from the load to the store, so x (and residual) are
// read exactly once; the variance is a second pass over registers (no E[x^2] - mean^2
// cancellation). The sum is rounded to bf16 before it is normalised: the backward gets the
// stored bf16 sum as its x, and both must see the same values.
template <int kSlots, bool kVector>
static __global__ void __launch_bounds__(kFwdWarps * 32)
    layernorm_fwd_kernel(const Bf* __restrict__ x, const Bf* __restrict__ residual, Bf* __restrict__ sum,
                         const Bf* __restrict__ g, const Bf* __restrict__ b, Bf* __restrict__ y,
                         float* __restrict__ mean, float* __restrict__ rstd, int N, int C, float inv_c, float eps) {
  const int lane = threadIdx.x % 32;
  const int row = blockIdx.x * kFwdWarps + threadIdx.x / 32;
  if (row >= N) return;  // whole warps leave together: the shuffles below stay complete
  const size_t off = size_t(row) * C;
  float v[kSlots][kPack];
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < kSlots; ++i) {
    const Pack p = input_slot<kVector, true>(x, residual, sum, off, i, lane, C);
#pragma unroll
    for (int k = 0; k < kPack; ++k) {
      v[i][k] = to_float(p[k]);
      s += v[i][k];
    }
  }
  const float m = warp_sum(s) * inv_c;
  float q = 0.f;
#pragma unroll
  for (int i = 0; i < kSlots; ++i)
#pragma unroll
    for (int k = 0; k < kPack; ++k) {
      const float d = column<kVector>(i, lane, k) < C ? v[i][k] - m : 0.f;
      q += d * d;
    }
  const float r = rsqrtf(warp_sum(q) * inv_c + eps);
#pragma unroll
  for (int i = 0; i < kSlots; ++i) {
    const Pack gp = load_slot<kVector, false>(g, i, lane, C);
    const Pack bp = load_slot<kVector, false>(b, i, lane, C);
    Pack out;
#pragma unroll
    for (int k = 0; k < kPack; ++k) out[k] = from_float<Bf>((v[i][k] - m) * r * to_float(gp[k]) + to_float(bp[k]));
    store_slot<kVector>(y + off, i, lane, C, out);
  }
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = r;
  }
}

// Looped path for rows too wide for registers (C > 2048): the same warp-per-row scheme in
// three passes over the row, which re-reads it from L1/L2 rather than DRAM. With a residual
// the first pass writes the bf16 sum and the later passes read it back (each lane rereads only
// what it wrote itself, so no barrier is needed).
template <bool kVector>
static __global__ void __launch_bounds__(kFwdWarps * 32)
    layernorm_fwd_looped_kernel(const Bf* __restrict__ x, const Bf* __restrict__ residual, Bf* sum,
                                const Bf* __restrict__ g, const Bf* __restrict__ b, Bf* __restrict__ y,
                                float* __restrict__ mean, float* __restrict__ rstd, int N, int C, float inv_c,
                                float eps) {
  const int lane = threadIdx.x % 32;
  const int row = blockIdx.x * kFwdWarps + threadIdx.x / 32;
  if (row >= N) return;
  const int slots = (C + kSlotCols - 1) / kSlotCols;
  const size_t off = size_t(row) * C;
  const Bf* src = residual ? sum + off : x + off;
  float s = 0.f;
  for (int i = 0; i < slots; ++i) {
    const Pack p = input_slot<kVector, false>(x, residual, sum, off, i, lane, C);
#pragma unroll
    for (int k = 0; k < kPack; ++k) s += to_float(p[k]);
  }
  const float m = warp_sum(s) * inv_c;
  float q = 0.f;
  for (int i = 0; i < slots; ++i) {
    const Pack p = load_slot<kVector, false>(src, i, lane, C);
#pragma unroll
    for (int k = 0; k < kPack; ++k) {
      const float d = column<kVector>(i, lane, k) < C ? to_float(p[k]) - m : 0.f;
      q += d * d;
    }
  }
  const float r = rsqrtf(warp_sum(q) * inv_c + eps);
  for (int i = 0; i < slots; ++i) {
    const Pack p = load_slot<kVector, true>(src, i, lane, C);
    const Pack gp = load_slot<kVector, false>(g, i, lane, C);
    const Pack bp = load_slot<kVector, false>(b, i, lane, C);
    Pack out;
#pragma unroll
    for (int k = 0; k < kPack; ++k)
      out[k] = from_float<Bf>((to_float(p[k]) - m) * r * to_float(gp[k]) + to_float(bp[k]));
    store_slot<kVector>(y + off, i, lane, C, out);
  }
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = r;
  }
}

// ---- backward --------------------------------------------------------------------------

// dx = (dy*g - mean(dy*g) - xhat * mean(dy*g*xhat)) * rstd (+ dresid), with
// xhat = (x - mean) * rstd; dg += sum_rows dy*xhat, db += sum_rows dy.
//
// Register path. Block `blk` owns a contiguous range of rows (split_point); its warps take
// them round robin and keep dy and x of the current row as bf16 packs. Each warp accumulates
// dg/db for its own columns in its own slice of shared memory (registers would not hold them
// beside the row without spilling), so no two threads ever touch one accumulator. At the end
// the block adds the warps' slices in warp order and writes one partial row [dg | db] of
// 2*C floats to partial[blk].
template <int kSlots, bool kVector>
static __global__ void __launch_bounds__(kBwdWarps * 32)
    layernorm_bwd_kernel(const Bf* __restrict__ dy, const Bf* __restrict__ x, const Bf* __restrict__ g,
                         const float* __restrict__ mean, const float* __restrict__ rstd,
                         const Bf* __restrict__ dresid, Bf* __restrict__ dx, float* __restrict__ partial, int N,
                         int C, float inv_c) {
  LOOM_DYNAMIC_SMEM(float, acc);  // [kBwdWarps][2][C]: each warp's dg and db sums
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  float* acc_g = acc + size_t(warp) * 2 * C;
  float* acc_b = acc_g + C;
  const int r0 = split_point(N, gridDim.x, blockIdx.x);
  const int r1 = split_point(N, gridDim.x, blockIdx.x + 1);
  // Cleared through the same column mapping as the updates: every accumulator has one owner
  // lane from start to end, so no barrier is needed until the warps' slices are combined.
#pragma unroll
  for (int i = 0; i < kSlots; ++i)
#pragma unroll
    for (int k = 0; k < kPack; ++k) {
      const int c = column<kVector>(i, lane, k);
      if (c < C) acc_g[c] = acc_b[c] = 0.f;
    }

  for (int row = r0 + warp; row < r1; row += kBwdWarps) {
    const size_t off = size_t(row) * C;
    Pack dyp[kSlots], xp[kSlots];
#pragma unroll
    for (int i = 0; i < kSlots; ++i) {
      dyp[i] = load_slot<kVector, true>(dy + off, i, lane, C);
      xp[i] = load_slot<kVector, true>(x + off, i, lane, C);
    }
    const float m = mean[row], r = rstd[row];
    float s_dyg = 0.f, s_dyg_xhat = 0.f;
#pragma unroll
    for (int i = 0; i < kSlots; ++i) {
      const Pack gp = load_slot<kVector, false>(g, i, lane, C);
#pragma unroll
      for (int k = 0; k < kPack; ++k) {
        const float dyg = to_float(dyp[i][k]) * to_float(gp[k]);  // columns past C: dy = 0
        s_dyg += dyg;
        s_dyg_xhat += dyg * (to_float(xp[i][k]) - m) * r;
      }
    }
    s_dyg = warp_sum(s_dyg) * inv_c;
    s_dyg_xhat = warp_sum(s_dyg_xhat) * inv_c;
#pragma unroll
    for (int i = 0; i < kSlots; ++i) {
      // g is re-read from L1 rather than kept: registers go to the row.
      const Pack gp = load_slot<kVector, false>(g, i, lane, C);
      Pack dr = zero_pack();  // not a ?: on the struct, which ptxas puts on the stack
      if (dresid) dr = load_slot<kVector, true>(dresid + off, i, lane, C);
      float dg_row[kPack], db_row[kPack];
      Pack out;
#pragma unroll
      for (int k = 0; k < kPack; ++k) {
        const float d = to_float(dyp[i][k]);
        const float xhat = (to_float(xp[i][k]) - m) * r;
        float v = (d * to_float(gp[k]) - s_dyg - xhat * s_dyg_xhat) * r;
        if (dresid) v += to_float(dr[k]);
        out[k] = from_float<Bf>(v);
        dg_row[k] = d * xhat;
        db_row[k] = d;
      }
      store_slot<kVector>(dx + off, i, lane, C, out);
      add_slot<kVector>(acc_g, i, lane, C, dg_row);
      add_slot<kVector>(acc_b, i, lane, C, db_row);
    }
  }

  __syncthreads();
  float* out = partial + size_t(blockIdx.x) * 2 * C;
  for (int c = threadIdx.x; c < 2 * C; c += blockDim.x) {
    float t = acc[c];
#pragma unroll
    for (int w = 1; w < kBwdWarps; ++w) t += acc[size_t(w) * 2 * C + c];
    out[c] = t;
  }
}

// Looped path (C > 2048). Each warp owns one partial row, partial[blockIdx.x * kBwdWarps +
// warp], and a contiguous range of rows; it accumulates dg/db straight into its partial row
// (every column has one owning lane, so there are no races) and re-reads the row from L1/L2
// for the second pass instead of holding it.
template <bool kVector>
static __global__ void __launch_bounds__(kBwdWarps * 32)
    layernorm_bwd_looped_kernel(const Bf* __restrict__ dy, const Bf* __restrict__ x, const Bf* __restrict__ g,
                                const float* __restrict__ mean, const float* __restrict__ rstd,
                                const Bf* __restrict__ dresid, Bf* __restrict__ dx, float* __restrict__ partial,
                                int N, int C, float inv_c) {
  const int lane = threadIdx.x % 32;
  const int p = blockIdx.x * kBwdWarps + threadIdx.x / 32;
  const int np = gridDim.x * kBwdWarps;
  const int r0 = split_point(N, np, p), r1 = split_point(N, np, p + 1);
  const int slots = (C + kSlotCols - 1) / kSlotCols;
  float* pg = partial + size_t(p) * 2 * C;
  float* pb = pg + C;
  if (r0 == r1) {  // no rows: the partial row still has to be written
    for (int c = lane; c < C; c += 32) pg[c] = pb[c] = 0.f;
    return;
  }
  for (int row = r0; row < r1; ++row) {
    const size_t off = size_t(row) * C;
    const float m = mean[row], r = rstd[row];
    float s_dyg = 0.f, s_dyg_xhat = 0.f;
    for (int i = 0; i < slots; ++i) {
      const Pack dyp = load_slot<kVector, false>(dy + off, i, lane, C);
      const Pack xp = load_slot<kVector, false>(x + off, i, lane, C);
      const Pack gp = load_slot<kVector, false>(g, i, lane, C);
#pragma unroll
      for (int k = 0; k < kPack; ++k) {
        const float dyg = to_float(dyp[k]) * to_float(gp[k]);
        s_dyg += dyg;
        s_dyg_xhat += dyg * (to_float(xp[k]) - m) * r;
      }
    }
    s_dyg = warp_sum(s_dyg) * inv_c;
    s_dyg_xhat = warp_sum(s_dyg_xhat) * inv_c;
    for (int i = 0; i < slots; ++i) {
      const Pack dyp = load_slot<kVector, true>(dy + off, i, lane, C);
      const Pack xp = load_slot<kVector, true>(x + off, i, lane, C);
      const Pack gp = load_slot<kVector, false>(g, i, lane, C);
      Pack dr = zero_pack();  // not a ?: on the struct, which ptxas puts on the stack
      if (dresid) dr = load_slot<kVector, true>(dresid + off, i, lane, C);
      Pack out;
#pragma unroll
      for (int k = 0; k < kPack; ++k) {
        const float d = to_float(dyp[k]);
        const float xhat = (to_float(xp[k]) - m) * r;
        float v = (d * to_float(gp[k]) - s_dyg - xhat * s_dyg_xhat) * r;
        if (dresid) v += to_float(dr[k]);
        out[k] = from_float<Bf>(v);
        const int c = column<kVector>(i, lane, k);
        if (c < C) {
          pg[c] = row == r0 ? d * xhat : pg[c] + d * xhat;
          pb[c] = row == r0 ? d : pb[c] + d;
        }
      }
      store_slot<kVector>(dx + off, i, lane, C, out);
    }
  }
}

// Second stage (reduce.cuh's column_sum over the P partial rows of 2*C columns): the first C
// columns are dg's, the rest db's.
struct AddToDgDb {
  float* dg;
  float* db;
  int C;
  __device__ __forceinline__ void operator()(int col, float sum) const {
    if (col < C)
      dg[col] += sum;
    else
      db[col - C] += sum;
  }
};

// ---- launch helpers --------------------------------------------------------------------

// The instantiation for C: the smallest bucket that holds the row, or 0 for the looped path.
int slot_bucket(int C) {
  const int need = (C + kSlotCols - 1) / kSlotCols;
  for (int s : kSlotBuckets)
    if (need <= s) return s;
  return 0;
}

// Calls f(std::integral_constant<int, S>{}) for the bucket S; every bucket is instantiated.
template <class F>
void with_slots(int bucket, F&& f) {
  with_value<1, 2, 3, 4, 6, 8>("layernorm slots", bucket, f);
}

// An absent optional pointer (residual, dresid) does not force the scalar path.
bool aligned_16(const void* p) { return p == nullptr || is_aligned_16(p); }

// Partial rows of the backward: enough blocks to fill the device (the register path's blocks
// are light enough for 4 a SM when at most 4 slots are live), never more than the scratch
// holds. The count depends on the SM count only, so a device always sums in the same order.
int bwd_partials(int64_t N, int C, int sms) {
  const int64_t by_rows = (N + kBwdWarps - 1) / kBwdWarps;
  const int bucket = slot_bucket(C);
  if (bucket == 0) return int(std::min<int64_t>({by_rows, 2 * sms, kMaxPartials / kBwdWarps})) * kBwdWarps;
  return int(std::min<int64_t>({by_rows, (bucket <= 4 ? 4 : 2) * int64_t(sms), kMaxPartials}));
}

}  // namespace

void layernorm_fwd(const LayerNormFwd& a, Stream s) {
  LOOM_CHECK(a.N >= 0 && a.C > 0 && a.N <= INT_MAX && a.C <= INT_MAX / 2, "layernorm_fwd: bad shape N=", a.N,
             " C=", a.C);
  if (a.N == 0) return;
  LOOM_CHECK(a.x && a.g && a.b && a.y && a.mean && a.rstd, "layernorm_fwd: null pointer");
  LOOM_CHECK(!a.residual || a.sum, "layernorm_fwd: a residual needs a sum output");
  const bool vector = a.C % kPack == 0 && aligned_16(a.x) && aligned_16(a.residual) && aligned_16(a.sum) &&
                      aligned_16(a.g) && aligned_16(a.b) && aligned_16(a.y);
  const int N = int(a.N), C = int(a.C);
  const float inv_c = 1.f / float(C);  // here, not in the kernels, where / is a slow-path call
  const int grid = (N + kFwdWarps - 1) / kFwdWarps;
  const int threads = 32 * std::min(N, kFwdWarps);  // a few rows get a small block, not idle warps
  const Bf* residual = a.residual ? as_nv(a.residual) : nullptr;
  Bf* sum = a.residual ? as_nv(a.sum) : nullptr;
  const int bucket = slot_bucket(C);
  with_bool(vector, [&](auto v) {
    constexpr bool V = decltype(v)::value;
    if (bucket == 0) {
      LOOM_LAUNCH((layernorm_fwd_looped_kernel<V>), grid, threads, 0, s, as_nv(a.x), residual, sum, as_nv(a.g),
                  as_nv(a.b), as_nv(a.y), a.mean, a.rstd, N, C, inv_c, a.eps);
    } else {
      with_slots(bucket, [&](auto k) {
        constexpr int S = decltype(k)::value;
        LOOM_LAUNCH((layernorm_fwd_kernel<S, V>), grid, threads, 0, s, as_nv(a.x), residual, sum, as_nv(a.g),
                    as_nv(a.b), as_nv(a.y), a.mean, a.rstd, N, C, inv_c, a.eps);
      });
    }
  });
}

size_t layernorm_bwd_scratch_floats(int64_t N, int64_t C) {
  // Both paths use at most min(N rounded up to whole blocks, kMaxPartials) partial rows.
  const int64_t rows = std::min<int64_t>((N + kBwdWarps - 1) / kBwdWarps * kBwdWarps, kMaxPartials);
  return size_t(std::max<int64_t>(rows, 1)) * 2 * size_t(std::max<int64_t>(C, 0));
}

void layernorm_bwd(const LayerNormBwd& a, Stream s) {
  LOOM_CHECK(a.N >= 0 && a.C > 0 && a.N <= INT_MAX && a.C <= INT_MAX / 2, "layernorm_bwd: bad shape N=", a.N,
             " C=", a.C);
  if (a.N == 0) return;
  LOOM_CHECK(a.dy && a.x && a.g && a.mean && a.rstd && a.dx && a.scratch && (a.dg != nullptr) == (a.db != nullptr),
             "layernorm_bwd: null pointer");
  const bool vector = a.C % kPack == 0 && aligned_16(a.dy) && aligned_16(a.x) && aligned_16(a.g) &&
                      aligned_16(a.dresid) && aligned_16(a.dx);
  const int N = int(a.N), C = int(a.C);
  const float inv_c = 1.f / float(C);
  const int P = bwd_partials(N, C, sm_count());
  LOOM_CHECK(size_t(P) * 2 * C <= layernorm_bwd_scratch_floats(N, C), "layernorm_bwd: partials exceed scratch");
  const Bf* dresid = a.dresid ? as_nv(a.dresid) : nullptr;
  const int bucket = slot_bucket(C);
  with_bool(vector, [&](auto v) {
    constexpr bool V = decltype(v)::value;
    if (bucket == 0) {
      LOOM_LAUNCH((layernorm_bwd_looped_kernel<V>), P / kBwdWarps, kBwdWarps * 32, 0, s, as_nv(a.dy), as_nv(a.x),
                  as_nv(a.g), a.mean, a.rstd, dresid, as_nv(a.dx), a.scratch, N, C, inv_c);
    } else {
      with_slots(bucket, [&](auto k) {
        constexpr int S = decltype(k)::value;
        // Up to 64 KiB (C = 2048): above the default 48 KiB.
        const size_t smem = size_t(kBwdWarps) * 2 * C * sizeof(float);
        allow_dynamic_smem(layernorm_bwd_kernel<S, V>, smem);
        LOOM_LAUNCH((layernorm_bwd_kernel<S, V>), P, kBwdWarps * 32, smem, s, as_nv(a.dy), as_nv(a.x), as_nv(a.g),
                    a.mean, a.rstd, dresid, as_nv(a.dx), a.scratch, N, C, inv_c);
      });
    }
  });
  if (!a.dg) return;  // frozen gain and bias: the partials are not reduced
  column_sum("layernorm_bwd (dg/db)", a.scratch, P, 2 * C, AddToDgDb{a.dg, a.db, C}, s);
}

}  // namespace loom::cuda
