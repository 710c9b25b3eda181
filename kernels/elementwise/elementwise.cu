// elementwise.cu: y = a + b on bf16 (the residual add), f32 arithmetic; the CUDA side of
// elementwise.h (loom::ref::add is the ground truth).
//
// A pure stream: 6 bytes an element and nothing to compute, so the kernel is the access
// pattern only: a grid-stride loop over 16-byte packs when all three pointers are aligned,
// scalar otherwise, and scalar code for the n % 8 tail. y may alias a or b (in-place
// accumulation): every element is read and then written by the same thread, so the pointers
// are not declared __restrict__.
#include "kernels/common/cuda_compat.h"
#include "kernels/common/vec.cuh"

#include <algorithm>

#include "core/check.h"
#include "kernels/elementwise/elementwise.h"

namespace loom::cuda {
namespace {

using Bf = __nv_bfloat16;
using Pack = Pack128<Bf>;
static_assert(sizeof(Bf) == sizeof(bf16), "loom::bf16 must be layout-compatible with __nv_bfloat16");

constexpr int kThreads = 256;
constexpr int kBlocksPerSm = 8;  // 2048 threads an SM: a full wave of the grid-stride loop

template <bool kVector>
static __global__ void __launch_bounds__(kThreads) add_kernel(const Bf* a, const Bf* b, Bf* y, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t scalar_from = 0;
  if constexpr (kVector) {
    const int64_t packs = n / Pack::kSize;
    for (int64_t p = tid; p < packs; p += stride) {
      // Not the streaming (evict-first) loads: with y aliasing an input the line is written
      // right back, and the sum is usually read again soon (the next layer norm).
      const Pack pa = load_128(a + p * Pack::kSize);
      const Pack pb = load_128(b + p * Pack::kSize);
      Pack out;
#pragma unroll
      for (int k = 0; k < Pack::kSize; ++k) out[k] = from_float<Bf>(to_float(pa[k]) + to_float(pb[k]));
      store_128(y + p * Pack::kSize, out);
    }
    scalar_from = packs * Pack::kSize;
  }
  for (int64_t i = scalar_from + tid; i < n; i += stride) y[i] = from_float<Bf>(to_float(a[i]) + to_float(b[i]));
}

// y = s * x: a stream like add's, 4 bytes an element.
template <bool kVector>
static __global__ void __launch_bounds__(kThreads) scale_kernel(const Bf* x, float s, Bf* y, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t scalar_from = 0;
  if constexpr (kVector) {
    const int64_t packs = n / Pack::kSize;
    for (int64_t p = tid; p < packs; p += stride) {
      const Pack in = load_128(x + p * Pack::kSize);
      Pack out;
#pragma unroll
      for (int k = 0; k < Pack::kSize; ++k) out[k] = from_float<Bf>(s * to_float(in[k]));
      store_128(y + p * Pack::kSize, out);
    }
    scalar_from = packs * Pack::kSize;
  }
  for (int64_t i = scalar_from + tid; i < n; i += stride) y[i] = from_float<Bf>(s * to_float(x[i]));
}

// dst = float(src): exact, one element a thread (a conversion for matrix products whose other
// operand is f32; not on any hot path).
static __global__ void __launch_bounds__(kThreads) widen_kernel(const Bf* __restrict__ src, float* __restrict__ dst,
                                                                int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) dst[i] = to_float(src[i]);
}

// Asked at every launch rather than cached: no hidden global state (DESIGN.md §8), and the
// attribute query is a host-side lookup, legal while a CUDA graph is being captured.
int sm_count() {
  int dev = 0, n = 0;
  LOOM_CHECK(cudaGetDevice(&dev) == cudaSuccess, "cudaGetDevice failed");
  LOOM_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess,
             "cudaDeviceGetAttribute(MultiProcessorCount) failed");
  return n;
}

// One thread per pack (or element), capped at one full wave of blocks.
int grid_for(int64_t units) {
  const int64_t blocks = (units + kThreads - 1) / kThreads;
  return int(std::max<int64_t>(1, std::min<int64_t>(blocks, int64_t(kBlocksPerSm) * sm_count())));
}

}  // namespace

void add(const bf16* a, const bf16* b, bf16* y, int64_t n, Stream s) {
  LOOM_CHECK(n >= 0, "add: n = ", n);
  if (n == 0) return;
  LOOM_CHECK(a && b && y, "add: null pointer");
  const Bf* ab = reinterpret_cast<const Bf*>(a);
  const Bf* bb = reinterpret_cast<const Bf*>(b);
  Bf* yb = reinterpret_cast<Bf*>(y);
  if (is_aligned_16(a) && is_aligned_16(b) && is_aligned_16(y))
    LOOM_LAUNCH((add_kernel<true>), grid_for((n + Pack::kSize - 1) / Pack::kSize), kThreads, 0, s, ab, bb, yb, n);
  else
    LOOM_LAUNCH((add_kernel<false>), grid_for(n), kThreads, 0, s, ab, bb, yb, n);
  const cudaError_t e = cudaGetLastError();
  LOOM_CHECK(e == cudaSuccess, "add: ", cudaGetErrorString(e));
}

void scale(const bf16* x, float sc, bf16* y, int64_t n, Stream s) {
  LOOM_CHECK(n >= 0, "scale: n = ", n);
  if (n == 0) return;
  LOOM_CHECK(x && y, "scale: null pointer");
  const Bf* xb = reinterpret_cast<const Bf*>(x);
  Bf* yb = reinterpret_cast<Bf*>(y);
  if (is_aligned_16(x) && is_aligned_16(y))
    LOOM_LAUNCH((scale_kernel<true>), grid_for((n + Pack::kSize - 1) / Pack::kSize), kThreads, 0, s, xb, sc, yb, n);
  else
    LOOM_LAUNCH((scale_kernel<false>), grid_for(n), kThreads, 0, s, xb, sc, yb, n);
  const cudaError_t e = cudaGetLastError();
  LOOM_CHECK(e == cudaSuccess, "scale: ", cudaGetErrorString(e));
}

void widen_bf16(const bf16* src, float* dst, int64_t n, Stream s) {
  LOOM_CHECK(n >= 0, "widen_bf16: n = ", n);
  if (n == 0) return;
  LOOM_CHECK(src && dst, "widen_bf16: null pointer");
  LOOM_LAUNCH(widen_kernel, grid_for(n), kThreads, 0, s, reinterpret_cast<const Bf*>(src), dst, n);
  const cudaError_t e = cudaGetLastError();
  LOOM_CHECK(e == cudaSuccess, "widen_bf16: ", cudaGetErrorString(e));
}

}  // namespace loom::cuda
