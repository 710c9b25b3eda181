// vmath.h: elementwise math the compiler can vectorise. std::exp/std::tanh are scalar library
// calls that block vectorisation of the CPU backend's hottest elementwise loops (GELU, softmax);
// vexp<float> is a branch-free Cephes-style exp (max relative error ~2e-7 over the float
// range) that vectorises under `omp simd`. Doubles (gradient checks) keep std::exp.
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>

namespace loom {

inline float exp_poly(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  // x - n ln2 in two parts (ln2 = C1 + C2) so the reduction stays exact.
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  return p * std::bit_cast<float>(bits);
}

template <typename T>
inline T vexp(T x) {
  return std::exp(x);
}
template <>
inline float vexp<float>(float x) {
  return exp_poly(x);
}

// max(a, b) as the vectoriser recognises it in an `omp simd reduction(max : ...)` loop, which
// it does not for std::max (that loop stays scalar: a row max ran at a third of the memory's
// rate). The same value as std::max(a, b): a unless b > a, so a NaN b is skipped as there.
template <typename T>
inline T vmax(T a, T b) {
  return b > a ? b : a;
}

// The sum of f(i) over i < n in kLanes interleaved accumulators (lane j takes i = j, j + kLanes,
// ...) added in lane order at the end: a vector loop whose summation order the source fixes,
// so the bits depend neither on the vector width nor on the thread count. (Without reordering
// allowed, GCC keeps a plain float sum in order: one add after another, 4 cycles each.)
template <typename Acc, int64_t kLanes = 16, class F>
inline Acc lane_sum(int64_t n, F f) {
  Acc lane[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
#pragma omp simd
    for (int64_t j = 0; j < kLanes; ++j) lane[j] += f(i + j);
  }
  for (int64_t j = 0; i < n; ++i, ++j) lane[j] += f(i);
  Acc s = 0;
  for (Acc l : lane) s += l;
  return s;
}

// tanh through exp: 1 - 2 / (exp(2u) + 1); exact limits at +-1 for large |u|.
template <typename T>
inline T vtanh(T u) {
  return T(1) - T(2) / (vexp<T>(T(2) * u) + T(1));
}

}  // namespace loom
