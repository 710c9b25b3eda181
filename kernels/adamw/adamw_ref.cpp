// adamw_ref.cpp: CPU reference AdamW and gradient norm over the flat buffers. Both are the
// CPU backend's optimizer, so their loops are written for the vectoriser: a parallel loop over
// fixed chunks with a plain `omp simd` loop inside (GCC does not vectorise the body of a
// combined `parallel for simd` here), and std::sqrt compiled without errno
// (-fno-math-errno, kernels/CMakeLists.txt) so that it is one vector instruction instead of a
// call behind a branch. AdamW's arithmetic of an element is unchanged: the same bits as the
// scalar loop's. Neither result depends on the thread count.
#include "kernels/adamw/adamw.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/vmath.h"

namespace loom::ref {

namespace {

// Elements per chunk of the parallel loop: 64 KiB of each f32 buffer.
constexpr int64_t kChunk = 16384;

template <bool kMask>
void adamw_chunks(const AdamWArgs& a, float bc1, float bc2) {
  float* __restrict param = a.param;
  float* __restrict mom1 = a.m;
  float* __restrict mom2 = a.v;
  const float* __restrict grad = a.grad;
  const uint8_t* __restrict decay = a.decay;
  const float b1 = a.beta1, b2 = a.beta2, c1 = 1.0f - a.beta1, c2 = 1.0f - a.beta2;
  const float lr = a.lr, eps = a.eps, wd_all = a.weight_decay, scale = a.grad_scale;
  const int64_t n = a.n;
#pragma omp parallel for schedule(static)
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
    const int64_t c1e = std::min(n, c0 + kChunk);
#pragma omp simd
    for (int64_t i = c0; i < c1e; ++i) {
      const float g = grad[i] * scale;
      const float m = b1 * mom1[i] + c1 * g;
      const float v = b2 * mom2[i] + c2 * g * g;
      mom1[i] = m;
      mom2[i] = v;
      const float mhat = m / bc1, vhat = v / bc2;
      const float wd = kMask ? (decay[i] ? wd_all : 0.0f) : wd_all;
      param[i] -= lr * (mhat / (std::sqrt(vhat) + eps) + wd * param[i]);
    }
  }
}

}  // namespace

void adamw_step(const AdamWArgs& a) {
  const float bc1 = 1.0f - std::pow(a.beta1, static_cast<float>(a.step));
  const float bc2 = 1.0f - std::pow(a.beta2, static_cast<float>(a.step));
  if (a.decay)
    adamw_chunks<true>(a, bc1, bc2);
  else
    adamw_chunks<false>(a, bc1, bc2);
}

double grad_norm(const float* g, int64_t n) {
  // Fixed chunks, each summed in fixed lanes (lane_sum, core/vmath.h), then added in order:
  // the same bits at any thread count.
  constexpr int64_t kChunks = 64;
  std::vector<double> part(kChunks, 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < kChunks; ++k) {
    const int64_t i0 = n * k / kChunks, i1 = n * (k + 1) / kChunks;
    const float* c = g + i0;
    part[k] = lane_sum<double>(i1 - i0, [c](int64_t i) { return static_cast<double>(c[i]) * c[i]; });
  }
  double s = 0;
  for (double p : part) s += p;
  return std::sqrt(s);
}

}  // namespace loom::ref
