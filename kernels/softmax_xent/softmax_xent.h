// softmax_xent.h: the fused classifier loss. Forward: per row log-sum-exp and the mean
// cross-entropy; backward recomputes softmax from logits and the saved log-sum-exp, so the
// [N, V] probabilities are never stored.
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "kernels/common/stream.h"

namespace loom {
// A target row that adds nothing to the loss and gets a zero gradient (padding); the loss
// stays the sum over the other rows divided by all N.
inline constexpr int32_t kIgnoreTarget = -1;
}  // namespace loom

namespace loom::ref {

template <typename T>
struct SoftmaxXentArgs {
  const T* logits;         // [N, V]
  const int32_t* targets;  // [N]
  T* loss;                 // [1]  sum over rows of (lse - logit[target]) / N (kIgnoreTarget rows: 0)
  T* lse;                  // [N]  saved for backward
  int64_t N, V;
};
template <typename T>
void softmax_xent_fwd(const SoftmaxXentArgs<T>& a);

template <typename T>
struct SoftmaxXentBwdArgs {
  const T* dloss;          // [1]
  const T* logits;         // [N, V]
  const int32_t* targets;  // [N]
  const T* lse;            // [N]
  T* dlogits;              // [N, V] written (may alias logits: each row is read before written)
  int64_t N, V;
};
template <typename T>
void softmax_xent_bwd(const SoftmaxXentBwdArgs<T>& a);

// Row softmax, y = softmax(x) over the last dimension (sampling, tests).
template <typename T>
void softmax_rows(const T* x, T* y, int64_t N, int64_t V);

}  // namespace loom::ref

// CUDA kernels (softmax_xent.cu): the fused classifier. Forward: per-row log-sum-exp and the
// mean loss (per-row losses reduced in a fixed order: deterministic). Backward: dlogits =
// (softmax - onehot) * dloss / N recomputed from logits and lse, written in place over the
// logits; probabilities are never stored.
namespace loom::cuda {
struct SoftmaxXentFwd {
  const bf16* logits;      // [N, V]
  const int32_t* targets;  // [N]
  float* lse;              // [N]
  float* loss;             // [1] mean over rows
  float* scratch;          // softmax_xent_scratch_floats(N) floats
  int64_t N, V;
};
size_t softmax_xent_scratch_floats(int64_t N);
void softmax_xent_fwd(const SoftmaxXentFwd& a, Stream s);

struct SoftmaxXentBwd {
  const float* dloss;      // [1] device
  const bf16* logits;      // [N, V]
  const int32_t* targets;  // [N]
  const float* lse;        // [N]
  bf16* dlogits;           // [N, V], may alias logits
  int64_t N, V;
};
void softmax_xent_bwd(const SoftmaxXentBwd& a, Stream s);

// Plain row softmax (bf16 in/out), y = softmax(x) over the last dimension.
void softmax_fwd(const bf16* x, bf16* y, int64_t N, int64_t V, Stream s);
}  // namespace loom::cuda
