// schedule.h: learning-rate schedule: linear warmup from 0 to lr, then cosine decay to min_lr
// at the last step.
#pragma once
#include <cmath>
#include <cstdint>

namespace loom {

inline double lr_at(int64_t step, int64_t total_steps, double lr, double min_lr, int64_t warmup) {
  if (step < warmup) return lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  if (total_steps <= warmup + 1) return lr;
  const double progress = static_cast<double>(step - warmup) / static_cast<double>(total_steps - 1 - warmup);
  const double p = std::min(1.0, std::max(0.0, progress));
  return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(3.141592653589793 * p));
}

}  // namespace loom
