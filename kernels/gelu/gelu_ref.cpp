// gelu_ref.cpp: CPU reference GELU (tanh form) and tanh, OpenMP + vectorisable loops.
#include "kernels/gelu/gelu.h"

#include <algorithm>

#include "core/vmath.h"

namespace loom::ref {

namespace {
constexpr double kSqrt2OverPi = 0.7978845608028654;
constexpr double kCoef = 0.044715;
}  // namespace

// f(i) for i in [0, n): parallel over fixed chunks, vectorised inside each (GCC does not
// vectorise the body of a combined `parallel for simd` here, but does a plain `simd` loop).
constexpr int64_t kChunk = 4096;
template <class F>
void for_each_element(int64_t n, F f) {
#pragma omp parallel for schedule(static)
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
    const int64_t c1 = std::min(n, c0 + kChunk);
#pragma omp simd
    for (int64_t i = c0; i < c1; ++i) f(i);
  }
}

template <typename T>
void gelu_fwd(const GeluArgs<T>& a) {
  for_each_element(a.n, [&](int64_t i) { a.y[i] = gelu_tanh<T>(a.x[i]); });
}

template <typename T>
void gelu_bwd(const GeluBwdArgs<T>& a) {
  for_each_element(a.n, [&](int64_t i) {
    const T x = a.x[i];
    const T u = T(kSqrt2OverPi) * (x + T(kCoef) * x * x * x);
    const T t = vtanh<T>(u);
    const T du = T(kSqrt2OverPi) * (T(1) + T(3 * kCoef) * x * x);
    a.dx[i] = a.dy[i] * (T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * du);
  });
}

template <typename T>
void tanh_fwd(const GeluArgs<T>& a) {
  for_each_element(a.n, [&](int64_t i) { a.y[i] = vtanh<T>(a.x[i]); });
}

template <typename T>
void tanh_bwd(const GeluBwdArgs<T>& a) {
  for_each_element(a.n, [&](int64_t i) { a.dx[i] = a.dy[i] * (T(1) - a.x[i] * a.x[i]); });
}

template void tanh_fwd<float>(const GeluArgs<float>&);
template void tanh_fwd<double>(const GeluArgs<double>&);
template void tanh_bwd<float>(const GeluBwdArgs<float>&);
template void tanh_bwd<double>(const GeluBwdArgs<double>&);
template void gelu_fwd<float>(const GeluArgs<float>&);
template void gelu_fwd<double>(const GeluArgs<double>&);
template void gelu_bwd<float>(const GeluBwdArgs<float>&);
template void gelu_bwd<double>(const GeluBwdArgs<double>&);

}  // namespace loom::ref
