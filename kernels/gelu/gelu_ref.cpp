// gelu_ref.cpp: CPU reference GELU (tanh form), OpenMP + vectorisable loops.
#include "kernels/gelu/gelu.h"

#include "engine/core/vmath.h"

namespace loom::ref {

namespace {
constexpr double kSqrt2OverPi = 0.7978845608028654;
constexpr double kCoef = 0.044715;
}  // namespace

template <typename T>
void gelu_fwd(const GeluArgs<T>& a) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < a.n; ++i) {
    const T x = a.x[i];
    const T u = T(kSqrt2OverPi) * (x + T(kCoef) * x * x * x);
    a.y[i] = T(0.5) * x * (T(1) + vtanh<T>(u));
  }
}

template <typename T>
void gelu_bwd(const GeluBwdArgs<T>& a) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < a.n; ++i) {
    const T x = a.x[i];
    const T u = T(kSqrt2OverPi) * (x + T(kCoef) * x * x * x);
    const T t = vtanh<T>(u);
    const T du = T(kSqrt2OverPi) * (T(1) + T(3 * kCoef) * x * x);
    a.dx[i] = a.dy[i] * (T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * du);
  }
}

template void gelu_fwd<float>(const GeluArgs<float>&);
template void gelu_fwd<double>(const GeluArgs<double>&);
template void gelu_bwd<float>(const GeluBwdArgs<float>&);
template void gelu_bwd<double>(const GeluBwdArgs<double>&);

}  // namespace loom::ref
