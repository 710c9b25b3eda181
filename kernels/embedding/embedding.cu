// embedding.cu: token + position embedding for bf16 tables, out[b,t] = wte[tok] + wpe[pos0+t],
// and its deterministic backward into f32 gradients; the CUDA side of embedding.h
// (loom::ref::embedding_fwd/bwd is the ground truth).
//
// Forward: one warp per (b, t) row, 16-byte packs when rows are aligned.
//
// Backward without float atomics (they would make dwte depend on timing):
//  1. keys[i] = token << 32 | i for every position i, padded to a power of two;
//  2. a bitonic sort of the keys (tiles of 2048 in shared memory, then global merge steps).
//     The keys are unique, so the sorted order is unique too: each token's positions end up
//     together and in increasing order, whatever the schedule. Integer work only;
//  3. runs: the first position of each token's run is appended to a list (an integer atomic:
//     the list order varies, but each run is summed the same way wherever it sits), and the
//     run's end is recorded per token;
//  4. each run is summed in position order and added to its dwte row: a warp per short run,
//     a block per (long run, 256-column tile) so that a frequent token is not one warp's
//     serial loop;
//  5. dwpe[pos0 + t] += sum over b of dout[b, t], each column summed over b in order.
// Every dwte/dwpe element has exactly one writer, so results are bit-identical run to run.
// docs/kernels_memory_bound.md has the byte counts.
#include "kernels/common/cuda_compat.h"
#include "kernels/common/launch.cuh"
#include "kernels/common/vec.cuh"

#include <algorithm>
#include <climits>

#include "core/check.h"
#include "kernels/embedding/embedding.h"

namespace loom::cuda {
namespace {

using Bf = __nv_bfloat16;
using Pack = Pack128<Bf>;
using F4 = Pack128<float>;

constexpr int kPack = Pack::kSize;     // bf16 per 16-byte access
constexpr int kTileCols = 32 * kPack;  // 256 columns: a warp with one pack per lane
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kSortTile = 2048;   // keys one block sorts in shared memory (16 KiB)
constexpr int kShortRun = 32;     // runs up to this long are one warp's job, longer ones a block's
constexpr uint64_t kPadKey = ~uint64_t(0);
static_assert(valid_block(kThreads));
static_assert(kSortTile * sizeof(uint64_t) <= kStaticSmemLimit && kWarps * kTileCols * sizeof(float) <= kStaticSmemLimit);

// Column held in element k of `lane`'s pack within a 256-column tile: 8 adjacent columns on
// the vector path; lanes interleaved on the scalar path so that each scalar access is coalesced.
template <bool kVector>
__device__ __forceinline__ int tile_column(int lane, int k) {
  return kVector ? lane * kPack + k : k * 32 + lane;
}

// Token ids were validated when the data was loaded, and positions by the model's shapes: a
// bad one here is an internal error. The device cannot report it, so it stops the context
// rather than read or write outside the tables.
__device__ __forceinline__ void check_index(int v, int limit) {
  if (v < 0 || v >= limit) __trap();
}

// ---- forward ---------------------------------------------------------------------------

// A warp per (b, t) row, grid-stride. Plain loads, not evict-first: wpe's rows repeat over
// the batch and a frequent token's wte row repeats too, so both are worth keeping in L2.
template <bool kVector>
static __global__ void __launch_bounds__(kThreads)
    embedding_fwd_kernel(const int32_t* __restrict__ tokens, const Bf* __restrict__ wte, const Bf* __restrict__ wpe,
                         Bf* __restrict__ out, int BT, int T, int C, int V, int maxT, const int32_t* pos0) {
  const int lane = threadIdx.x % 32;
  const int p0 = pos0 ? *pos0 : 0;
  for (int row = blockIdx.x * kWarps + threadIdx.x / 32; row < BT; row += gridDim.x * kWarps) {
    const int tok = tokens[row];
    const int pos = p0 + row % T;
    check_index(tok, V);
    if (wpe) check_index(pos, maxT);
    const Bf* e = wte + size_t(tok) * C;
    const Bf* p = wpe ? wpe + size_t(pos) * C : nullptr;  // no position table: token rows only
    Bf* o = out + size_t(row) * C;
    if constexpr (kVector) {
      for (int c = lane * kPack; c < C; c += 32 * kPack) {
        const Pack a = load_128(e + c);
        Pack s;
        if (p) {
          const Pack b = load_128(p + c);
#pragma unroll
          for (int k = 0; k < kPack; ++k) s[k] = from_float<Bf>(to_float(a[k]) + to_float(b[k]));
        } else {
          s = a;
        }
        store_128(o + c, s);
      }
    } else {
      for (int c = lane; c < C; c += 32) o[c] = p ? from_float<Bf>(to_float(e[c]) + to_float(p[c])) : e[c];
    }
  }
}

// Context embedding (the feed-forward LM): out[(b*T + t)*n + j] = tokens[b, t-n+1+j], or the
// padding row for positions before the window.
static __global__ void __launch_bounds__(kThreads)
    context_tokens_kernel(const int32_t* __restrict__ tokens, int32_t* __restrict__ out, int B, int T, int n,
                          int pad) {
  const int total = B * T * n;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const int j = i % n, bt = i / n, t = bt % T, src = t - n + 1 + j;
    out[i] = src >= 0 ? tokens[bt - t + src] : pad;
  }
}

// ---- backward: keys and sort ------------------------------------------------------------

// keys[i] = token << 32 | i for i < BT, padding after; also clears the two list counters
// (stream order makes that visible to the kernels that append).
static __global__ void __launch_bounds__(kThreads)
    make_keys_kernel(const int32_t* __restrict__ tokens, uint64_t* __restrict__ keys, int BT, int n, int V,
                     int* __restrict__ counters) {
  const int stride = gridDim.x * blockDim.x;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    if (i < BT) {
      const int tok = tokens[i];
      check_index(tok, V);
      keys[i] = uint64_t(uint32_t(tok)) << 32 | uint32_t(i);
    } else {
      keys[i] = kPadKey;
    }
  }
  if (blockIdx.x == 0 && threadIdx.x < 2) counters[threadIdx.x] = 0;
}

// Pair p of a bitonic step with distance j (a power of two): the lower index has bit j clear.
__device__ __forceinline__ int pair_low(int p, int j) { return ((p & ~(j - 1)) << 1) | (p & (j - 1)); }

// Stages k_first..k_last (powers of two) of the bitonic network on tiles of `tile` keys in
// shared memory, each stage from distance min(k, tile)/2 down to 1; the larger distances of a
// stage (k > tile) are bitonic_step_kernel's. Directions follow the global index, so the tiles
// together form the same network as one big sort.
static __global__ void __launch_bounds__(kThreads)
    bitonic_tile_kernel(uint64_t* __restrict__ keys, int tile, int k_first, int k_last) {
  __shared__ uint64_t s[kSortTile];
  const int base = blockIdx.x * tile;
  for (int i = threadIdx.x; i < tile; i += blockDim.x) s[i] = keys[base + i];
  __syncthreads();
  for (int k = k_first; k <= k_last; k <<= 1) {
    for (int j = (k < tile ? k : tile) >> 1; j > 0; j >>= 1) {
      for (int p = threadIdx.x; p < tile / 2; p += blockDim.x) {
        const int lo = pair_low(p, j), hi = lo + j;
        const bool ascending = ((base + lo) & k) == 0;
        const uint64_t a = s[lo], b = s[hi];
        if ((a > b) == ascending) {
          s[lo] = b;
          s[hi] = a;
        }
      }
      __syncthreads();
    }
  }
  for (int i = threadIdx.x; i < tile; i += blockDim.x) keys[base + i] = s[i];
}

// One compare-exchange step of distance j >= tile across the whole array.
static __global__ void __launch_bounds__(kThreads)
    bitonic_step_kernel(uint64_t* __restrict__ keys, int n, int k, int j) {
  const int stride = gridDim.x * blockDim.x;
  for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n / 2; p += stride) {
    const int lo = pair_low(p, j), hi = lo + j;
    const bool ascending = (lo & k) == 0;
    const uint64_t a = keys[lo], b = keys[hi];
    if ((a > b) == ascending) {
      keys[lo] = b;
      keys[hi] = a;
    }
  }
}

// ---- backward: runs ----------------------------------------------------------------------

__device__ __forceinline__ int key_token(uint64_t key) { return int(key >> 32); }
__device__ __forceinline__ int key_position(uint64_t key) { return int(uint32_t(key)); }

// In the sorted keys, a token's positions form one run. The last element of a run records
// the run's end for its token; the first appends the run's start to `runs`.
static __global__ void __launch_bounds__(kThreads)
    find_runs_kernel(const uint64_t* __restrict__ keys, int BT, int* __restrict__ run_end, int* __restrict__ runs,
                     int* __restrict__ counters) {
  const int stride = gridDim.x * blockDim.x;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < BT; i += stride) {
    const int tok = key_token(keys[i]);
    if (i + 1 == BT || key_token(keys[i + 1]) != tok) run_end[tok] = i + 1;
    if (i == 0 || key_token(keys[i - 1]) != tok) runs[atomicAdd(&counters[0], 1)] = i;
  }
}

// dst[0..8) += v for a lane's pack of f32 gradient columns (vector path: two 16-byte RMWs).
__device__ __forceinline__ void add_pack(float* dst, const float (&v)[kPack]) {
#pragma unroll
  for (int h = 0; h < kPack; h += 4) {
    F4 p = load_128(dst + h);
#pragma unroll
    for (int k = 0; k < 4; ++k) p[k] += v[h + k];
    store_128(dst + h, p);
  }
}

// acc[k] += dout row `pos`, columns tile_column(lane, k) of the tile starting at col0.
template <bool kVector>
__device__ __forceinline__ void add_row(float (&acc)[kPack], const Bf* __restrict__ dout, int pos, int col0,
                                        int lane, int C) {
  const Bf* row = dout + size_t(pos) * C + col0;
  if constexpr (kVector) {
    if (col0 + lane * kPack < C) {
      const Pack p = load_128(row + lane * kPack);
#pragma unroll
      for (int k = 0; k < kPack; ++k) acc[k] += to_float(p[k]);
    }
  } else {
#pragma unroll
    for (int k = 0; k < kPack; ++k)
      if (col0 + tile_column<false>(lane, k) < C) acc[k] += to_float(row[tile_column<false>(lane, k)]);
  }
}

// dwte row += acc for a lane's columns of one tile.
template <bool kVector>
__device__ __forceinline__ void add_to_row(float* __restrict__ grad_row, const float (&acc)[kPack], int col0, int lane,
                                           int C) {
  if constexpr (kVector) {
    if (col0 + lane * kPack < C) add_pack(grad_row + col0 + lane * kPack, acc);
  } else {
#pragma unroll
    for (int k = 0; k < kPack; ++k) {
      const int c = col0 + tile_column<false>(lane, k);
      if (c < C) grad_row[c] += acc[k];
    }
  }
}

// Short runs, a warp each: rows in position order, tile by tile, added to the token's dwte
// row. Long runs are passed on to sum_long_runs_kernel through a second list.
template <bool kVector>
static __global__ void __launch_bounds__(kThreads)
    sum_short_runs_kernel(const Bf* __restrict__ dout, const uint64_t* __restrict__ keys,
                          const int* __restrict__ run_end, const int* __restrict__ runs, int* __restrict__ long_runs,
                          int* __restrict__ counters, float* __restrict__ dwte, int C) {
  const int lane = threadIdx.x % 32;
  const int count = counters[0];
  for (int e = blockIdx.x * kWarps + threadIdx.x / 32; e < count; e += gridDim.x * kWarps) {
    const int start = runs[e];
    const int tok = key_token(keys[start]);
    const int end = run_end[tok];
    if (end - start > kShortRun) {
      if (lane == 0) long_runs[atomicAdd(&counters[1], 1)] = e;
      continue;
    }
    float* grad_row = dwte + size_t(tok) * C;
    for (int col0 = 0; col0 < C; col0 += kTileCols) {
      float acc[kPack] = {};
#pragma unroll 4
      for (int j = start; j < end; ++j) add_row<kVector>(acc, dout, key_position(keys[j]), col0, lane, C);
      add_to_row<kVector>(grad_row, acc, col0, lane, C);
    }
  }
}

// Long runs: a block per (run, tile), the 8 warps taking rows warp, warp + 8, ... in order and
// meeting in shared memory in warp order. A frequent token (",", "the", padding) can own
// thousands of positions; spreading it over 8 warps and over its tiles' blocks keeps it from
// being the kernel's serial tail.
template <bool kVector>
static __global__ void __launch_bounds__(kThreads)
    sum_long_runs_kernel(const Bf* __restrict__ dout, const uint64_t* __restrict__ keys,
                         const int* __restrict__ run_end, const int* __restrict__ runs,
                         const int* __restrict__ long_runs, const int* __restrict__ counters, float* __restrict__ dwte,
                         int C) {
  __shared__ float red[kWarps][kTileCols];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int tiles = (C + kTileCols - 1) / kTileCols;
  const int items = counters[1] * tiles;  // < 2^31: checked by the launcher
  for (int item = blockIdx.x; item < items; item += gridDim.x) {
    const int start = runs[long_runs[item / tiles]];
    const int col0 = item % tiles * kTileCols;
    const int tok = key_token(keys[start]);
    const int end = run_end[tok];
    float acc[kPack] = {};
#pragma unroll 4
    for (int j = start + warp; j < end; j += kWarps) add_row<kVector>(acc, dout, key_position(keys[j]), col0, lane, C);
#pragma unroll
    for (int k = 0; k < kPack; ++k) red[warp][tile_column<kVector>(lane, k)] = acc[k];
    __syncthreads();
    const int c = col0 + threadIdx.x;
    if (c < C) {
      float s = red[0][threadIdx.x];
#pragma unroll
      for (int w = 1; w < kWarps; ++w) s += red[w][threadIdx.x];
      dwte[size_t(tok) * C + c] += s;
    }
    __syncthreads();  // red[] is rewritten by the next item
  }
}

// dwpe[pos0 + t] += sum_b dout[b, t]: a thread per (t, pack of columns), b in order.
template <bool kVector>
static __global__ void __launch_bounds__(kThreads)
    dwpe_kernel(const Bf* __restrict__ dout, float* __restrict__ dwpe, int B, int T, int C, int maxT,
                const int32_t* pos0) {
  const int p0 = pos0 ? *pos0 : 0;
  const int per_row = kVector ? C / kPack : C;
  const int units = T * per_row;  // T * C < 2^31: checked by the launcher
  for (int u = blockIdx.x * blockDim.x + threadIdx.x; u < units; u += gridDim.x * blockDim.x) {
    const int t = u / per_row;
    const int c = u % per_row * (kVector ? kPack : 1);
    check_index(p0 + t, maxT);
    float* dst = dwpe + size_t(p0 + t) * C + c;
    const Bf* src = dout + size_t(t) * C + c;
    if constexpr (kVector) {
      float acc[kPack] = {};
#pragma unroll 4
      for (int b = 0; b < B; ++b) {
        const Pack p = load_128(src + size_t(b) * T * C);
#pragma unroll
        for (int k = 0; k < kPack; ++k) acc[k] += to_float(p[k]);
      }
      add_pack(dst, acc);
    } else {
      float acc = 0.f;
#pragma unroll 4
      for (int b = 0; b < B; ++b) acc += to_float(src[size_t(b) * T * C]);
      *dst += acc;
    }
  }
}

// ---- launch helpers --------------------------------------------------------------------

// Blocks for `threads` threads' worth of work, at most one full wave.
// Grid-stride kernels: one wave of `kernel`'s blocks, as many as fit on every SM at once.
template <class Kernel>
int wave_grid(Kernel* kernel, int64_t threads) {
  return grid_for(threads, kThreads, blocks_per_sm(kernel, kThreads, 0));
}

int64_t next_pow2(int64_t v) {
  int64_t n = 1;
  while (n < v) n <<= 1;
  return n;
}

// Scratch layout, in int32 units: keys (n uint64) | run_end [V] | runs [BT] | long_runs | 2 counters.
struct ScratchLayout {
  int64_t n, keys, run_end, runs, long_runs, counters, total;
  ScratchLayout(int64_t BT, int64_t V) {
    n = next_pow2(std::max<int64_t>(BT, 1));
    keys = 0;
    run_end = keys + 2 * n;
    runs = run_end + V;
    long_runs = runs + BT;
    counters = long_runs + BT / (kShortRun + 1) + 1;
    total = counters + 2;
  }
};

}  // namespace

void embedding_fwd(const EmbeddingFwd& a, Stream s) {
  LOOM_CHECK(a.B >= 0 && a.T > 0 && a.C > 0 && a.V > 0 && a.maxT > 0, "embedding_fwd: bad shape");
  LOOM_CHECK(a.B * a.T <= INT_MAX && a.C <= INT_MAX && a.V <= INT_MAX && a.maxT <= INT_MAX,
             "embedding_fwd: shape beyond int range");
  const int64_t BT = a.B * a.T;
  if (BT == 0) return;
  LOOM_CHECK(a.tokens && a.wte && a.out, "embedding_fwd: null pointer");
  LOOM_CHECK(!a.wpe || a.pos0 || a.T <= a.maxT, "embedding_fwd: T = ", a.T, " beyond maxT = ", a.maxT);
  const bool vector = a.C % kPack == 0 && is_aligned_16(a.wte) && (!a.wpe || is_aligned_16(a.wpe)) && is_aligned_16(a.out);
  with_bool(vector, [&](auto v) {  // a warp a row
    LOOM_LAUNCH((embedding_fwd_kernel<decltype(v)::value>), wave_grid(embedding_fwd_kernel<decltype(v)::value>, BT * 32), kThreads, 0, s, a.tokens,
                as_nv(a.wte), as_nv(a.wpe), as_nv(a.out), int(BT), int(a.T), int(a.C), int(a.V), int(a.maxT), a.pos0);
  });
}

size_t embedding_bwd_scratch_ints(int64_t BT, int64_t V) {
  return size_t(ScratchLayout(std::max<int64_t>(BT, 0), std::max<int64_t>(V, 0)).total);
}

void embedding_bwd(const EmbeddingBwd& a, Stream s) {
  LOOM_CHECK(a.B >= 0 && a.T > 0 && a.C > 0 && a.V > 0 && a.maxT > 0, "embedding_bwd: bad shape");
  // Positions live in the low 32 bits of a key and the sort indexes with int.
  LOOM_CHECK(a.B * a.T <= (int64_t(1) << 30) && a.C <= INT_MAX && a.V <= INT_MAX && a.maxT <= INT_MAX,
             "embedding_bwd: shape beyond int range");
  const int64_t BT = a.B * a.T;
  if (BT == 0) return;
  LOOM_CHECK(a.dout && a.tokens && a.dwte && a.scratch, "embedding_bwd: null pointer");
  LOOM_CHECK(!a.dwpe || a.pos0 || a.T <= a.maxT, "embedding_bwd: T = ", a.T, " beyond maxT = ", a.maxT);
  // 32-bit indexing in the kernels: dwpe's (t, column) and the long runs' (run, tile) items.
  LOOM_CHECK(a.T * a.C <= INT_MAX && a.B * a.T / (kShortRun + 1) * ((a.C + kTileCols - 1) / kTileCols) <= INT_MAX,
             "embedding_bwd: shape beyond int range");
  LOOM_CHECK(reinterpret_cast<uintptr_t>(a.scratch) % 8 == 0, "embedding_bwd: scratch must be 8-byte aligned");
  const bool vector =
      a.C % kPack == 0 && is_aligned_16(a.dout) && is_aligned_16(a.dwte) && (!a.dwpe || is_aligned_16(a.dwpe));
  const ScratchLayout L(BT, a.V);
  const int n = int(L.n), bt = int(BT), C = int(a.C);
  uint64_t* keys = reinterpret_cast<uint64_t*>(a.scratch + L.keys);
  int* run_end = a.scratch + L.run_end;
  int* runs = a.scratch + L.runs;
  int* long_runs = a.scratch + L.long_runs;
  int* counters = a.scratch + L.counters;
  const Bf* dout = as_nv(a.dout);

  LOOM_LAUNCH(make_keys_kernel, wave_grid(make_keys_kernel, n), kThreads, 0, s, a.tokens, keys, bt, n, int(a.V), counters);
  if (n > 1) {
    const int tile = std::min(n, kSortTile);
    LOOM_LAUNCH(bitonic_tile_kernel, n / tile, kThreads, 0, s, keys, tile, 2, tile);
    for (int k = 2 * tile; k <= n; k <<= 1) {
      for (int j = k / 2; j >= tile; j >>= 1) {
        LOOM_LAUNCH(bitonic_step_kernel, wave_grid(bitonic_step_kernel, n / 2), kThreads, 0, s, keys, n, k, j);
      }
      LOOM_LAUNCH(bitonic_tile_kernel, n / tile, kThreads, 0, s, keys, tile, k, k);
    }
  }
  LOOM_LAUNCH(find_runs_kernel, wave_grid(find_runs_kernel, bt), kThreads, 0, s, keys, bt, run_end, runs, counters);

  // Short runs: a warp per run, up to one per position. Long runs: a block per (run, tile),
  // at most BT / 33 runs.
  const int64_t tiles = (C + kTileCols - 1) / kTileCols;
  const int64_t long_threads = (BT / (kShortRun + 1)) * tiles * kThreads;
  with_bool(vector, [&](auto v) {
    constexpr bool kVector = decltype(v)::value;
    LOOM_LAUNCH((sum_short_runs_kernel<kVector>), wave_grid(sum_short_runs_kernel<kVector>, BT * 32), kThreads, 0, s,
                dout, keys, run_end, runs, long_runs, counters, a.dwte, C);
    LOOM_LAUNCH((sum_long_runs_kernel<kVector>), wave_grid(sum_long_runs_kernel<kVector>, long_threads), kThreads, 0,
                s, dout, keys, run_end, runs, long_runs, counters, a.dwte, C);
    // A thread per (t, pack of columns), or per (t, column) on the scalar path.
    if (a.dwpe)
      LOOM_LAUNCH((dwpe_kernel<kVector>), wave_grid(dwpe_kernel<kVector>, a.T * (kVector ? C / kPack : C)), kThreads,
                  0, s, dout, a.dwpe, int(a.B), int(a.T), C, int(a.maxT), a.pos0);
  });
}

void context_tokens(const int32_t* tokens, int32_t* out, int64_t B, int64_t T, int n, int pad, Stream s) {
  LOOM_CHECK(B >= 0 && T > 0 && n >= 1 && B * T * n <= INT_MAX, "context_tokens: bad shape");
  if (B == 0) return;
  LOOM_LAUNCH(context_tokens_kernel, wave_grid(context_tokens_kernel, B * T * n), kThreads, 0, s, tokens, out, int(B), int(T), n,
              pad);
}

}  // namespace loom::cuda
