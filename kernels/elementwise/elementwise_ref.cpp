// elementwise_ref.cpp: CPU reference elementwise ops.
#include "kernels/elementwise/elementwise.h"

namespace loom::ref {

template <typename T>
void add(const T* a, const T* b, T* y, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}
template <typename T>
void scale(const T* x, T s, T* y, int64_t n) {
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = s * x[i];
}
template void scale<float>(const float*, float, float*, int64_t);
template void scale<double>(const double*, double, double*, int64_t);
template void add<float>(const float*, const float*, float*, int64_t);
template void add<double>(const double*, const double*, double*, int64_t);

}  // namespace loom::ref
