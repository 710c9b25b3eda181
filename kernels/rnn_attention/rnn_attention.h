// rnn_attention.h: the attention step of a recurrent sequence-to-sequence decoder over the
// encoder states (Luong 2015, Bahdanau 2015), for every decoder position at once. Each query
// row t of batch b scores the first key_len[b] encoder positions, softmaxes the scores and
// returns the probability-weighted sum of the values:
//   dot       score_j = q_t . k_j                      (Luong dot: q = h_t, k = s_j;
//                                                       Luong general: q = W h_t by a linear)
//   additive  score_j = v . tanh(q_t + k_j)            (Bahdanau: q = W1 h_t, k = W2 s_j)
//   ctx_t = sum_j softmax(score)_j values_j,   values_j = s_j
// Only this masked score/softmax/context part is an op: the projections around it (W, W1, W2,
// Luong's tanh(Wc [c; h])) are ordinary linear/tanh ops. The scores are not scaled by
// 1/sqrt(A) (the papers' forms), which is why this is not the multi-head cross_attention op.
// Layouts:
//   q       [B, Tq, A]   queries
//   keys    [B, Tk, A]   keys
//   values  [B, Tk, C]   values (often the same tensor as keys in the dot form)
//   v       [A]          the additive form's scoring vector (unused by the dot form)
//   key_len [B] i32      optional: keys j >= key_len[b] are padding (probability 0); a row
//                        with no key at all gets ctx = 0
//   ctx     [B, Tq, C]   context vectors
//   probs   [B, Tq, Tk]  the attention weights, saved for backward (0 on padding)
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/dtype.h"
#include "kernels/common/stream.h"

namespace loom {
enum class AttnScore : int { Dot = 0, Additive = 1 };
}  // namespace loom

namespace loom::ref {

template <typename T>
struct RnnAttentionArgs {
  AttnScore score;
  const T* q;
  const T* keys;
  const T* values;
  const T* v;               // [A] (additive only)
  const int32_t* key_len;   // [B] or nullptr
  T* ctx;                   // written
  T* probs;                 // written
  int64_t B, Tq, Tk, A, C;
};
template <typename T>
void rnn_attention_fwd(const RnnAttentionArgs<T>& a);

template <typename T>
struct RnnAttentionBwdArgs {
  AttnScore score;
  const T* dctx;            // [B, Tq, C]
  const T* q;
  const T* keys;
  const T* values;
  const T* v;               // [A] (additive only)
  const int32_t* key_len;
  const T* probs;           // forward output
  T* dq;                    // [B, Tq, A] written (nullptr: not wanted)
  T* dkeys;                 // [B, Tk, A] written (nullptr: not wanted)
  T* dvalues;               // [B, Tk, C] written (nullptr: not wanted)
  T* dv;                    // [A] accumulated (+=) (nullptr: not wanted)
  int64_t B, Tq, Tk, A, C;
};
template <typename T>
void rnn_attention_bwd(const RnnAttentionBwdArgs<T>& a);

}  // namespace loom::ref

// CUDA path (rnn_attention.cu): bf16 q, keys, values, v, ctx and input gradients; f32 scores,
// probabilities and the parameter gradient dv. Forward: one block per query row (scores in
// shared memory, block softmax, then the weighted sum over the values). Backward: one block
// per query row writes dscore (scratch) and dq, one block per key row sums dkeys and dvalues
// over the query rows, and the additive form's dv is reduced from per-key-row partials in a
// fixed order, so every gradient is the same bits every run (no atomics).
namespace loom::cuda {

struct RnnAttentionFwd {
  AttnScore score;
  const bf16* q;
  const bf16* keys;
  const bf16* values;
  const bf16* v;
  const int32_t* key_len;
  bf16* ctx;
  float* probs;
  int64_t B, Tq, Tk, A, C;
};
void rnn_attention_fwd(const RnnAttentionFwd& a, Stream s);

struct RnnAttentionBwd {
  AttnScore score;
  const bf16* dctx;
  const bf16* q;
  const bf16* keys;
  const bf16* values;
  const bf16* v;
  const int32_t* key_len;
  const float* probs;
  bf16* dq;       // nullptr: not wanted
  bf16* dkeys;    // nullptr: not wanted
  bf16* dvalues;  // nullptr: not wanted
  float* dv;      // accumulated (+=); nullptr: not wanted
  float* scratch; // rnn_attention_bwd_scratch_floats(...) floats
  int64_t B, Tq, Tk, A, C;
};
size_t rnn_attention_bwd_scratch_floats(AttnScore score, int64_t B, int64_t Tq, int64_t Tk, int64_t A);
void rnn_attention_bwd(const RnnAttentionBwd& a, Stream s);

}  // namespace loom::cuda
