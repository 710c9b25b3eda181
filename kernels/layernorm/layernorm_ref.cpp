// layernorm_ref.cpp: CPU reference layer norm, OpenMP over rows. dg/db are reduced through
// per-thread partial rows (then summed in a fixed order) so results do not depend on timing.
#include "kernels/layernorm/layernorm.h"

#include <omp.h>

#include <cmath>
#include <vector>

#include "core/vmath.h"

namespace loom::ref {

template <typename T>
void layernorm_fwd(const LayerNormArgs<T>& a) {
  const int64_t C = a.C;
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < a.N; ++n) {
    const T* x = a.x + n * C;
    if (a.residual) {
      T* s = a.sum + n * C;
      const T* r = a.residual + n * C;
      for (int64_t c = 0; c < C; ++c) s[c] = x[c] + r[c];
      x = s;
    }
    // Row sums in fixed lanes (core/vmath.h): vector loops with an order the source fixes.
    const T m = lane_sum<T>(C, [x](int64_t c) { return x[c]; }) / T(C);
    const T v = lane_sum<T>(C, [x, m](int64_t c) { return (x[c] - m) * (x[c] - m); }) / T(C);
    const T r = T(1) / std::sqrt(v + T(a.eps));
    T* y = a.y + n * C;
    for (int64_t c = 0; c < C; ++c) y[c] = (x[c] - m) * r * a.g[c] + a.b[c];
    a.mean[n] = m;
    a.rstd[n] = r;
  }
}

template <typename T>
void layernorm_bwd(const LayerNormBwdArgs<T>& a) {
  const int64_t C = a.C;
  // Static chunking by a fixed chunk count keeps the partial sums independent of the number
  // of threads actually running: bit-identical results run to run.
  const int64_t chunks = std::min<int64_t>(a.N, 16);
  std::vector<T> part(static_cast<size_t>(chunks) * 2 * C, T(0));
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < chunks; ++k) {
    T* pg = part.data() + k * 2 * C;
    T* pb = pg + C;
    const int64_t n0 = a.N * k / chunks, n1 = a.N * (k + 1) / chunks;
    for (int64_t n = n0; n < n1; ++n) {
      const T* dy = a.dy + n * C;
      const T* x = a.x + n * C;
      const T m = a.mean[n], r = a.rstd[n];
      const T* g = a.g;
      const T sum_dyg = lane_sum<T>(C, [dy, g](int64_t c) { return dy[c] * g[c]; }) / T(C);
      const T sum_dyg_xhat =
          lane_sum<T>(C, [dy, g, x, m, r](int64_t c) { return dy[c] * g[c] * ((x[c] - m) * r); }) / T(C);
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        pg[c] += dy[c] * ((x[c] - m) * r);
        pb[c] += dy[c];
      }
      T* dx = a.dx + n * C;
      for (int64_t c = 0; c < C; ++c) {
        const T xhat = (x[c] - m) * r;
        dx[c] = (dy[c] * a.g[c] - sum_dyg - xhat * sum_dyg_xhat) * r + (a.dresid ? a.dresid[n * C + c] : T(0));
      }
    }
  }
  if (!a.dg) return;  // frozen gain and bias (fine-tuning with adapters): dx only
  for (int64_t k = 0; k < chunks; ++k)
    for (int64_t c = 0; c < C; ++c) {
      a.dg[c] += part[k * 2 * C + c];
      a.db[c] += part[k * 2 * C + C + c];
    }
}

template void layernorm_fwd<float>(const LayerNormArgs<float>&);
template void layernorm_fwd<double>(const LayerNormArgs<double>&);
template void layernorm_bwd<float>(const LayerNormBwdArgs<float>&);
template void layernorm_bwd<double>(const LayerNormBwdArgs<double>&);

}  // namespace loom::ref
