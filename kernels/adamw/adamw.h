// adamw.h: AdamW over the flat parameter buffer (decoupled weight decay, applied only where
// the decay mask says so: weight matrices, not biases or norm gains), and the global
// gradient norm, reduced in a fixed order (deterministic).
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "kernels/common/stream.h"

namespace loom::ref {

struct AdamWArgs {
  float* param;          // [n] master weights
  const float* grad;     // [n]
  float* m;              // [n] first moment
  float* v;              // [n] second moment
  const uint8_t* decay;  // [n] 1 where weight decay applies, or nullptr (everywhere)
  int64_t n;
  float lr, beta1, beta2, eps, weight_decay;
  float grad_scale;      // gradients are multiplied by this first (clipping)
  int64_t step;          // 1-based, for bias correction
};
void adamw_step(const AdamWArgs& a);

// sqrt(sum g^2), accumulated in double over fixed chunks then summed in order.
double grad_norm(const float* g, int64_t n);

}  // namespace loom::ref

// CUDA kernels (adamw.cu): AdamW over the flat buffers, f32 master weights and moments, and a
// bf16 working copy written with stochastic rounding (seeded: same seed, same bits); the
// global gradient norm in two deterministic stages; f32 -> bf16 casts.
namespace loom::cuda {
// Updates a.param / a.m / a.v (f32) as ref::adamw_step, then writes working[i] = SR(param[i]).
void adamw(const ref::AdamWArgs& a, bf16* working, uint64_t seed, Stream s);
size_t global_norm_scratch_floats(int64_t n);
// out[0] = sum of g[i]^2 (f32, fixed reduction order).
void global_norm_sq(const float* g, int64_t n, float* scratch, float* out, Stream s);
void cast_to_bf16(const float* src, bf16* dst, int64_t n, Stream s);  // round to nearest even
}  // namespace loom::cuda
