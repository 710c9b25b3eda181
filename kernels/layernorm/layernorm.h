// layernorm.h: layer norm over the last dimension, y = (x - mean) * rstd * g + b.
// Forward saves mean and rstd per row so that backward does not recompute statistics.
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "kernels/common/stream.h"

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
  T* dg;          // [C] accumulated (+=); dg and db both nullptr: frozen, dx only
  T* db;          // [C] accumulated (+=)
  int64_t N, C;
  const T* dresid = nullptr;  // [N, C] or nullptr: added to dx (the residual stream's gradient)
};
template <typename T>
void layernorm_bwd(const LayerNormBwdArgs<T>& a);

}  // namespace loom::ref

// CUDA kernels (layernorm.cu). bf16 activations and weights, f32 statistics and gradients of
// the parameters. Launchers never allocate: scratch comes from the caller.
namespace loom::cuda {

struct LayerNormFwd {
  const bf16* x;         // [N, C]
  const bf16* residual;  // [N, C] or nullptr: then x + residual is normalised
  bf16* sum;             // [N, C] x + residual (required with residual)
  const bf16* g;         // [C]
  const bf16* b;         // [C]
  bf16* y;               // [N, C]
  float* mean;           // [N]
  float* rstd;           // [N]
  int64_t N, C;
  float eps;
};
void layernorm_fwd(const LayerNormFwd& a, Stream s);

struct LayerNormBwd {
  const bf16* dy;        // [N, C]
  const bf16* x;         // [N, C] the normalised input (the sum, when fused)
  const bf16* g;         // [C]
  const float* mean;     // [N]
  const float* rstd;     // [N]
  const bf16* dresid;    // [N, C] or nullptr: added to dx
  bf16* dx;              // [N, C] written
  float* dg;             // [C] accumulated (+=); dg and db both nullptr: frozen, dx only
  float* db;             // [C] accumulated (+=)
  float* scratch;        // layernorm_bwd_scratch_floats(N, C) floats: bounded dg/db partials
  int64_t N, C;
};
size_t layernorm_bwd_scratch_floats(int64_t N, int64_t C);
void layernorm_bwd(const LayerNormBwd& a, Stream s);

}  // namespace loom::cuda
