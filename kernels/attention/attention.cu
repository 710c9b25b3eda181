// attention.cu: causal multi-head attention on the GPU, FlashAttention-2 style (forward,
// backward, and a naive KV-cache decode). The [T, T] score matrix never exists: a block owns
// a tile of queries (forward) or keys (backward) and streams the other side through shared
// memory, and the softmax is computed online from a running row max and row sum.
//
// Tensor cores via mma.sync.m16n8k16 (bf16 in, f32 accumulate). Its per-lane fragment
// layout is documented, so the softmax works on accumulator registers and P (and dS) feed
// the next product straight from registers; see wmma_emu.h for the layout. Under the SIMT
// emulator the same kernels run with the mma instruction and cp.async modelled by
// wmma_emu.h: the tiling, fragment loads, masking and online softmax all run in CI.
// docs/kernels_attention.md has the tiling, FLOP counts and budgets.
#include "kernels/common/cuda_compat.h"
#include "kernels/common/hopper.cuh"
#include "kernels/common/launch.cuh"
#include "kernels/common/reduce.cuh"
#include "kernels/common/vec.cuh"

#include "kernels/attention/attention.h"
#include "kernels/attention/wmma_emu.h"

#include <atomic>

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/check.h"

namespace loom::cuda {
namespace {

using bf16raw = __nv_bfloat16;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// ---- warp-level matrix primitives ---------------------------------------------------------
// Fragments of one mma.m16n8k16: A 16x16 bf16, B 16x8 bf16 (two bf16 per register, lower
// k in the low half); accumulators are float[4]. g = lane / 4, t = lane % 4 throughout.
struct FragA {
  uint32_t x[4];
};
struct FragB {
  uint32_t x[2];
};

__device__ __forceinline__ uint32_t lds32(const bf16raw* p) {
#if LOOM_SIMT_EMULATION
  uint32_t v;  // memcpy: the host compiler's aliasing rules
  memcpy(&v, p, 4);
  return v;
#else
  return *reinterpret_cast<const uint32_t*>(p);
#endif
}
__device__ __forceinline__ void sts32(bf16raw* p, uint32_t v) {
#if LOOM_SIMT_EMULATION
  memcpy(static_cast<void*>(p), &v, 4);
#else
  *reinterpret_cast<uint32_t*>(p) = v;
#endif
}
__device__ __forceinline__ uint32_t pack_float2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t u;
  memcpy(&u, &v, 4);
  return u;
}

// Shared-memory operands of the hot loops come through ldmatrix: one instruction hands the
// warp a whole fragment, and its .trans form transposes 8x8 tiles on the way, so operands
// stored with k along rows (V, dO, Q and K in backward, dS^T) cost the same bandwidth as the
// others instead of twice as much (two 16-bit loads per register). A loader returns this
// lane's row address; realize() issues the instruction inside the warp product. Each lane
// names one 16-byte row of an 8x8 tile: lanes 8i..8i+7 the rows of tile i, tile i filling
// register i. Row strides of D + 8 (or kBr + 8) elements keep the 8 rows of a tile in
// distinct bank groups: no conflicts.
template <int kRegs, bool kTransposed>
struct Ldsm {
#if LOOM_SIMT_EMULATION  // what the emulator's model (wmma_emu.h) needs to know
  static constexpr int kNumRegs = kRegs;
  static constexpr bool kTrans = kTransposed;
#endif
  const bf16raw* row;
};

// A(m, k) at p[m * ld + k]: tiles (m 0-7, k 0-7), (m 8-15, k 0-7), (m 0-7, k 8-15), (m 8-15, k 8-15).
__device__ __forceinline__ Ldsm<4, false> load_a_mk(const bf16raw* p, int ld, int lane) {
  const int i = lane / 8, r = lane % 8;
  return {p + ((i % 2) * 8 + r) * ld + (i / 2) * 8};
}
// A(m, k) at p[k * ld + m]: the same four tiles, stored transposed.
__device__ __forceinline__ Ldsm<4, true> load_a_km(const bf16raw* p, int ld, int lane) {
  const int i = lane / 8, r = lane % 8;
  return {p + ((i / 2) * 8 + r) * ld + (i % 2) * 8};
}
// B(k, n) at p[n * ld + k]: tiles (k 0-7) and (k 8-15); lanes 16-31 repeat 0-15 (unused).
__device__ __forceinline__ Ldsm<2, false> load_b_nk(const bf16raw* p, int ld, int lane) {
  const int i = lane / 8 % 2, r = lane % 8;
  return {p + r * ld + i * 8};
}
// B(k, n) at p[k * ld + n]
__device__ __forceinline__ Ldsm<2, true> load_b_kn(const bf16raw* p, int ld, int lane) {
  const int i = lane / 8 % 2, r = lane % 8;
  return {p + (i * 8 + r) * ld};
}

// Q's fragments, loaded once per block: plain 32-bit loads, no warp collective needed.
__device__ __forceinline__ FragA load_a_mk_regs(const bf16raw* p, int ld, int g, int t) {
  FragA f;
  f.x[0] = lds32(p + g * ld + 2 * t);
  f.x[1] = lds32(p + (g + 8) * ld + 2 * t);
  f.x[2] = lds32(p + g * ld + 2 * t + 8);
  f.x[3] = lds32(p + (g + 8) * ld + 2 * t + 8);
  return f;
}

// Two accumulator tiles covering columns 16j..16j+15 are, element for element, the A
// operand of a product over those columns: P and dS never leave registers.
__device__ __forceinline__ FragA acc_to_a(const float (&lo)[4], const float (&hi)[4]) {
  FragA f;
  f.x[0] = pack_float2(lo[0], lo[1]);
  f.x[1] = pack_float2(lo[2], lo[3]);
  f.x[2] = pack_float2(hi[0], hi[1]);
  f.x[3] = pack_float2(hi[2], hi[3]);
  return f;
}

#if !LOOM_SIMT_EMULATION
__device__ __forceinline__ FragA realize(const FragA& f) { return f; }
template <bool kTrans>
__device__ __forceinline__ FragA realize(const Ldsm<4, kTrans>& op) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(op.row));
  FragA f;
  if constexpr (kTrans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(f.x[0]), "=r"(f.x[1]), "=r"(f.x[2]), "=r"(f.x[3])
                 : "r"(s));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(f.x[0]), "=r"(f.x[1]), "=r"(f.x[2]), "=r"(f.x[3])
                 : "r"(s));
  return f;
}
template <bool kTrans>
__device__ __forceinline__ FragB realize(const Ldsm<2, kTrans>& op) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(op.row));
  FragB f;
  if constexpr (kTrans)
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(f.x[0]), "=r"(f.x[1])
                 : "r"(s));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(f.x[0]), "=r"(f.x[1]) : "r"(s));
  return f;
}

__device__ __forceinline__ void mma_bf16(float (&c)[4], const FragA& a, const FragB& b) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a.x[0]), "r"(a.x[1]), "r"(a.x[2]), "r"(a.x[3]), "r"(b.x[0]), "r"(b.x[1]));
}
#endif

// One warp-tile product acc[mt][nt] += sum_kt A(mt, kt) B(kt, nt). The loaders are lambdas
// returning a register fragment (Q, P, dS) or an ldmatrix operand (shared memory); each B
// fragment is loaded once and reused across the MT row tiles, which is what more rows per
// warp buys (half the shared-memory traffic per FLOP at MT = 2).
struct WarpMma {
#if LOOM_SIMT_EMULATION
  attn_emu::MmaStage stage;
#endif
  template <int MT, int KT, int NT, class LoadA, class LoadB>
  __device__ __forceinline__ void gemm(float (&acc)[MT][NT][4], LoadA&& load_a, LoadB&& load_b) {
#if LOOM_SIMT_EMULATION
    stage.gemm<MT, KT, NT>(acc, load_a, load_b);
#else
#pragma unroll
    for (int kt = 0; kt < KT; ++kt) {
      FragA a[MT];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) a[mt] = realize(load_a(mt, kt));
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const FragB b = realize(load_b(kt, nt));
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) mma_bf16(acc[mt][nt], a[mt], b);
      }
    }
#endif
  }
};

// Clears M x N accumulator tiles (registers: the loops unroll to constant indices).
template <int M, int N>
__device__ __forceinline__ void zero_tiles(float (&acc)[M][N][4]) {
#pragma unroll
  for (int m = 0; m < M; ++m)
#pragma unroll
    for (int n = 0; n < N; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[m][n][i] = 0.f;
}

// ---- cp.async ---------------------------------------------------------------------------
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, bool valid) {
#if LOOM_SIMT_EMULATION
  attn_emu::cp_async_16(smem, gmem, valid);
#else
  // src-size 0 zero-fills the 16 bytes: rows past the sequence end read as zeros, never as
  // stale data (0 * NaN would poison the products).
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(valid ? 16 : 0));
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if LOOM_SIMT_EMULATION
  attn_emu::cp_async_commit();
#else
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
__device__ __forceinline__ void cp_async_wait_all() {
#if LOOM_SIMT_EMULATION
  attn_emu::cp_async_wait(0);
#else
  asm volatile("cp.async.wait_group 0;\n" ::);
#endif
}

// 2^x; the hardware's approximation on the GPU (maps -inf to +0 as the softmax needs).
__device__ __forceinline__ float exp2_approx(float x) {
#if LOOM_SIMT_EMULATION
  return exp2f(x);
#else
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#endif
}

// Row reductions over the 4 lanes of a quad (the lanes holding one accumulator row). Both
// rows of a lane (g and g + 8) travel in one 64-bit shuffle: half the warp collectives,
// which is what the emulator pays for.
__device__ __forceinline__ unsigned long long pack_2f(float a, float b) {
  return (static_cast<unsigned long long>(__float_as_uint(b)) << 32) | __float_as_uint(a);
}
__device__ __forceinline__ void quad_max2(float& a, float& b) {
#pragma unroll
  for (int off = 1; off <= 2; off <<= 1) {
    const unsigned long long o = __shfl_xor_sync(0xffffffffu, pack_2f(a, b), off);
    a = fmaxf(a, __uint_as_float(static_cast<unsigned>(o)));
    b = fmaxf(b, __uint_as_float(static_cast<unsigned>(o >> 32)));
  }
}
__device__ __forceinline__ void quad_sum2(float& a, float& b) {
#pragma unroll
  for (int off = 1; off <= 2; off <<= 1) {
    const unsigned long long o = __shfl_xor_sync(0xffffffffu, pack_2f(a, b), off);
    a += __uint_as_float(static_cast<unsigned>(o));
    b += __uint_as_float(static_cast<unsigned>(o >> 32));
  }
}

// Copies rows [r0, r0 + kRows) of a [T, *] bf16 matrix (D columns from src, row stride
// ld_src) into smem rows of stride kLd, 16 bytes per cp.async; rows >= T become zeros.
template <int kRows, int D, int kLd, int kThreads>
__device__ __forceinline__ void load_rows_async(bf16raw* dst, const bf16raw* src, int64_t ld_src, int r0, int T) {
  constexpr int kChunks = D / 8;
#pragma unroll
  for (int c = int(threadIdx.x); c < kRows * kChunks; c += kThreads) {
    const int r = c / kChunks, col = c % kChunks * 8;
    const bool valid = r0 + r < T;
    cp_async_16(dst + r * kLd + col, valid ? src + (r0 + r) * ld_src + col : src, valid);
  }
}

// Writes a warp's rows (staged as bf16 in smem with stride kLd) to global rows of stride
// ld_dst with 16-byte stores, skipping rows >= T. store_128_global, not store_128: nvcc 13
// splits the latter's int4 store into four st.global.u32 here (the forward's PTX had 4 of
// them a kernel, the backward's 8, against 0 st.global.v4); the asm-backed store stays one
// st.global.v4 (STG.E.128), as counted in docs/kernels_attention.md.
template <int kRows, int D, int kLd>
__device__ __forceinline__ void store_rows(bf16raw* dst, int64_t ld_dst, const bf16raw* src, int r0, int T, int lane) {
  constexpr int kChunks = D / 8;
  for (int c = lane; c < kRows * kChunks; c += 32) {
    const int r = c / kChunks, col = c % kChunks * 8;
    if (r0 + r < T) store_128_global(dst + (r0 + r) * ld_dst + col, load_128(src + r * kLd + col));
  }
}

// ---- problem -------------------------------------------------------------------------------
// One attention problem in strided form, as the kernels read it: self-attention is q, k and v
// at columns 0, C and 2C of the qkv rows (stride 3C); cross-attention q rows of stride C and
// k, v at columns 0 and C of the kv rows (stride 2C). Per batch row, len = key_len[b] (clamped
// to [1, Tk]; Tk without key padding) bounds the keys: query i sees keys [lo, hi] with lo its
// document start (0 without the mask) and hi = causal ? min(i, len - 1) : len - 1. Key rows at
// or past len are never loaded (they read as zeros), so whatever they hold cannot leak in.
struct Problem {
  const bf16raw* q;
  const bf16raw* k;
  const bf16raw* v;
  int64_t ldq, ldkv;
  int Tq, Tk, H;
  bool causal;
  const int32_t* doc_start;  // [B, Tq] optional (causal self-attention only)
  const int32_t* key_len;    // [B] optional
};
__device__ __forceinline__ int key_len_of(const Problem& p, int b) {
  return p.key_len ? min(max(p.key_len[b], 1), p.Tk) : p.Tk;
}

// ---- forward ------------------------------------------------------------------------------
// A block: kBr queries of one (b, h), 4 warps of 16 * kMT query rows each. Key/value tiles of
// kBc rows stream through a double-buffered cp.async pipeline; Q stays in registers.
template <int D>
struct FwdTile {
  static constexpr int kWarps = 4, kThreads = 32 * kWarps;
  // Two row tiles per warp halve the shared-memory reads per FLOP; at D = 128 the
  // accumulators of a second tile would not fit the register file.
  static constexpr int kMT = D <= 64 ? 2 : 1;
  static constexpr int kBr = 16 * kMT * kWarps;
  static constexpr int kBc = 64;
  static constexpr int kLd = D + 8;  // +16 bytes a row: conflict-free fragment loads
  static constexpr size_t kSmemBytes = size_t(kBr + 4 * kBc) * kLd * sizeof(bf16raw);
  static_assert(valid_block(kThreads));
  static_assert(kSmemBytes <= kSmemPerBlockLimit, "attention forward: Q, K and V tiles exceed a block's shared memory");
};

// kDoc: the document mask is compiled in only where it is used: held across the key loop, the
// rows' starts would push the D=64 kernel past 255 registers into local memory.
template <int D, bool kDoc>
__global__ void __launch_bounds__(FwdTile<D>::kThreads)
    attention_fwd_kernel(const Problem p, bf16raw* __restrict__ out, float* __restrict__ lse, float scale_log2) {
  using Tile = FwdTile<D>;
  constexpr int kMT = Tile::kMT, kBr = Tile::kBr, kBc = Tile::kBc, kLd = Tile::kLd;
  constexpr int kNT = kBc / 8, kDT = D / 8, kDK = D / 16, kCK = kBc / 16;
  LOOM_DYNAMIC_SMEM(bf16raw, smem);
  bf16raw* sQ = smem;                 // [kBr][kLd]; later this warp's output staging
  bf16raw* sK = sQ + kBr * kLd;       // [2][kBc][kLd]
  bf16raw* sV = sK + 2 * kBc * kLd;   // [2][kBc][kLd]

  const int H = p.H, C = H * D, T = p.Tq;
  // Heaviest query tiles first: under the causal mask the last tiles see the most keys.
  const int q0 = int(gridDim.x - 1 - blockIdx.x) * kBr;
  const int bh = int(blockIdx.y), b = bh / H, h = bh % H;
  const int64_t ld_q = p.ldq, ld_kv = p.ldkv;
  const bf16raw* q_src = p.q + int64_t(b) * T * ld_q + int64_t(h) * D;
  const bf16raw* k_src = p.k + int64_t(b) * p.Tk * ld_kv + int64_t(h) * D;
  const bf16raw* v_src = p.v + int64_t(b) * p.Tk * ld_kv + int64_t(h) * D;
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32, g = lane / 4, t = lane % 4;
  const int row0 = q0 + warp * 16 * kMT;       // this warp's first query
  const int row_last = row0 + 16 * kMT - 1;
  const bool causal = p.causal;
  const int len = key_len_of(p, b), last = len - 1;
  // Keys any row of the tile sees lie below kv_end (causal: up to the tile's last query).
  const int kv_end = causal ? min(q0 + kBr, len) : len;
  const int n_kb = (kv_end + kBc - 1) / kBc;
  // The smallest last key of this warp's rows: tiles past it need the mask.
  const int warp_last = causal ? min(row0, last) : last;
  // Document mask: a row sees keys from its document's start on. doc_start is nondecreasing,
  // so the block's first row has the smallest start (key tiles before it are skipped whole)
  // and a warp's first and last rows bound its rows' starts. Rows past T take the last row's.
  const int32_t* doc = kDoc ? p.doc_start + int64_t(b) * T : nullptr;
  auto doc_of = [&](int row) { return doc ? doc[min(row, T - 1)] : 0; };
  const int j_begin = doc_of(q0) / kBc;
  const int warp_lo = doc_of(row0), warp_hi = doc_of(row_last);
  int lo[kMT][2];  // this lane's rows' first keys
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int r = 0; r < 2; ++r) lo[mt][r] = doc_of(row0 + mt * 16 + g + 8 * r);

  load_rows_async<kBr, D, kLd, Tile::kThreads>(sQ, q_src, ld_q, q0, T);
  load_rows_async<kBc, D, kLd, Tile::kThreads>(sK + (j_begin & 1) * kBc * kLd, k_src, ld_kv, j_begin * kBc, len);
  load_rows_async<kBc, D, kLd, Tile::kThreads>(sV + (j_begin & 1) * kBc * kLd, v_src, ld_kv, j_begin * kBc, len);
  cp_async_commit();

  float o[kMT][kDT][4];
  float m[kMT][2], l[kMT][2];  // running max (log2 domain) and this lane's share of the sum
  zero_tiles(o);
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
    m[mt][0] = m[mt][1] = -INFINITY;
    l[mt][0] = l[mt][1] = 0.f;
  }
  WarpMma mma;

  cp_async_wait_all();
  __syncthreads();
  FragA qf[kMT][kDK];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int kt = 0; kt < kDK; ++kt) qf[mt][kt] = load_a_mk_regs(sQ + (warp * 16 * kMT + mt * 16) * kLd + kt * 16, kLd, g, t);

  for (int j = j_begin; j < n_kb; ++j) {
    // Prefetch the next tile into the other buffer; its last readers finished before the
    // barrier that ended the previous iteration.
    if (j + 1 < n_kb) {
      const int nb = (j + 1) & 1;
      load_rows_async<kBc, D, kLd, Tile::kThreads>(sK + nb * kBc * kLd, k_src, ld_kv, (j + 1) * kBc, len);
      load_rows_async<kBc, D, kLd, Tile::kThreads>(sV + nb * kBc * kLd, v_src, ld_kv, (j + 1) * kBc, len);
    }
    cp_async_commit();
    const int k0 = j * kBc;
    // Warp-uniform skip of a tile wholly above this warp's rows, or wholly before all of its
    // rows' documents (tile count and barriers stay block-uniform).
    if ((!causal || k0 <= row_last) && k0 + kBc > warp_lo) {
      const bf16raw* kb = sK + (j & 1) * kBc * kLd;
      const bf16raw* vb = sV + (j & 1) * kBc * kLd;
      float s[kMT][kNT][4];
      zero_tiles(s);
      mma.gemm<kMT, kDK, kNT>(
          s, [&](int mt, int kt) { return qf[mt][kt]; },
          [&](int kt, int nt) { return load_b_nk(kb + nt * 8 * kLd + kt * 16, kLd, lane); });

      // Scores to the log2 domain (exp2 is one instruction), causal and key-padding mask on
      // tiles that reach past some row's last key, document mask on tiles that reach before
      // some row's document start.
      const bool edge = k0 + kBc - 1 > warp_last;
      const bool doc_edge = k0 < warp_hi;
      float mx[kMT][2];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
        mx[mt][0] = mx[mt][1] = -INFINITY;
#pragma unroll
        for (int n = 0; n < kNT; ++n)
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            float x = s[mt][n][i] * scale_log2;
            const int key = k0 + n * 8 + 2 * t + (i & 1);
            const int row = row0 + mt * 16 + g + 8 * (i >> 1);
            if ((edge && key > (causal ? min(row, last) : last)) || (doc_edge && key < lo[mt][i >> 1])) x = -INFINITY;
            s[mt][n][i] = x;
            mx[mt][i >> 1] = fmaxf(mx[mt][i >> 1], x);
          }
      }
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) quad_max2(mx[mt][0], mx[mt][1]);

      // Online softmax: rescale what was accumulated under the old max, then add this tile.
      // A row may see no key of a tile (before its document starts, or above the diagonal)
      // and so keep a max of -inf for a while; the guard keeps exp2(-inf - -inf) from making
      // NaN (its p and alpha are 0). Every row sees some key (its own under the document
      // mask, key 0 otherwise), so its final max is finite.
      float base[kMT][2];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const float m_new = fmaxf(m[mt][r], mx[mt][r]);
          base[mt][r] = m_new == -INFINITY ? 0.f : m_new;
          const float alpha = exp2_approx(m[mt][r] - base[mt][r]);
          m[mt][r] = m_new;
          l[mt][r] *= alpha;
#pragma unroll
          for (int n = 0; n < kDT; ++n) {
            o[mt][n][2 * r] *= alpha;
            o[mt][n][2 * r + 1] *= alpha;
          }
        }
      FragA pa[kMT][kCK];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
        for (int n = 0; n < kNT; ++n)
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const float pv = exp2_approx(s[mt][n][i] - base[mt][i >> 1]);
            l[mt][i >> 1] += pv;
            s[mt][n][i] = pv;
          }
#pragma unroll
        for (int kk = 0; kk < kCK; ++kk) pa[mt][kk] = acc_to_a(s[mt][2 * kk], s[mt][2 * kk + 1]);
      }
      mma.gemm<kMT, kCK, kDT>(
          o, [&](int mt, int kt) { return pa[mt][kt]; },
          [&](int kt, int nt) { return load_b_kn(vb + kt * 16 * kLd + nt * 8, kLd, lane); });
    }
    cp_async_wait_all();
    __syncthreads();
  }

  // Epilogue: O / l as bf16, staged in this warp's own rows of sQ (no other warp reads
  // them) so that global stores are 16 bytes wide; lse in natural log.
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) quad_sum2(l[mt][0], l[mt][1]);
  bf16raw* so = sQ + warp * 16 * kMT * kLd;
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float inv = 1.f / l[mt][r];
#pragma unroll
      for (int n = 0; n < kDT; ++n)
        sts32(so + (mt * 16 + g + 8 * r) * kLd + n * 8 + 2 * t,
              pack_float2(o[mt][n][2 * r] * inv, o[mt][n][2 * r + 1] * inv));
    }
  __syncwarp();
  store_rows<16 * kMT, D, kLd>(out + int64_t(b) * T * C + int64_t(h) * D, C, so, row0, T, lane);
  if (t == 0) {
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int row = row0 + mt * 16 + g + 8 * r;
        if (row < T) lse[int64_t(bh) * T + row] = (m[mt][r] + log2f(l[mt][r])) * kLn2;
      }
  }
}

#include "kernels/attention/attention_sm90.cuh"

// ---- backward -----------------------------------------------------------------------------
// A block: kBc = 64 keys of one (b, h), 16 per warp; dK and dV accumulate in registers while
// tiles of kBr queries (Q, dO, lse, delta) stream through a double buffer. Per query tile,
// with scores transposed (rows = keys) so that P^T and dS^T are A operands in registers:
//   S^T = K Q^T,  P^T = exp(S^T - lse),  dV += P^T dO,  dP^T = V dO^T,
//   dS^T = P^T * (dP^T - delta),  dK += dS^T Q,  dQ += dS K (via smem, atomics to f32).
// dQ: every key block adds its share into an f32 buffer with atomicAdd (not deterministic:
// the order of the float additions varies run to run), converted to bf16 by a last kernel.
template <int D>
struct BwdTile {
  static constexpr int kWarps = 4, kThreads = 32 * kWarps;
  static constexpr int kBc = 16 * kWarps;
  // At D = 128 a 64-query tile's S^T and dP^T next to dK and dV would spill.
  static constexpr int kBr = D <= 64 ? 64 : 32;
  static constexpr int kLd = D + 8, kLdS = kBr + 8;
  // dQ = dS K is a [kBr, D] product: warps split its rows first, then its columns.
  static constexpr int kDqWarpsM = kBr / 16 < kWarps ? kBr / 16 : kWarps;
  static constexpr int kDqWarpsN = kWarps / kDqWarpsM;
  static constexpr int kDqMT = kBr / 16 / kDqWarpsM, kDqNT = D / 8 / kDqWarpsN;
  static_assert(kDqMT >= 1 && kDqNT >= 1 && kDqWarpsM * kDqWarpsN == kWarps);
  static constexpr size_t kBf16Elems = size_t(2 * kBc + 4 * kBr) * kLd + size_t(kBc) * kLdS;
  // + lse, delta and the document starts of two query tiles
  static constexpr size_t kSmemBytes = kBf16Elems * sizeof(bf16raw) + 4 * kBr * sizeof(float) + 2 * kBr * sizeof(int32_t);
  static_assert(valid_block(kThreads));
  static_assert(kSmemBytes <= kSmemPerBlockLimit, "attention backward: the tiles exceed a block's shared memory");
};

// dk, dv: strided like k and v (ldkv); absent (null) where k and v need no gradient.
// dq_order: null, or the counters of a deterministic dQ (below), order_stride a (b, h).
struct BwdOut {
  float* dq_acc;  // [B, Tq, C] f32
  bf16raw* dk;
  bf16raw* dv;
  int32_t* dq_order;
  int order_stride;
};

// Deterministic dQ (AttentionBwd::deterministic): without it, the key blocks that see a query
// tile add their dQ into its f32 rows with atomics in whatever order they run, so the float
// sums differ in their last bits from run to run. With it, they add in key-block order: a
// counter per (b, h, query tile) holds how many blocks have added; block j waits until it
// equals the number of blocks before j that see the tile, adds, and counts itself. Those are
// all blocks from the first that sees the tile (j_first: 0, or with the document mask the
// block of the tile's first query's document start, doc[q0] / kBc) up to j - 1: under the
// causal mask, key padding and the document mask alike, the blocks that see a tile are
// consecutive. The wait is for blocks of lower index, which the GPU starts first (as
// FlashAttention-3's deterministic backward assumes); under the emulator they have finished.
__device__ __forceinline__ void dq_order_wait(int32_t* counter, int target) {
  while (atomicAdd(counter, 0) != target) __nanosleep(64);
  __threadfence();  // the earlier blocks' additions before this block's
}
__device__ __forceinline__ void dq_order_signal(int32_t* counter) {
  __threadfence();  // this block's additions (ordered by the barrier before) before the count
  atomicAdd(counter, 1);
}

template <int D>
__global__ void __launch_bounds__(BwdTile<D>::kThreads)
    attention_bwd_kernel(const Problem p, const bf16raw* __restrict__ dout, const float* __restrict__ lse,
                         const float* __restrict__ delta, const BwdOut o, float scale_log2, float scale) {
  using Tile = BwdTile<D>;
  constexpr int kBr = Tile::kBr, kBc = Tile::kBc, kLd = Tile::kLd, kLdS = Tile::kLdS;
  constexpr int kDT = D / 8, kDK = D / 16, kRT = kBr / 8, kRK = kBr / 16;
  LOOM_DYNAMIC_SMEM(bf16raw, smem);
  bf16raw* sK = smem;                  // [kBc][kLd]
  bf16raw* sV = sK + kBc * kLd;        // [kBc][kLd]
  bf16raw* sQ = sV + kBc * kLd;        // [2][kBr][kLd]; at the end dK/dV staging
  bf16raw* sdO = sQ + 2 * kBr * kLd;   // [2][kBr][kLd]
  bf16raw* sdS = sdO + 2 * kBr * kLd;  // [kBc][kLdS]: dS^T of the current query tile
  float* sL = reinterpret_cast<float*>(sdS + kBc * kLdS);  // [2][kBr]: lse * log2(e)
  float* sDelta = sL + 2 * kBr;                            // [2][kBr]
  int32_t* sDoc = reinterpret_cast<int32_t*>(sDelta + 2 * kBr);  // [2][kBr]: doc_start (document mask only)

  const int H = p.H, C = H * D, T = p.Tq;
  const int k0 = int(blockIdx.x) * kBc;
  const int bh = int(blockIdx.y), b = bh / H, h = bh % H;
  const int64_t ld_q = p.ldq, ld_kv = p.ldkv;
  const bf16raw* q_src = p.q + int64_t(b) * T * ld_q + int64_t(h) * D;
  const int64_t kv_off = int64_t(b) * p.Tk * ld_kv + int64_t(h) * D;
  const bool causal = p.causal;
  const int len = key_len_of(p, b);
  float* dq_acc = o.dq_acc;
  const bf16raw* do_src = dout + int64_t(b) * T * C + int64_t(h) * D;
  const float* lse_row = lse + int64_t(bh) * T;
  const float* delta_row = delta + int64_t(bh) * T;
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32, g = lane / 4, t = lane % 4;
  const int key0 = k0 + warp * 16;  // this warp's first key
  // Causal: queries before this block's first key see none of its keys.
  const int i_begin = causal ? k0 / kBr : 0;
  // Document mask: queries whose document starts after this block's last key see none of its
  // keys, and (doc_start nondecreasing) neither does any later query: the query tiles stop
  // at the first such query, found by a binary search every thread runs alike.
  const int32_t* doc = p.doc_start ? p.doc_start + int64_t(b) * T : nullptr;
  // A block wholly past the key length sees no query: it only writes its zero gradients.
  int q_end = k0 < len ? T : 0;
  if (doc) {
    int lo_q = min(k0, T), hi_q = T;  // the first query in [lo_q, hi_q) with doc > k0 + kBc - 1
    while (lo_q < hi_q) {
      const int mid = (lo_q + hi_q) / 2;
      if (doc[mid] > k0 + kBc - 1) hi_q = mid; else lo_q = mid + 1;
    }
    q_end = lo_q;
  }
  const int n_qb = max((q_end + kBr - 1) / kBr, i_begin);

  // Query tile i into buffer `buf`: Q and dO by cp.async; lse and delta by plain loads
  // (their rows are not 16-byte aligned), visible after the next barrier like the rest.
  // Rows past T get lse = +inf, so their P is exactly 0 (and the last row's document start,
  // which keeps the starts nondecreasing).
  auto load_query_tile = [&](int i, int buf) {
    load_rows_async<kBr, D, kLd, Tile::kThreads>(sQ + buf * kBr * kLd, q_src, ld_q, i * kBr, T);
    load_rows_async<kBr, D, kLd, Tile::kThreads>(sdO + buf * kBr * kLd, do_src, C, i * kBr, T);
    for (int r = int(threadIdx.x); r < kBr; r += Tile::kThreads) {
      const int q = i * kBr + r;
      sL[buf * kBr + r] = q < T ? lse_row[q] * kLog2e : INFINITY;
      sDelta[buf * kBr + r] = q < T ? delta_row[q] : 0.f;
      if (doc) sDoc[buf * kBr + r] = doc[min(q, T - 1)];
    }
  };
  load_rows_async<kBc, D, kLd, Tile::kThreads>(sK, p.k + kv_off, ld_kv, k0, len);
  load_rows_async<kBc, D, kLd, Tile::kThreads>(sV, p.v + kv_off, ld_kv, k0, len);
  load_query_tile(i_begin, 0);
  cp_async_commit();

  float dk[1][kDT][4], dv[1][kDT][4];
  zero_tiles(dk);
  zero_tiles(dv);
  WarpMma mma;
  cp_async_wait_all();
  __syncthreads();

  for (int qi = i_begin; qi < n_qb; ++qi) {
    // Prefetch the next query tile into the other buffer: its readers (the products of the
    // previous step) finished before the barrier that ended that step.
    const int buf = (qi - i_begin) & 1, q0 = qi * kBr;
    if (qi + 1 < n_qb) load_query_tile(qi + 1, buf ^ 1);
    cp_async_commit();
    const bf16raw* sQb = sQ + buf * kBr * kLd;
    const bf16raw* sdOb = sdO + buf * kBr * kLd;
    const float* sLb = sL + buf * kBr;
    const float* sDb = sDelta + buf * kBr;
    const int32_t* sDocb = sDoc + buf * kBr;

    float ds[1][kRT][4];  // S^T, then P^T, then dS^T
    zero_tiles(ds);
    // A warp whose keys all lie after the tile's last query (causal), all at or past the key
    // length, or all before the document start of its first query (the smallest), gets
    // P = 0: skip its products.
    if ((!causal || key0 <= q0 + kBr - 1) && key0 < len && (!doc || key0 + 15 >= sDocb[0])) {
      mma.gemm<1, kDK, kRT>(
          ds, [&](int, int kt) { return load_a_mk(sK + warp * 16 * kLd + kt * 16, kLd, lane); },
          [&](int kt, int nt) { return load_b_nk(sQb + nt * 8 * kLd + kt * 16, kLd, lane); });
      // P recomputed from the saved lse (no running max needed: lse is final); the mask
      // is a select, not an add, so the exponent of a masked score may overflow harmlessly.
      // The document mask, as in forward, where some query of the tile starts its document
      // after this warp's first key.
      const bool diag = causal && key0 + 15 > q0;
      const bool pad_edge = key0 + 15 >= len;
      const bool doc_edge = doc && key0 < sDocb[kBr - 1];
#pragma unroll
      for (int n = 0; n < kRT; ++n)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int c = n * 8 + 2 * t + (i & 1), key = key0 + g + 8 * (i >> 1);
          const float pv = exp2_approx(ds[0][n][i] * scale_log2 - sLb[c]);
          ds[0][n][i] = (diag && key > q0 + c) || (pad_edge && key >= len) || (doc_edge && key < sDocb[c]) ? 0.f : pv;
        }
      FragA pa[1][kRK];
#pragma unroll
      for (int kk = 0; kk < kRK; ++kk) pa[0][kk] = acc_to_a(ds[0][2 * kk], ds[0][2 * kk + 1]);
      mma.gemm<1, kRK, kDT>(
          dv, [&](int, int kt) { return pa[0][kt]; },
          [&](int kt, int nt) { return load_b_kn(sdOb + kt * 16 * kLd + nt * 8, kLd, lane); });

      float dp[1][kRT][4];
      zero_tiles(dp);
      mma.gemm<1, kDK, kRT>(
          dp, [&](int, int kt) { return load_a_mk(sV + warp * 16 * kLd + kt * 16, kLd, lane); },
          [&](int kt, int nt) { return load_b_nk(sdOb + nt * 8 * kLd + kt * 16, kLd, lane); });
#pragma unroll
      for (int n = 0; n < kRT; ++n)
#pragma unroll
        for (int i = 0; i < 4; ++i) ds[0][n][i] *= dp[0][n][i] - sDb[n * 8 + 2 * t + (i & 1)];

      FragA dsa[1][kRK];
#pragma unroll
      for (int kk = 0; kk < kRK; ++kk) dsa[0][kk] = acc_to_a(ds[0][2 * kk], ds[0][2 * kk + 1]);
      mma.gemm<1, kRK, kDT>(
          dk, [&](int, int kt) { return dsa[0][kt]; },
          [&](int kt, int nt) { return load_b_kn(sQb + kt * 16 * kLd + nt * 8, kLd, lane); });
    }
    // dS^T to smem for the dQ product, which needs it with rows = queries: the only operand
    // that changes hands between warps (dQ's rows mix the keys of all four warps).
#pragma unroll
    for (int n = 0; n < kRT; ++n)
#pragma unroll
      for (int r = 0; r < 2; ++r)
        sts32(sdS + (warp * 16 + g + 8 * r) * kLdS + n * 8 + 2 * t, pack_float2(ds[0][n][2 * r], ds[0][n][2 * r + 1]));
    __syncthreads();

    // dQ[q0 .. q0 + kBr) += dS K; the softmax scale is applied when converting to bf16.
    // Every key block that sees these queries adds into the same f32 rows, hence atomics
    // (fire-and-forget reductions: the result is not read back here).
    constexpr int kMT = Tile::kDqMT, kNT = Tile::kDqNT;
    const int wm = warp % Tile::kDqWarpsM, wn = warp / Tile::kDqWarpsM;
    float dq[kMT][kNT][4];
    zero_tiles(dq);
    mma.gemm<kMT, kBc / 16, kNT>(
        dq, [&](int mt, int kt) { return load_a_km(sdS + kt * 16 * kLdS + (wm * kMT + mt) * 16, kLdS, lane); },
        [&](int kt, int nt) { return load_b_kn(sK + kt * 16 * kLd + (wn * kNT + nt) * 8, kLd, lane); });
    int32_t* order = o.dq_order ? o.dq_order + int64_t(bh) * o.order_stride + qi : nullptr;
    if (order) {
      if (threadIdx.x == 0) dq_order_wait(order, int(blockIdx.x) - (doc ? doc[q0] / kBc : 0));
      __syncthreads();
    }
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int q = q0 + (wm * kMT + mt) * 16 + g + 8 * r;
        if (q < T) {
          float* dst = dq_acc + (int64_t(b) * T + q) * C + int64_t(h) * D + wn * kNT * 8 + 2 * t;
#pragma unroll
          for (int n = 0; n < kNT; ++n) {
            atomicAdd(dst + n * 8, dq[mt][n][2 * r]);
            atomicAdd(dst + n * 8 + 1, dq[mt][n][2 * r + 1]);
          }
        }
      }
    if (order) {
      __syncthreads();
      if (threadIdx.x == 0) dq_order_signal(order);
    }
    cp_async_wait_all();
    __syncthreads();
  }

  // Epilogue: dK (times the softmax scale) and dV through this warp's rows of sQ, which no
  // one reads any more after the last barrier.
  // (A lambda over the accumulator, not a runtime pick between dk and dv: indexing register
  // arrays through a pointer would move them to local memory.)
  bf16raw* st = sQ + warp * 16 * kLd;
  if (!o.dk) return;  // k and v need no gradient
  auto store_acc = [&](const float (&acc)[1][kDT][4], float f, bf16raw* part) {
#pragma unroll
    for (int n = 0; n < kDT; ++n)
#pragma unroll
      for (int r = 0; r < 2; ++r)
        sts32(st + (g + 8 * r) * kLd + n * 8 + 2 * t, pack_float2(acc[0][n][2 * r] * f, acc[0][n][2 * r + 1] * f));
    __syncwarp();
    store_rows<16, D, kLd>(part, ld_kv, st, key0, p.Tk, lane);
    __syncwarp();
  };
  store_acc(dk, scale, o.dk + kv_off);
  store_acc(dv, 1.f, o.dv + kv_off);
}

// delta = rowsum(dO * O) per (b, h, t), and the dQ accumulator zeroed: one thread a row.
// A row is at most 128 elements (16 vector loads), too short to share between threads;
// zeroing dQ here saves a separate memset over the same rows. The first n_order threads also
// zero the deterministic dQ's counters (fewer than the rows: a counter per 32 queries a head).
constexpr int kRowThreads = 128;  // prep and dQ conversion kernels: a thread a row or 8 elements
static_assert(valid_block(kRowThreads));

template <int D>
__global__ void __launch_bounds__(kRowThreads)
    attention_bwd_prep_kernel(const bf16raw* __restrict__ out, const bf16raw* __restrict__ dout,
                              float* __restrict__ delta, float* __restrict__ dq_acc, int32_t* __restrict__ order,
                              int64_t n_order, int64_t rows, int T, int H) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx < n_order) order[idx] = 0;
  if (idx >= rows) return;
  const int h = int(idx % H);
  const int64_t bt = idx / H, b = bt / T, tq = bt % T;
  const int64_t off = bt * H * D + int64_t(h) * D;
  float sum = 0.f;
#pragma unroll
  for (int c = 0; c < D; c += 8) {
    const Pack128<bf16raw> o = load_128(out + off + c), d = load_128(dout + off + c);
#pragma unroll
    for (int k = 0; k < 8; ++k) sum = fmaf(to_float(o[k]), to_float(d[k]), sum);
  }
  delta[(b * H + h) * T + tq] = sum;
  Pack128<float> zero;
#pragma unroll
  for (int k = 0; k < 4; ++k) zero[k] = 0.f;
#pragma unroll
  for (int c = 0; c < D; c += 4) store_128_global(dq_acc + off + c, zero);
}

// dQ (f32, [B*T, C]) times the softmax scale into dq (rows of stride ld_dq: the q columns of
// dqkv, or cross-attention's dq), 8 elements a thread (one 16-byte store; C is a multiple of 16).
__global__ void __launch_bounds__(kRowThreads)
    attention_bwd_dq_kernel(const float* __restrict__ dq_acc, bf16raw* __restrict__ dq, int64_t ld_dq, int64_t chunks,
                            int C, float scale) {
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= chunks) return;
  const int64_t row = idx / (C / 8);
  const int col = int(idx % (C / 8)) * 8;
  const Pack128<float> lo = load_128(dq_acc + row * C + col), hi = load_128(dq_acc + row * C + col + 4);
  Pack128<bf16raw> r;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    r[k] = from_float<bf16raw>(lo[k] * scale);
    r[k + 4] = from_float<bf16raw>(hi[k] * scale);
  }
  store_128_global(dq + row * ld_dq + col, r);
}

// ---- decode -------------------------------------------------------------------------------
// Naive on purpose (decoding is bandwidth-bound and small): one block per (b, h), one key per
// thread per chunk with an online softmax across chunks, one output column per thread.
constexpr int kDecodeThreads = 128;
static_assert(valid_block(kDecodeThreads) && 2 * kDecodeThreads * sizeof(float) <= kStaticSmemLimit);

// One query (sq: D floats, times the scale) over keys 0 .. n - 1 (k and v rows of stride ld):
// one key per thread per chunk with an online softmax across chunks; returns the output of
// column tid (threads tid < D). Every thread of the block calls it (it holds barriers).
__device__ __forceinline__ float attend_keys(const float* sq, float* sp, const bf16raw* kc, const bf16raw* vc, int ld,
                                             int n, int D) {
  const int tid = int(threadIdx.x);
  float m = -INFINITY, l = 0.f, acc = 0.f;
  for (int c0 = 0; c0 < n; c0 += kDecodeThreads) {
    const int j = c0 + tid;
    float s = -INFINITY;
    if (j < n) {
      s = 0.f;
      for (int d = 0; d < D; ++d) s = fmaf(sq[d], to_float(kc[int64_t(j) * ld + d]), s);
    }
    const float m_new = fmaxf(m, block_max(s));  // finite: key 0 is in the first chunk
    const float alpha = expf(m - m_new);
    const float p = j < n ? expf(s - m_new) : 0.f;
    sp[tid] = p;
    l = l * alpha + block_sum(p);
    m = m_new;
    __syncthreads();  // sp complete
    if (tid < D) {
      acc *= alpha;
      const int cnt = min(kDecodeThreads, n - c0);
      for (int i = 0; i < cnt; ++i) acc = fmaf(sp[i], to_float(vc[int64_t(c0 + i) * ld + tid]), acc);
    }
    __syncthreads();  // sp read before the next chunk rewrites it
  }
  return acc / l;
}

__global__ void __launch_bounds__(kDecodeThreads)
    attention_decode_kernel(const bf16raw* __restrict__ qkv, bf16raw* __restrict__ kcache,
                            bf16raw* __restrict__ vcache, bf16raw* __restrict__ out, const int32_t* __restrict__ pos0_ptr,
                            int Tn, int H, int D, int maxT, float scale) {
  __shared__ float sq[kDecodeThreads];  // the query, times the scale
  __shared__ float sp[kDecodeThreads];  // this chunk's probabilities
  const int bh = int(blockIdx.x), b = bh / H, h = bh % H, C = H * D, tid = int(threadIdx.x);
  // pos0 lives in device memory so that a captured graph can replay the step as the cache
  // grows, without re-capturing.
  const int pos0 = *pos0_ptr;
  bf16raw* kc = kcache + int64_t(bh) * maxT * D;
  bf16raw* vc = vcache + int64_t(bh) * maxT * D;
  // A cache position out of range is the caller's bug; NaN outputs make it visible without
  // writing outside the caches.
  if (pos0 < 0 || pos0 + Tn > maxT) {
    for (int i = tid; i < Tn * D; i += kDecodeThreads)
      out[(int64_t(b) * Tn + i / D) * C + int64_t(h) * D + i % D] = from_float<bf16raw>(NAN);
    return;
  }
  for (int i = tid; i < Tn * D; i += kDecodeThreads) {
    const bf16raw* row = qkv + (int64_t(b) * Tn + i / D) * 3 * C + int64_t(h) * D + i % D;
    kc[int64_t(pos0 + i / D) * D + i % D] = row[C];
    vc[int64_t(pos0 + i / D) * D + i % D] = row[2 * C];
  }
  for (int tn = 0; tn < Tn; ++tn) {
    __syncthreads();  // cache rows written; sq free again
    if (tid < D) sq[tid] = to_float(qkv[(int64_t(b) * Tn + tn) * 3 * C + int64_t(h) * D + tid]) * scale;
    __syncthreads();
    const float o = attend_keys(sq, sp, kc, vc, D, pos0 + tn + 1, D);
    if (tid < D) out[(int64_t(b) * Tn + tn) * C + int64_t(h) * D + tid] = from_float<bf16raw>(o);
  }
}

// Cross-attention decode: one block per (query row, head) over the cached encoder keys and
// values of its source row (kv [Bk, Tk, 2C]), Tn new queries one after another.
__global__ void __launch_bounds__(kDecodeThreads)
    cross_attention_decode_kernel(const bf16raw* __restrict__ q, const bf16raw* __restrict__ kv,
                                  const int32_t* __restrict__ key_len, bf16raw* __restrict__ out, int Tn, int per,
                                  int Tk, int H, int D, float scale) {
  __shared__ float sq[kDecodeThreads];
  __shared__ float sp[kDecodeThreads];
  const int bh = int(blockIdx.x), b = bh / H, h = bh % H, bk = b / per, C = H * D, tid = int(threadIdx.x);
  const int len = key_len ? min(max(key_len[bk], 1), Tk) : Tk;
  const bf16raw* k = kv + int64_t(bk) * Tk * 2 * C + int64_t(h) * D;
  for (int tn = 0; tn < Tn; ++tn) {
    __syncthreads();  // sq free again
    if (tid < D) sq[tid] = to_float(q[(int64_t(b) * Tn + tn) * C + int64_t(h) * D + tid]) * scale;
    __syncthreads();
    const float o = attend_keys(sq, sp, k, k + C, 2 * C, len, D);
    if (tid < D) out[(int64_t(b) * Tn + tn) * C + int64_t(h) * D + tid] = from_float<bf16raw>(o);
  }
}

// ---- document starts ------------------------------------------------------------------------
// One thread a sequence, scanning its tokens in order: a few thousand int32 reads per
// sequence, once a step, shared by every layer's attention.
constexpr int kDocThreads = 128;
static_assert(valid_block(kDocThreads));

__global__ void __launch_bounds__(kDocThreads)
    document_starts_kernel(const int32_t* __restrict__ tokens, int32_t* __restrict__ doc_start, int B, int T, int32_t eot) {
  const int b = int(blockIdx.x) * kDocThreads + int(threadIdx.x);
  if (b >= B) return;
  const int32_t* tok = tokens + int64_t(b) * T;
  int32_t* dst = doc_start + int64_t(b) * T;
  int32_t start = 0;
  for (int t = 0; t < T; ++t) {
    if (tok[t] == eot) start = t;
    dst[t] = start;
  }
}

// ---- launchers ------------------------------------------------------------------------------

// Shared shape checks; returns D. The kernels index rows with int and offsets with int64:
// T and B*H must fit the grid and an int, the whole tensor an int64.
int head_dim(int64_t B, int64_t T, int64_t C, int64_t H) {
  LOOM_CHECK(B > 0 && T > 0 && H > 0 && C > 0, "attention: empty shape B=", B, " T=", T, " C=", C, " H=", H);
  LOOM_CHECK(C % H == 0, "attention: C=", C, " not divisible by H=", H);
  const int64_t D = C / H;
  LOOM_CHECK(attention_head_dim_supported(D), "attention: head dim ", D, " not in {16, 32, 64, 128}");
  LOOM_CHECK(B * H <= kAttentionMaxBatchHeads, "attention: B*H=", B * H, " exceeds the grid's y limit");
  LOOM_CHECK(T <= (int64_t(1) << 30) && B * T * 3 * C < (int64_t(1) << 62), "attention: T=", T, " too large");
  return int(D);
}

template <int D>
void launch_fwd(const Problem& p, int64_t B, bf16raw* out, float* lse, cudaStream_t s) {
  using Tile = FwdTile<D>;
  const dim3 grid(unsigned(ceil_div(p.Tq, Tile::kBr)), unsigned(B * p.H));
  // The kernel works in the log2 domain: exp2 is one instruction, exp is two.
  const float scale_log2 = kLog2e / sqrtf(float(D));
  with_bool(p.doc_start != nullptr, [&](auto doc) {
    allow_dynamic_smem(attention_fwd_kernel<D, decltype(doc)::value>, Tile::kSmemBytes);
    LOOM_LAUNCH((attention_fwd_kernel<D, decltype(doc)::value>), grid, Tile::kThreads, Tile::kSmemBytes, s, p, out,
                lse, scale_log2);
  });
}

// The backward is three launches on one stream: launch_bwd_prep (delta, the zeroed dQ
// accumulator and order counters), the main kernel (mma.sync or sm90), then launch_bwd_dq
// (dQ to bf16, skipped when dq is null). Scratch (attention_bwd_scratch_floats): the f32 dQ
// accumulator [B, Tq, C], delta [B, H, Tq], then the counters [B, H, ceil(Tq / 32)] (int32;
// query tiles are 32 or 64 rows).
int order_stride(int Tq) { return ceil_div(Tq, 32); }

struct BwdPrep {
  const float* delta;
  BwdOut out;
};
template <int D>
BwdPrep launch_bwd_prep(const Problem& p, int64_t B, const bf16raw* dout, const bf16raw* out, float* scratch,
                        bf16raw* dk, bf16raw* dv, bool deterministic, cudaStream_t s) {
  const int64_t C = int64_t(p.H) * D, rows = B * p.Tq * p.H;
  float* dq_acc = scratch;
  float* delta = dq_acc + B * p.Tq * C;
  int32_t* order = deterministic ? reinterpret_cast<int32_t*>(delta + B * p.H * p.Tq) : nullptr;
  const int64_t n_order = deterministic ? B * p.H * order_stride(p.Tq) : 0;
  LOOM_LAUNCH((attention_bwd_prep_kernel<D>), ceil_div(rows, kRowThreads), kRowThreads, 0, s, out, dout, delta,
              dq_acc, order, n_order, rows, p.Tq, p.H);
  return {delta, BwdOut{dq_acc, dk, dv, order, order_stride(p.Tq)}};
}
void launch_bwd_dq(const Problem& p, int64_t B, int D, const float* dq_acc, bf16raw* dq, cudaStream_t s) {
  if (!dq) return;
  const int64_t C = int64_t(p.H) * D, chunks = B * p.Tq * C / 8;
  LOOM_LAUNCH(attention_bwd_dq_kernel, ceil_div(chunks, kRowThreads), kRowThreads, 0, s, dq_acc, dq, p.ldq, chunks,
              int(C), 1.f / sqrtf(float(D)));
}

template <int D>
void launch_bwd(const Problem& p, int64_t B, const bf16raw* dout, const bf16raw* out, const float* lse,
                float* scratch, bf16raw* dq, bf16raw* dk, bf16raw* dv, bool deterministic, cudaStream_t s) {
  using Tile = BwdTile<D>;
  const BwdPrep prep = launch_bwd_prep<D>(p, B, dout, out, scratch, dk, dv, deterministic, s);
  const float scale = 1.f / sqrtf(float(D));
  const dim3 grid(unsigned(ceil_div(p.Tk, Tile::kBc)), unsigned(B * p.H));
  allow_dynamic_smem(attention_bwd_kernel<D>, Tile::kSmemBytes);
  LOOM_LAUNCH((attention_bwd_kernel<D>), grid, Tile::kThreads, Tile::kSmemBytes, s, p, dout, lse, prep.delta, prep.out,
              scale * kLog2e, scale);
  launch_bwd_dq(p, B, D, prep.out.dq_acc, dq, s);
}

#include "kernels/attention/attention_sm90_bwd.cuh"

// cp.async and the 16-byte vector accesses need 16-byte aligned rows; with C a multiple of
// 16 that reduces to the base pointers.
void check_aligned(const void* p, const char* name) {
  LOOM_CHECK(p != nullptr, "attention: ", name, " is null");
  LOOM_CHECK(is_aligned_16(p), "attention: ", name, " is not 16-byte aligned (vector loads and cp.async)");
}

const bf16raw* raw(const bf16* p) { return reinterpret_cast<const bf16raw*>(p); }
bf16raw* raw(bf16* p) { return reinterpret_cast<bf16raw*>(p); }

Problem self_problem(const bf16* qkv, int64_t T, int64_t C, int64_t H, bool causal, const int32_t* doc_start,
                     const int32_t* key_len) {
  LOOM_CHECK(!doc_start || (causal && !key_len), "attention: the document mask is for causal attention without key padding");
  return {raw(qkv), raw(qkv) + C, raw(qkv) + 2 * C, 3 * C, 3 * C, int(T), int(T), int(H), causal, doc_start, key_len};
}
Problem cross_problem(const bf16* q, const bf16* kv, int64_t Tq, int64_t Tk, int64_t C, int64_t H,
                      const int32_t* key_len) {
  // Tk bounds the grid's x and the row indices like T does.
  LOOM_CHECK(Tk > 0 && Tk <= (int64_t(1) << 30), "cross_attention: Tk=", Tk);
  return {raw(q), raw(kv), raw(kv) + C, C, 2 * C, int(Tq), int(Tk), int(H), false, nullptr, key_len};
}

std::atomic<AttentionFwdKernel> g_fwd_kernel{AttentionFwdKernel::kAuto};
std::atomic<AttentionBwdKernel> g_bwd_kernel{AttentionBwdKernel::kAuto};

// Whether an sm_90a kernel runs here: the device is an sm_90 one and this build holds the
// kernel's sm_90a code (a build for other architectures only would run it as a trap).
template <class Kernel>
bool runs_sm90(Kernel* kernel) {
  int dev = 0, major = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  if (major != 9) return false;
#if LOOM_SIMT_EMULATION
  (void)kernel;
  return true;
#else
  cudaFuncAttributes attr{};
  CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
  return attr.binaryVersion == 90;
#endif
}

// The warp-specialised forward where runs_sm90 says so, or where a test forces it.
template <int D>
bool use_sm90_forward() {
  const AttentionFwdKernel k = g_fwd_kernel.load(std::memory_order_relaxed);
  if (k != AttentionFwdKernel::kAuto) return k == AttentionFwdKernel::kSm90;
  return runs_sm90(attention_fwd_sm90_kernel<D, false>);
}

// The warp-specialised backward likewise, for the head dims it has (64 and 128: rows of
// 128-byte boxes); the mma.sync backward takes the others whatever is forced.
template <int D>
bool use_sm90_backward() {
  const AttentionBwdKernel k = g_bwd_kernel.load(std::memory_order_relaxed);
  if (k != AttentionBwdKernel::kAuto) return k == AttentionBwdKernel::kSm90;
  return runs_sm90(attention_bwd_sm90_kernel<D, false>);
}

// The entry points' shared half: the outputs' checks and the head-dim dispatch.
void forward(const Problem& p, int D, int64_t B, bf16* out, float* lse, cudaStream_t s) {
  check_aligned(out, "out");
  LOOM_CHECK(lse != nullptr, "attention: lse is null");
  with_value<16, 32, 64, 128>("attention head dim", D, [&](auto d) {
    if (use_sm90_forward<decltype(d)::value>())
      launch_fwd_sm90<decltype(d)::value>(p, B, raw(out), lse, s);
    else
      launch_fwd<decltype(d)::value>(p, B, raw(out), lse, s);
  });
}
void backward(const Problem& p, int D, int64_t B, const bf16* dout, const bf16* out, const float* lse, float* scratch,
              bf16raw* dq, bf16raw* dk, bf16raw* dv, bool deterministic, cudaStream_t s) {
  check_aligned(dout, "dout");
  check_aligned(out, "out");
  check_aligned(scratch, "scratch");
  LOOM_CHECK(lse != nullptr, "attention: lse is null");
  with_value<16, 32, 64, 128>("attention head dim", D, [&](auto d) {
    constexpr int kD = decltype(d)::value;
    if constexpr (kD == 64 || kD == 128) {
      if (use_sm90_backward<kD>())
        return launch_bwd_sm90<kD>(p, B, raw(dout), raw(out), lse, scratch, dq, dk, dv, deterministic, s);
    }
    launch_bwd<kD>(p, B, raw(dout), raw(out), lse, scratch, dq, dk, dv, deterministic, s);
  });
}

}  // namespace

void set_attention_fwd_kernel(AttentionFwdKernel k) { g_fwd_kernel.store(k, std::memory_order_relaxed); }
void set_attention_bwd_kernel(AttentionBwdKernel k) { g_bwd_kernel.store(k, std::memory_order_relaxed); }

void attention_fwd(const AttentionFwd& a, Stream s) {
  const int D = head_dim(a.B, a.T, a.C, a.H);
  check_aligned(a.qkv, "qkv");
  forward(self_problem(a.qkv, a.T, a.C, a.H, a.causal, a.doc_start, a.key_len), D, a.B, a.out, a.lse, s);
}

size_t attention_bwd_scratch_floats(int64_t B, int64_t T, int64_t C, int64_t H) {
  // dQ accumulator [B, T, C], delta [B, H, T], deterministic dQ's counters [B, H, ceil(T / 32)]
  return size_t(B * T * C + B * H * T + B * H * order_stride(int(T)));
}

void attention_bwd(const AttentionBwd& a, Stream s) {
  const int D = head_dim(a.B, a.T, a.C, a.H);
  check_aligned(a.qkv, "qkv");
  check_aligned(a.dqkv, "dqkv");
  backward(self_problem(a.qkv, a.T, a.C, a.H, a.causal, a.doc_start, a.key_len), D, a.B, a.dout, a.out, a.lse,
           a.scratch, raw(a.dqkv), raw(a.dqkv) + a.C, raw(a.dqkv) + 2 * a.C, a.deterministic, s);
}

void cross_attention_fwd(const CrossAttentionFwd& a, Stream s) {
  const int D = head_dim(a.B, a.Tq, a.C, a.H);
  check_aligned(a.q, "q");
  check_aligned(a.kv, "kv");
  forward(cross_problem(a.q, a.kv, a.Tq, a.Tk, a.C, a.H, a.key_len), D, a.B, a.out, a.lse, s);
}

void cross_attention_bwd(const CrossAttentionBwd& a, Stream s) {
  const int D = head_dim(a.B, a.Tq, a.C, a.H);
  check_aligned(a.q, "q");
  check_aligned(a.kv, "kv");
  if (a.dq) check_aligned(a.dq, "dq");
  if (a.dkv) check_aligned(a.dkv, "dkv");
  bf16raw* dkv = a.dkv ? raw(a.dkv) : nullptr;
  backward(cross_problem(a.q, a.kv, a.Tq, a.Tk, a.C, a.H, a.key_len), D, a.B, a.dout, a.out, a.lse, a.scratch,
           a.dq ? raw(a.dq) : nullptr, dkv, dkv ? dkv + a.C : nullptr, a.deterministic, s);
}

void attention_decode(const AttentionDecode& a, Stream s) {
  const int D = head_dim(a.B, a.Tn, a.C, a.H);
  LOOM_CHECK(a.maxT >= a.Tn, "attention_decode: maxT=", a.maxT, " < Tn=", a.Tn);
  LOOM_CHECK(a.qkv && a.kcache && a.vcache && a.out && a.pos0, "attention_decode: null pointer");
  LOOM_LAUNCH(attention_decode_kernel, a.B * a.H, kDecodeThreads, 0, s,
              reinterpret_cast<const bf16raw*>(a.qkv), reinterpret_cast<bf16raw*>(a.kcache),
              reinterpret_cast<bf16raw*>(a.vcache), reinterpret_cast<bf16raw*>(a.out), a.pos0, int(a.Tn), int(a.H), D,
              int(a.maxT), 1.f / sqrtf(float(D)));
}

void cross_attention_decode(const CrossAttentionDecode& a, Stream s) {
  const int D = head_dim(a.Bq, a.Tn, a.C, a.H);
  LOOM_CHECK(a.Bk > 0 && a.Bq % a.Bk == 0, "cross_attention_decode: ", a.Bq, " query rows for ", a.Bk, " key rows");
  LOOM_CHECK(a.Tk > 0 && a.Tk <= (int64_t(1) << 30), "cross_attention_decode: Tk=", a.Tk);
  LOOM_CHECK(a.q && a.kv && a.out, "cross_attention_decode: null pointer");
  LOOM_LAUNCH(cross_attention_decode_kernel, a.Bq * a.H, kDecodeThreads, 0, s, raw(a.q), raw(a.kv), a.key_len,
              raw(a.out), int(a.Tn), int(a.Bq / a.Bk), int(a.Tk), int(a.H), D, 1.f / sqrtf(float(D)));
}

void document_starts(const int32_t* tokens, int32_t* doc_start, int64_t B, int64_t T, int32_t eot, Stream s) {
  LOOM_CHECK(B > 0 && T > 0 && B <= (int64_t(1) << 30) && T <= (int64_t(1) << 30), "document_starts: shape B=", B,
             " T=", T);
  LOOM_CHECK(tokens && doc_start, "document_starts: null pointer");
  LOOM_LAUNCH(document_starts_kernel, ceil_div(B, kDocThreads), kDocThreads, 0, s, tokens, doc_start, int(B), int(T),
              eot);
}

}  // namespace loom::cuda
