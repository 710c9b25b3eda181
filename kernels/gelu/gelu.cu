// gelu.cu: GELU, tanh approximation (GPT-2's), and tanh, forward and backward on bf16 with f32
// math; the CUDA side of gelu.h (loom::ref::gelu_* and tanh_* are the ground truth).
//
// Pure streaming kernels: each element is read and written once, so the floor is the bytes
// (4 per element forward, 6 backward). Each is its per-element functor run by vec.cuh's
// map_elements (16-byte packs in a grid-stride loop when every pointer is aligned, scalar
// otherwise and for the tail).
//
// 0.5 * (1 + tanh(u)) is the logistic sigmoid of 2u, so both directions use one __expf and one
// approximate reciprocal instead of tanhf: at 4 bytes an element an H100 runs out of
// instruction issue before bandwidth if each element costs a libm tanhf.
#include "kernels/common/cuda_compat.h"
#include "kernels/common/vec.cuh"

#include "kernels/gelu/gelu.h"

namespace loom::cuda {
namespace {

using Bf = __nv_bfloat16;

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

// The activations' per-element functions: forward of x, and backward from dy and the value
// backward reads (GELU: its input x; tanh: its output y).
struct GeluFwd {
  __device__ __forceinline__ Bf operator()(Bf x) const { return from_float<Bf>(gelu(to_float(x))); }
};
struct GeluBwd {
  __device__ __forceinline__ Bf operator()(Bf d, Bf x) const {
    return from_float<Bf>(to_float(d) * gelu_grad(to_float(x)));
  }
};
// tanh(x) = 2 sigmoid(2x) - 1, again with one __expf and an approximate reciprocal.
struct TanhFwd {
  __device__ __forceinline__ Bf operator()(Bf x) const {
    return from_float<Bf>(2.f * __fdividef(1.f, 1.f + __expf(-2.f * to_float(x))) - 1.f);
  }
};
struct TanhBwd {
  __device__ __forceinline__ Bf operator()(Bf d, Bf y) const {
    const float yf = to_float(y);
    return from_float<Bf>(to_float(d) * (1.f - yf * yf));
  }
};

}  // namespace

// Inputs are read once: evict-first loads keep them from pushing reused data out of L2.
void gelu_fwd(const bf16* x, bf16* y, int64_t n, Stream s) {
  map_elements<Loads::kStreaming>("gelu_fwd", GeluFwd{}, n, s, as_nv(y), as_nv(x));
}
void gelu_bwd(const bf16* dy, const bf16* x, bf16* dx, int64_t n, Stream s) {
  map_elements<Loads::kStreaming>("gelu_bwd", GeluBwd{}, n, s, as_nv(dx), as_nv(dy), as_nv(x));
}
void tanh_fwd(const bf16* x, bf16* y, int64_t n, Stream s) {
  map_elements<Loads::kStreaming>("tanh_fwd", TanhFwd{}, n, s, as_nv(y), as_nv(x));
}
void tanh_bwd(const bf16* dy, const bf16* y, bf16* dx, int64_t n, Stream s) {
  map_elements<Loads::kStreaming>("tanh_bwd", TanhBwd{}, n, s, as_nv(dx), as_nv(dy), as_nv(y));
}

}  // namespace loom::cuda
