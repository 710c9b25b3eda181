// layernorm.h: layer norm over the last dimension, y = (x - mean) * rstd * g + b.
// Forward saves mean and rstd per row so that backward does not recompute statistics.
#pragma once
#include <cstdint>

namespace loom::ref {

template <typename T>
struct LayerNormArgs {
  const T* x;     // [N, C]  (with residual: x + residual is normalised and written to sum)
  const T* g;     // [C]
  const T* b;     // [C]
  T* y;           // [N, C]
  T* mean;        // [N]
  T* rstd;        // [N]
  int64_t N, C;
  float eps;
  const T* residual = nullptr;  // [N, C] or nullptr
  T* sum = nullptr;             // [N, C] x + residual (required with residual)
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
  const T* dresid = nullptr;  // [N, C] or nullptr: added to dx (the residual stream's gradient)
};
template <typename T>
void layernorm_bwd(const LayerNormBwdArgs<T>& a);

}  // namespace loom::ref
