// adamw.cu: the optimizer kernels on the GPU (and, through cuda_compat.h, under the SIMT
// emulator): AdamW over the flat f32 master weights and moments with a stochastically rounded
// bf16 working copy, the global gradient norm in two deterministic stages, and f32 -> bf16
// casts bit-identical to core/dtype.h's to_bf16.
//
// All three are streaming kernels (a few flops per byte), so they are shaped for bandwidth:
// 16-byte loads where every buffer allows them, a grid of one wave (as many blocks as the
// occupancy calculator says fit on every SM at once) that strides over the buffer, and a
// scalar path (same results, same bits) for unaligned buffers and tails. The cast is a
// per-element functor run by vec.cuh's map_elements.
//
// Stochastic rounding: round-to-nearest of a bf16 copy drops every update smaller than half a
// bf16 ulp of the weight, systematically; rounding up with probability equal to the dropped
// fraction keeps the copy unbiased. The random bits come from a counter-based hash of (seed,
// element index), not from per-thread generator state, so they do not depend on the launch
// shape or on which path ran: the same seed gives the same bits on every run. Callers vary
// the seed per step (e.g. seed ^ step), or every step rounds the same way.
#include "kernels/common/cuda_compat.h"
#include "kernels/common/launch.cuh"
#include "kernels/common/reduce.cuh"
#include "kernels/common/vec.cuh"
#include "kernels/adamw/adamw.h"

#include <cmath>
#include <cstdint>

#include "core/check.h"

namespace loom::cuda {
namespace {

constexpr int kBlock = 256;
static_assert(valid_block(kBlock));
// global_norm_sq: a block per 4096 elements up to 1024 blocks (about 8 blocks an SM on an
// H100); the grid depends on n alone, so the partial sums, and their fixed-order total, do
// not depend on the device.
constexpr int kNormItemsPerThread = 16;
constexpr int kMaxNormBlocks = 1024;
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

using FloatPack = Pack128<float>;

// The scalars of one step, bias corrections computed once on the host exactly as
// ref::adamw_step computes them.
struct AdamWScalars {
  float lr, beta1, beta2, eps, weight_decay, grad_scale, bc1, bc2;
};

// splitmix64's output function: a bijection whose output bits each depend on every input bit,
// so consecutive counters give independent-looking 64-bit words.
__device__ __forceinline__ uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// One 64-bit word serves the 4 elements 4q .. 4q+3 (16 bits each): one hash per vector pack.
// A function of (seed key, index) only, hence the same bits from the vector and scalar paths.
__device__ __forceinline__ uint64_t sr_word(uint64_t key, int64_t quad) { return mix64(key + uint64_t(quad) * kGolden); }

// bf16 bits of x rounded up in magnitude with probability (dropped low 16 bits) / 2^16: adding
// r in [0, 2^16) to the low half carries into the kept half exactly that often. Infinity
// stays infinite (its low half is 0); NaN stays NaN, quieted as to_bf16 does.
__device__ __forceinline__ uint16_t bf16_bits_stochastic(float x, uint32_t r16) {
  const uint32_t u = __float_as_uint(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);
  return uint16_t((u + r16) >> 16);
}

// Round to nearest even, bit for bit core/dtype.h's to_bf16 (including its NaN rule,
// which __float2bfloat16_rn does not share).
__device__ __forceinline__ uint16_t bf16_bits_rne(float x) {
  uint32_t u = __float_as_uint(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

// f32 -> bf16 bits, for map_elements.
struct CastToBf16 {
  __device__ __forceinline__ uint16_t operator()(float x) const { return bf16_bits_rne(x); }
};

// ref::adamw_step's arithmetic, term for term, so the two differ only by FMA contraction.
__device__ __forceinline__ void adamw_update(float& p, float grad, float& m, float& v, bool decays,
                                             const AdamWScalars& k) {
  const float g = grad * k.grad_scale;
  m = k.beta1 * m + (1.0f - k.beta1) * g;
  v = k.beta2 * v + (1.0f - k.beta2) * g * g;
  const float mhat = m / k.bc1, vhat = v / k.bc2;
  const float wd = decays ? k.weight_decay : 0.0f;
  p -= k.lr * (mhat / (sqrtf(vhat) + k.eps) + wd * p);
}

}  // namespace

// ---- AdamW ------------------------------------------------------------------------------

// kVector: param/grad/m/v 16-byte aligned, working 8-byte and decay 4-byte aligned, so that
// four elements move as one access per buffer; the last n % 4 go through the scalar loop.
template <bool kVector>
static __global__ void __launch_bounds__(kBlock)
    adamw_kernel(float* __restrict__ param, const float* __restrict__ grad, float* __restrict__ m,
                 float* __restrict__ v, const uint8_t* __restrict__ decay, uint16_t* __restrict__ working, int64_t n,
                 AdamWScalars k, uint64_t seed) {
  const uint64_t key = mix64(seed);
  const int64_t first = int64_t(blockIdx.x) * kBlock + threadIdx.x;
  const int64_t stride = int64_t(gridDim.x) * kBlock;
  int64_t scalar_from = 0;
  if constexpr (kVector) {
    const int64_t quads = n / 4;
    for (int64_t q = first; q < quads; q += stride) {
      const int64_t i = 4 * q;
      FloatPack p = load_128(param + i), mm = load_128(m + i), vv = load_128(v + i);
      // The gradient is read once: stream it past L2.
      const FloatPack g = load_128_cs(grad + i);
      const uint32_t dmask = decay ? *reinterpret_cast<const uint32_t*>(decay + i) : 0x01010101u;
      const uint64_t r = sr_word(key, q);
      uint32_t b[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        adamw_update(p[e], g[e], mm[e], vv[e], ((dmask >> (8 * e)) & 0xffu) != 0, k);
        b[e] = bf16_bits_stochastic(p[e], uint32_t(r >> (16 * e)) & 0xffffu);
      }
      // Master weights and moments are next read a whole step later: evict first.
      store_128_cs(param + i, p);
      store_128_cs(m + i, mm);
      store_128_cs(v + i, vv);
      *reinterpret_cast<uint2*>(working + i) = make_uint2(b[0] | b[1] << 16, b[2] | b[3] << 16);
    }
    scalar_from = 4 * quads;
  }
  for (int64_t i = scalar_from + first; i < n; i += stride) {
    float p = param[i], mi = m[i], vi = v[i];
    adamw_update(p, grad[i], mi, vi, !decay || decay[i] != 0, k);
    param[i] = p;
    m[i] = mi;
    v[i] = vi;
    working[i] = bf16_bits_stochastic(p, uint32_t(sr_word(key, i / 4) >> (16 * (i % 4))) & 0xffffu);
  }
}

// ---- global gradient norm -----------------------------------------------------------------

// Stage 1: partial[b] = sum of g^2 over block b's grid-stride share. The per-thread order, the
// tree in block_sum and the grid are fixed for a given n, so the partials are the same bits
// on every run.
template <bool kVector>
static __global__ void __launch_bounds__(kBlock)
    norm_partial_kernel(const float* __restrict__ g, int64_t n, float* __restrict__ partial) {
  const int64_t first = int64_t(blockIdx.x) * kBlock + threadIdx.x;
  const int64_t stride = int64_t(gridDim.x) * kBlock;
  float s = 0.f;
  int64_t scalar_from = 0;
  if constexpr (kVector) {
    // Four independent accumulators: the adds of one pack do not wait on each other.
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    const int64_t quads = n / 4;
    for (int64_t q = first; q < quads; q += stride) {
      const FloatPack x = load_128_cs(g + 4 * q);
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[e] += x[e] * x[e];
    }
    s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    scalar_from = 4 * quads;
  }
  for (int64_t i = scalar_from + first; i < n; i += stride) s += g[i] * g[i];
  s = block_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// Stage 2: one block adds the partials in a fixed order (a fixed stride per thread, in
// double, then block_sum's fixed tree). No atomics anywhere: atomics would add in arrival
// order, and the norm (hence clipping, hence training) would change from run to run.
static __global__ void __launch_bounds__(kBlock) norm_final_kernel(const float* partial, int parts, float* out) {
  double s = 0;
  for (int i = threadIdx.x; i < parts; i += kBlock) s += double(partial[i]);
  s = block_sum(s);
  if (threadIdx.x == 0) out[0] = float(s);
}

// ---- launchers ------------------------------------------------------------------------------

namespace {

bool aligned(const void* p, uintptr_t bytes) { return (reinterpret_cast<uintptr_t>(p) & (bytes - 1)) == 0; }

int norm_blocks(int64_t n) {
  const int64_t b = ceil_div(n, int64_t(kBlock) * kNormItemsPerThread);
  return int(b < 1 ? 1 : (b < kMaxNormBlocks ? b : kMaxNormBlocks));
}

bool overlaps(const void* a, size_t na, const void* b, size_t nb) {
  const auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
  return pa < pb + nb && pb < pa + na;
}

}  // namespace

void adamw(const ref::AdamWArgs& a, bf16* working, uint64_t seed, Stream s) {
  LOOM_CHECK(a.n >= 0, "adamw: n = ", a.n);
  if (a.n == 0) return;
  LOOM_CHECK(a.param && a.grad && a.m && a.v && working, "adamw: null pointer");
  LOOM_CHECK(a.step >= 1, "adamw: step is 1-based, got ", a.step);
  const AdamWScalars k{a.lr,
                       a.beta1,
                       a.beta2,
                       a.eps,
                       a.weight_decay,
                       a.grad_scale,
                       1.0f - std::pow(a.beta1, static_cast<float>(a.step)),
                       1.0f - std::pow(a.beta2, static_cast<float>(a.step))};
  auto* w = reinterpret_cast<uint16_t*>(working);
  const bool vector = aligned(a.param, 16) && aligned(a.grad, 16) && aligned(a.m, 16) && aligned(a.v, 16) &&
                      aligned(working, 8) && (!a.decay || aligned(a.decay, 4));
  // A thread per 4-element quad (vector) or element, at most one wave: the grid strides. The
  // wave is what the compiled kernel leaves room for: its 45 registers (sm_90a) let 5 blocks
  // of 256 threads share an SM, not the 8 that threads alone would allow; a grid of 8 an SM
  // would run as 1.6 waves, the last one 60% full.
  if (vector)
    LOOM_LAUNCH((adamw_kernel<true>), grid_for(ceil_div(a.n, 4), kBlock, blocks_per_sm(adamw_kernel<true>, kBlock, 0)),
                kBlock, 0, s, a.param, a.grad, a.m, a.v, a.decay, w, a.n, k, seed);
  else
    LOOM_LAUNCH((adamw_kernel<false>), grid_for(a.n, kBlock, blocks_per_sm(adamw_kernel<false>, kBlock, 0)), kBlock,
                0, s, a.param, a.grad, a.m, a.v, a.decay, w, a.n, k, seed);
}

size_t global_norm_scratch_floats(int64_t n) { return size_t(norm_blocks(n)); }

void global_norm_sq(const float* g, int64_t n, float* scratch, float* out, Stream s) {
  LOOM_CHECK(n >= 0, "global_norm_sq: n = ", n);
  LOOM_CHECK((g || n == 0) && scratch && out, "global_norm_sq: null pointer");
  const int blocks = norm_blocks(n);
  LOOM_CHECK(!overlaps(scratch, size_t(blocks) * sizeof(float), out, sizeof(float)),
             "global_norm_sq: scratch overlaps out");
  if (aligned(g, 16))
    LOOM_LAUNCH((norm_partial_kernel<true>), blocks, kBlock, 0, s, g, n, scratch);
  else
    LOOM_LAUNCH((norm_partial_kernel<false>), blocks, kBlock, 0, s, g, n, scratch);
  LOOM_LAUNCH(norm_final_kernel, 1, kBlock, 0, s, static_cast<const float*>(scratch), blocks, out);
}

// Read once: evict-first loads; 8 floats (two packs) become one 16-byte store.
void cast_to_bf16(const float* src, bf16* dst, int64_t n, Stream s) {
  map_elements<Loads::kStreaming>("cast_to_bf16", CastToBf16{}, n, s, reinterpret_cast<uint16_t*>(dst), src);
}

}  // namespace loom::cuda
