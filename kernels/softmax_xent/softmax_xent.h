// softmax_xent.h: the fused classifier loss. Forward: per row log-sum-exp and the mean
// cross-entropy; backward recomputes softmax from logits and the saved log-sum-exp, so the
// [N, V] probabilities are never stored.
#pragma once
#include <cstdint>

namespace loom::ref {

template <typename T>
struct SoftmaxXentArgs {
  const T* logits;         // [N, V]
  const int32_t* targets;  // [N]
  T* loss;                 // [1]  mean over rows of (lse - logit[target])
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
