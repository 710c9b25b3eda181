// layernorm.h: layer norm over the last dimension, y = (x - mean) * rstd * g + b.
// Forward saves mean and rstd per row so that backward does not recompute statistics.
#pragma once
#include <cstdint>

namespace loom::ref {

template <typename T>
struct LayerNormArgs {
  const T* x;     // [N, C]
  const T* g;     // [C]
  const T* b;     // [C]
  T* y;           // [N, C]
  T* mean;        // [N]
  T* rstd;        // [N]
  int64_t N, C;
  float eps;
};
template <typename T>
void layernorm_fwd(const LayerNormArgs<T>& a);

template <typename T>
struct LayerNormBwdArgs {
  const T* dy;    // [N, C]
  const T* x;     // [N, C]
  const T* g;     // [C]
  const T* mean;  // [N]
  const T* rstd;  // [N]
  T* dx;          // [N, C] written
  T* dg;          // [C] accumulated (+=)
  T* db;          // [C] accumulated (+=)
  int64_t N, C;
};
template <typename T>
void layernorm_bwd(const LayerNormBwdArgs<T>& a);

}  // namespace loom::ref
