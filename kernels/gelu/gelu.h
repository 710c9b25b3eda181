// gelu.h: GELU with the tanh approximation (as GPT-2), elementwise.
#pragma once
#include <cmath>
#include <cstdint>

#include "core/dtype.h"
#include "core/vmath.h"
#include "kernels/common/stream.h"

namespace loom::ref {

// One element of the CPU GELU, shared by the GELU pass and the epilogue of the product that
// feeds it (linear_gelu_fwd, matmul_ref.cpp) so the two give the same bits.
// 0.5 x (1 + tanh u) = x (1 - 1 / (exp(2u) + 1)), u = sqrt(2/pi) (x + 0.044715 x^3).
template <typename T>
inline T gelu_tanh(T x) {
  const T u = T(0.7978845608028654) * (x + T(0.044715) * x * x * x);
  return x - x / (vexp<T>(T(2) * u) + T(1));
}

template <typename T>
struct GeluArgs {
  const T* x;   // [n]
  T* y;         // [n]
  int64_t n;
};
template <typename T>
void gelu_fwd(const GeluArgs<T>& a);

template <typename T>
struct GeluBwdArgs {
  const T* dy;  // [n]
  const T* x;   // [n]
  T* dx;        // [n] written
  int64_t n;
};
template <typename T>
void gelu_bwd(const GeluBwdArgs<T>& a);

// tanh, and its backward from the OUTPUT: dx = dy * (1 - y^2) (GeluBwdArgs::x holds y).
template <typename T>
void tanh_fwd(const GeluArgs<T>& a);
template <typename T>
void tanh_bwd(const GeluBwdArgs<T>& a);

}  // namespace loom::ref

// CUDA kernels (gelu.cu): bf16 in and out, f32 math.
namespace loom::cuda {
void gelu_fwd(const bf16* x, bf16* y, int64_t n, Stream s);
void gelu_bwd(const bf16* dy, const bf16* x, bf16* dx, int64_t n, Stream s);  // dx written
void tanh_fwd(const bf16* x, bf16* y, int64_t n, Stream s);
void tanh_bwd(const bf16* dy, const bf16* y, bf16* dx, int64_t n, Stream s);  // from the output y
}  // namespace loom::cuda
