// softmax_xent_ref.cpp: CPU reference of the fused classifier loss.
#include "kernels/softmax_xent/softmax_xent.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "core/vmath.h"

namespace loom::ref {

template <typename T>
void softmax_xent_fwd(const SoftmaxXentArgs<T>& a) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < a.N; ++n) {
    const T* z = a.logits + n * a.V;
    T m = z[0];
#pragma omp simd reduction(max : m)
    for (int64_t v = 1; v < a.V; ++v) m = vmax(m, z[v]);
    T s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t v = 0; v < a.V; ++v) s += vexp<T>(z[v] - m);
    a.lse[n] = m + std::log(s);
  }
  // The mean is summed serially in row order: the same bits however many threads ran.
  double total = 0;
  for (int64_t n = 0; n < a.N; ++n) {
    const int32_t y = a.targets[n];
    if (y == kIgnoreTarget) continue;
    LOOM_CHECK(y >= 0 && y < a.V, "target ", y, " outside vocabulary ", a.V);
    total += static_cast<double>(a.lse[n] - a.logits[n * a.V + y]);
  }
  a.loss[0] = static_cast<T>(total / static_cast<double>(a.N));
}

template <typename T>
void softmax_xent_bwd(const SoftmaxXentBwdArgs<T>& a) {
  const T scale = a.dloss[0] / T(a.N);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < a.N; ++n) {
    const T* z = a.logits + n * a.V;
    T* d = a.dlogits + n * a.V;
    const T l = a.lse[n];
    const T sc = a.targets[n] == kIgnoreTarget ? T(0) : scale;
#pragma omp simd
    for (int64_t v = 0; v < a.V; ++v) d[v] = vexp<T>(z[v] - l) * sc;
    if (a.targets[n] != kIgnoreTarget) d[a.targets[n]] -= scale;
  }
}

template <typename T>
void softmax_rows(const T* x, T* y, int64_t N, int64_t V) {
  for (int64_t n = 0; n < N; ++n) {
    const T* z = x + n * V;
    T m = z[0];
    for (int64_t v = 1; v < V; ++v) m = std::max(m, z[v]);
    T s = 0;
    for (int64_t v = 0; v < V; ++v) s += (y[n * V + v] = std::exp(z[v] - m));
    for (int64_t v = 0; v < V; ++v) y[n * V + v] /= s;
  }
}

template void softmax_xent_fwd<float>(const SoftmaxXentArgs<float>&);
template void softmax_xent_fwd<double>(const SoftmaxXentArgs<double>&);
template void softmax_xent_bwd<float>(const SoftmaxXentBwdArgs<float>&);
template void softmax_xent_bwd<double>(const SoftmaxXentBwdArgs<double>&);
template void softmax_rows<float>(const float*, float*, int64_t, int64_t);
template void softmax_rows<double>(const double*, double*, int64_t, int64_t);

}  // namespace loom::ref
