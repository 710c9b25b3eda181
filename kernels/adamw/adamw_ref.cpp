// adamw_ref.cpp: CPU reference AdamW and gradient norm over the flat buffers.
#include "kernels/adamw/adamw.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace loom::ref {

void adamw_step(const AdamWArgs& a) {
  const float bc1 = 1.0f - std::pow(a.beta1, static_cast<float>(a.step));
  const float bc2 = 1.0f - std::pow(a.beta2, static_cast<float>(a.step));
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < a.n; ++i) {
    const float g = a.grad[i] * a.grad_scale;
    const float m = a.beta1 * a.m[i] + (1.0f - a.beta1) * g;
    const float v = a.beta2 * a.v[i] + (1.0f - a.beta2) * g * g;
    a.m[i] = m;
    a.v[i] = v;
    const float mhat = m / bc1, vhat = v / bc2;
    const float wd = (!a.decay || a.decay[i]) ? a.weight_decay : 0.0f;
    a.param[i] -= a.lr * (mhat / (std::sqrt(vhat) + a.eps) + wd * a.param[i]);
  }
}

double grad_norm(const float* g, int64_t n) {
  constexpr int64_t kChunks = 64;
  std::vector<double> part(kChunks, 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < kChunks; ++k) {
    const int64_t i0 = n * k / kChunks, i1 = n * (k + 1) / kChunks;
    double s = 0;
    for (int64_t i = i0; i < i1; ++i) s += static_cast<double>(g[i]) * g[i];
    part[k] = s;
  }
  double s = 0;
  for (double p : part) s += p;
  return std::sqrt(s);
}

}  // namespace loom::ref
