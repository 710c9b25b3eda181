// gelu.cu: GELU, tanh approximation (GPT-2's), and tanh, forward and backward on bf16 with f32
// math; the CUDA side of gelu.h (loom::ref::gelu_* and tanh_* are the ground truth).
//
// Pure streaming kernels: each element is read and written once, so the floor is the bytes
// (4 per element forward, 6 backward). A grid-stride loop over 16-byte packs when every pointer
// is aligned, scalar otherwise; the n % 8 tail is done by scalar code.
//
// 0.5 * (1 + tanh(u)) is the logistic sigmoid of 2u, so both directions use one __expf and one
// approximate reciprocal instead of tanhf: at 4 bytes an element an H100 runs out of
// instruction issue before bandwidth if each element costs a libm tanhf.
#include "kernels/common/cuda_compat.h"
#include "kernels/common/vec.cuh"

#include <algorithm>

#include "core/check.h"
#include "kernels/gelu/gelu.h"

namespace loom::cuda {
namespace {

using Bf = __nv_bfloat16;
using Pack = Pack128<Bf>;
static_assert(sizeof(Bf) == sizeof(bf16), "loom::bf16 must be layout-compatible with __nv_bfloat16");

constexpr int kThreads = 256;
constexpr int kBlocksPerSm = 8;  // 2048 threads an SM: a full wave of the grid-stride loop
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCoef = 0.044715f;

// sigmoid(2u) = 1 / (1 + exp(-2u)). For large |u| the exponential saturates to 0 or inf and the
// approximate reciprocal gives 1 or 0, the right limits.
__device__ __forceinline__ float sigmoid_2u(float x) {
  const float u = kSqrt2OverPi * (x + kCoef * x * x * x);
  return __fdividef(1.f, 1.f + __expf(-2.f * u));
}

__device__ __forceinline__ float gelu(float x) { return x * sigmoid_2u(x); }

// d/dx [0.5 x (1 + tanh u)] = 0.5 (1 + t) + 0.5 x (1 - t^2) u'; with s = sigmoid(2u):
// 0.5 (1 + t) = s and 1 - t^2 = 4 s (1 - s).
__device__ __forceinline__ float gelu_grad(float x) {
  const float s = sigmoid_2u(x);
  const float du = kSqrt2OverPi * (1.f + 3.f * kCoef * x * x);
  return s + 2.f * x * s * (1.f - s) * du;
}

// The activations, as functors: forward of x, and backward from dy and the value backward
// reads (GELU: its input x; tanh: its output y).
struct GeluOp {
  __device__ __forceinline__ float fwd(float x) const { return gelu(x); }
  __device__ __forceinline__ float bwd(float d, float x) const { return d * gelu_grad(x); }
};
// tanh(x) = 2 sigmoid(2x) - 1, again with one __expf and an approximate reciprocal.
struct TanhOp {
  __device__ __forceinline__ float fwd(float x) const { return 2.f * __fdividef(1.f, 1.f + __expf(-2.f * x)) - 1.f; }
  __device__ __forceinline__ float bwd(float d, float y) const { return d * (1.f - y * y); }
};

template <class Op, bool kVector>
static __global__ void __launch_bounds__(kThreads)
    act_fwd_kernel(const Bf* __restrict__ x, Bf* __restrict__ y, int64_t n) {
  const Op op;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t scalar_from = 0;
  if constexpr (kVector) {
    const int64_t packs = n / Pack::kSize;
    for (int64_t p = tid; p < packs; p += stride) {
      const Pack in = load_128_cs(x + p * Pack::kSize);
      Pack out;
#pragma unroll
      for (int k = 0; k < Pack::kSize; ++k) out[k] = from_float<Bf>(op.fwd(to_float(in[k])));
      store_128(y + p * Pack::kSize, out);
    }
    scalar_from = packs * Pack::kSize;
  }
  for (int64_t i = scalar_from + tid; i < n; i += stride) y[i] = from_float<Bf>(op.fwd(to_float(x[i])));
}

template <class Op, bool kVector>
static __global__ void __launch_bounds__(kThreads)
    act_bwd_kernel(const Bf* __restrict__ dy, const Bf* __restrict__ x, Bf* __restrict__ dx, int64_t n) {
  const Op op;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t scalar_from = 0;
  if constexpr (kVector) {
    const int64_t packs = n / Pack::kSize;
    for (int64_t p = tid; p < packs; p += stride) {
      const Pack d = load_128_cs(dy + p * Pack::kSize);
      const Pack in = load_128_cs(x + p * Pack::kSize);
      Pack out;
#pragma unroll
      for (int k = 0; k < Pack::kSize; ++k) out[k] = from_float<Bf>(op.bwd(to_float(d[k]), to_float(in[k])));
      store_128(dx + p * Pack::kSize, out);
    }
    scalar_from = packs * Pack::kSize;
  }
  for (int64_t i = scalar_from + tid; i < n; i += stride) dx[i] = from_float<Bf>(op.bwd(to_float(dy[i]), to_float(x[i])));
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

// One thread per unit of work (a pack, or an element on the scalar path), capped at one full
// wave: beyond that the grid-stride loop is cheaper than more blocks.
int grid_for(int64_t units) {
  const int64_t blocks = (units + kThreads - 1) / kThreads;
  return int(std::max<int64_t>(1, std::min<int64_t>(blocks, int64_t(kBlocksPerSm) * sm_count())));
}

// A bad launch configuration is reported here, by the launcher that made it. (An earlier
// kernel's asynchronous fault can also surface here: the name says where it was noticed.)
void check_launch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  LOOM_CHECK(e == cudaSuccess, what, ": ", cudaGetErrorString(e));
}

template <class Op>
void act_fwd(const bf16* x, bf16* y, int64_t n, Stream s, const char* what) {
  LOOM_CHECK(n >= 0, what, ": n = ", n);
  if (n == 0) return;
  LOOM_CHECK(x && y, what, ": null pointer");
  const Bf* xb = reinterpret_cast<const Bf*>(x);
  Bf* yb = reinterpret_cast<Bf*>(y);
  if (is_aligned_16(x) && is_aligned_16(y))
    LOOM_LAUNCH((act_fwd_kernel<Op, true>), grid_for((n + Pack::kSize - 1) / Pack::kSize), kThreads, 0, s, xb, yb, n);
  else
    LOOM_LAUNCH((act_fwd_kernel<Op, false>), grid_for(n), kThreads, 0, s, xb, yb, n);
  check_launch(what);
}

template <class Op>
void act_bwd(const bf16* dy, const bf16* x, bf16* dx, int64_t n, Stream s, const char* what) {
  LOOM_CHECK(n >= 0, what, ": n = ", n);
  if (n == 0) return;
  LOOM_CHECK(dy && x && dx, what, ": null pointer");
  const Bf* dyb = reinterpret_cast<const Bf*>(dy);
  const Bf* xb = reinterpret_cast<const Bf*>(x);
  Bf* dxb = reinterpret_cast<Bf*>(dx);
  if (is_aligned_16(dy) && is_aligned_16(x) && is_aligned_16(dx))
    LOOM_LAUNCH((act_bwd_kernel<Op, true>), grid_for((n + Pack::kSize - 1) / Pack::kSize), kThreads, 0, s, dyb, xb,
                dxb, n);
  else
    LOOM_LAUNCH((act_bwd_kernel<Op, false>), grid_for(n), kThreads, 0, s, dyb, xb, dxb, n);
  check_launch(what);
}

}  // namespace

void gelu_fwd(const bf16* x, bf16* y, int64_t n, Stream s) { act_fwd<GeluOp>(x, y, n, s, "gelu_fwd"); }
void gelu_bwd(const bf16* dy, const bf16* x, bf16* dx, int64_t n, Stream s) {
  act_bwd<GeluOp>(dy, x, dx, n, s, "gelu_bwd");
}
void tanh_fwd(const bf16* x, bf16* y, int64_t n, Stream s) { act_fwd<TanhOp>(x, y, n, s, "tanh_fwd"); }
void tanh_bwd(const bf16* dy, const bf16* y, bf16* dx, int64_t n, Stream s) {
  act_bwd<TanhOp>(dy, y, dx, n, s, "tanh_bwd");
}

}  // namespace loom::cuda
