// attention.h: causal multi-head self-attention from a packed qkv tensor.
//
// qkv is [B, T, 3C]: q in columns [0, C), k in [C, 2C), v in [2C, 3C); head h owns columns
// h*D .. (h+1)*D of each part (D = C / H). The output is [B, T, C], heads concatenated.
// Forward saves the log-sum-exp of every score row (lse [B, H, T]); backward recomputes the
// probabilities from it (flash-attention style), so no [T, T] matrix outlives a call.
//
// Document mask (optional, nullptr = plain causal): doc_start [B, T] int32 holds, for each
// position, the first position of its document within the window; query i sees key j iff
// doc_start[b, i] <= j <= i. Documents are contiguous runs, so doc_start is nondecreasing
// along t with doc_start[b, i] <= i (document_starts() below builds it that way); the GPU
// kernels rely on that to skip whole key and query tiles.
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "kernels/common/stream.h"

namespace loom::ref {

template <typename T>
struct AttentionArgs {
  const T* qkv;  // [B, T, 3C]
  T* out;        // [B, T, C]
  T* lse;        // [B, H, T]
  int64_t B, seq, C, H;
  const int32_t* doc_start = nullptr;  // [B, T] optional: the document mask
};
template <typename T>
void attention_fwd(const AttentionArgs<T>& a);

template <typename T>
struct AttentionBwdArgs {
  const T* dout;  // [B, T, C]
  const T* qkv;   // [B, T, 3C]
  const T* out;   // [B, T, C]
  const T* lse;   // [B, H, T]
  T* dqkv;        // [B, T, 3C] written
  int64_t B, seq, C, H;
  const int32_t* doc_start = nullptr;  // [B, T] optional: the forward's document mask
};
template <typename T>
void attention_bwd(const AttentionBwdArgs<T>& a);

// Decoding with a KV cache: qkv holds Tn new positions starting at pos0; their k and v are
// written into the caches, then each new query attends to cache positions 0 .. pos0 + t.
template <typename T>
struct AttentionDecodeArgs {
  const T* qkv;   // [B, Tn, 3C]
  T* kcache;      // [B, H, maxT, D]
  T* vcache;      // [B, H, maxT, D]
  T* out;         // [B, Tn, C]
  int64_t B, Tn, C, H, maxT;
  int64_t pos0;
};
template <typename T>
void attention_decode(const AttentionDecodeArgs<T>& a);

// doc_start [B, T] from the tokens [B, T]: the end-of-text token `eot` STARTS a document (as
// in GPT-2's data, where it precedes each document), so doc_start[b, t] is the last position
// <= t holding eot, or 0 when there is none in the window.
void document_starts(const int32_t* tokens, int32_t* doc_start, int64_t B, int64_t T, int32_t eot);

}  // namespace loom::ref

// CUDA kernels (attention.cu): flash-style causal attention. Tiled over queries and keys with
// an online softmax, no [T, T] matrix in memory; backward recomputes probabilities from the
// saved lse. bf16 in, f32 accumulate. Head dims D = C / H in {16, 32, 64, 128} (16 and 32 keep
// emulated tests small; 64 and 128 are what models use).
namespace loom::cuda {
struct AttentionFwd {
  const bf16* qkv;  // [B, T, 3C]
  bf16* out;        // [B, T, C]
  float* lse;       // [B, H, T]
  int64_t B, T, C, H;
  const int32_t* doc_start = nullptr;  // [B, T] optional: the document mask (see above)
};
void attention_fwd(const AttentionFwd& a, Stream s);

struct AttentionBwd {
  const bf16* dout;  // [B, T, C]
  const bf16* qkv;   // [B, T, 3C]
  const bf16* out;   // [B, T, C]
  const float* lse;  // [B, H, T]
  bf16* dqkv;        // [B, T, 3C] written
  float* scratch;    // attention_bwd_scratch_floats(B, T, C, H) floats
  int64_t B, T, C, H;
  const int32_t* doc_start = nullptr;  // [B, T] optional: the forward's document mask
};
size_t attention_bwd_scratch_floats(int64_t B, int64_t T, int64_t C, int64_t H);
void attention_bwd(const AttentionBwd& a, Stream s);

struct AttentionDecode {
  const bf16* qkv;   // [B, Tn, 3C]
  bf16* kcache;      // [B, H, maxT, D]
  bf16* vcache;      // [B, H, maxT, D]
  bf16* out;         // [B, Tn, C]
  int64_t B, Tn, C, H, maxT;
  const int32_t* pos0;  // [1] device: cache length before these Tn positions
};
void attention_decode(const AttentionDecode& a, Stream s);

// ref::document_starts on the device: one thread per sequence scans its tokens [B, T].
void document_starts(const int32_t* tokens, int32_t* doc_start, int64_t B, int64_t T, int32_t eot, Stream s);
}  // namespace loom::cuda
