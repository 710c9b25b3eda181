// adamw.h: AdamW over the flat parameter buffer (decoupled weight decay, applied only where
// the decay mask says so: weight matrices, not biases or norm gains), and the global
// gradient norm, reduced in a fixed order (deterministic).
#pragma once
#include <cstdint>

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
