// attention.h: multi-head attention: self-attention from a packed qkv tensor (causal or
// bidirectional) and cross-attention from queries of one tensor to packed keys/values of another.
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
// kernels rely on that to skip whole key and query tiles. The document mask is for causal
// self-attention without key padding only.
//
// Masks, for query i and key j of batch row b (len = key_len[b], or Tk without key padding):
//   causal        j <= i and j < len           (query i >= len sees keys 0 .. len - 1)
//   bidirectional j < len
//   cross         j < len                      (Tq queries, Tk keys: never causal)
// Key padding (key_len [B] int32, optional) masks the keys of a padded batch row for every
// query; len must be in [1, Tk] (the CPU checks it; the GPU kernels clamp it). Query rows at
// or past len are ordinary rows attending over the valid keys, so their outputs, lse and
// gradients are finite; the padded keys' rows are never read (their contents may be anything,
// NaN included) and their gradient rows are written as zeros.
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
  const int32_t* key_len = nullptr;    // [B] optional: key padding
  bool causal = true;
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
  const int32_t* key_len = nullptr;    // [B] optional: the forward's key padding
  bool causal = true;
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

// Cross-attention: queries q [B, Tq, C] against keys and values packed in kv [B, Tk, 2C]
// (k in columns [0, C), v in [C, 2C)), heads as above; never causal.
template <typename T>
struct CrossAttentionArgs {
  const T* q;   // [B, Tq, C]
  const T* kv;  // [B, Tk, 2C]
  T* out;       // [B, Tq, C]
  T* lse;       // [B, H, Tq]
  int64_t B, Tq, Tk, C, H;
  const int32_t* key_len = nullptr;  // [B] optional: key padding
};
template <typename T>
void cross_attention_fwd(const CrossAttentionArgs<T>& a);

template <typename T>
struct CrossAttentionBwdArgs {
  const T* dout;  // [B, Tq, C]
  const T* q;     // [B, Tq, C]
  const T* kv;    // [B, Tk, 2C]
  const T* out;   // [B, Tq, C]
  const T* lse;   // [B, H, Tq]
  T* dq;          // [B, Tq, C] written
  T* dkv;         // [B, Tk, 2C] written
  int64_t B, Tq, Tk, C, H;
  const int32_t* key_len = nullptr;
};
template <typename T>
void cross_attention_bwd(const CrossAttentionBwdArgs<T>& a);

// Decoding against a cached encoder output: kv [Bk, Tk, 2C] holds the encoder's key/value
// projections, computed once; each call attends from Tn new query positions q [Bq, Tn, C].
// Bq is a multiple of Bk and query row b reads kv row b / (Bq / Bk): the beams of one source
// share its keys.
template <typename T>
struct CrossAttentionDecodeArgs {
  const T* q;   // [Bq, Tn, C]
  const T* kv;  // [Bk, Tk, 2C]
  T* out;       // [Bq, Tn, C]
  int64_t Bq, Tn, Bk, Tk, C, H;
  const int32_t* key_len = nullptr;  // [Bk] optional
};
template <typename T>
void cross_attention_decode(const CrossAttentionDecodeArgs<T>& a);

// doc_start [B, T] from the tokens [B, T]: the end-of-text token `eot` STARTS a document (as
// in GPT-2's data, where it precedes each document), so doc_start[b, t] is the last position
// <= t holding eot, or 0 when there is none in the window.
void document_starts(const int32_t* tokens, int32_t* doc_start, int64_t B, int64_t T, int32_t eot);

}  // namespace loom::ref

// CUDA kernels (attention.cu): flash-style attention, with the masks defined above. Tiled over queries and keys with
// an online softmax, no [T, T] matrix in memory; backward recomputes probabilities from the
// saved lse. bf16 in, f32 accumulate. Head dims D = C / H in {16, 32, 64, 128} (16 and 32 keep
// emulated tests small; 64 and 128 are what models use).
namespace loom::cuda {
// The head dims the kernels are built for, and the most B x H a launch holds (the grid's y).
constexpr bool attention_head_dim_supported(int64_t D) { return D == 16 || D == 32 || D == 64 || D == 128; }
constexpr int64_t kAttentionMaxBatchHeads = 65535;

struct AttentionFwd {
  const bf16* qkv;  // [B, T, 3C]
  bf16* out;        // [B, T, C]
  float* lse;       // [B, H, T]
  int64_t B, T, C, H;
  const int32_t* doc_start = nullptr;  // [B, T] optional: the document mask (see above)
  const int32_t* key_len = nullptr;    // [B] optional: key padding
  bool causal = true;
};
void attention_fwd(const AttentionFwd& a, Stream s);

// Which forward kernel attention_fwd and cross_attention_fwd run: kAuto (the default) is the
// warp-specialised wgmma/TMA kernel on sm_90 devices (the SIMT emulator reports one) and the
// mma.sync kernel elsewhere; tests force either. Process-wide; either backward reads either
// forward's out and lse.
enum class AttentionFwdKernel { kAuto, kMmaSync, kSm90 };
void set_attention_fwd_kernel(AttentionFwdKernel k);
// The same choice for attention_bwd and cross_attention_bwd. The sm90 backward has D = 64 and
// 128; other head dims run the mma.sync backward whatever is set.
enum class AttentionBwdKernel { kAuto, kMmaSync, kSm90 };
void set_attention_bwd_kernel(AttentionBwdKernel k);

struct AttentionBwd {
  const bf16* dout;  // [B, T, C]
  const bf16* qkv;   // [B, T, 3C]
  const bf16* out;   // [B, T, C]
  const float* lse;  // [B, H, T]
  bf16* dqkv;        // [B, T, 3C] written
  float* scratch;    // attention_bwd_scratch_floats(B, T, C, H) floats
  int64_t B, T, C, H;
  const int32_t* doc_start = nullptr;  // [B, T] optional: the forward's document mask
  const int32_t* key_len = nullptr;    // [B] optional: the forward's key padding
  bool causal = true;
  // dQ summed over the key blocks in a fixed order (bit-identical run to run, at the cost of
  // blocks waiting their turn); otherwise f32 atomics in whatever order blocks run.
  bool deterministic = false;
};
// Also cross-attention's, with T = Tq.
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

struct CrossAttentionFwd {
  const bf16* q;   // [B, Tq, C]
  const bf16* kv;  // [B, Tk, 2C]
  bf16* out;       // [B, Tq, C]
  float* lse;      // [B, H, Tq]
  int64_t B, Tq, Tk, C, H;
  const int32_t* key_len = nullptr;  // [B] optional
};
void cross_attention_fwd(const CrossAttentionFwd& a, Stream s);

struct CrossAttentionBwd {
  const bf16* dout;  // [B, Tq, C]
  const bf16* q;     // [B, Tq, C]
  const bf16* kv;    // [B, Tk, 2C]
  const bf16* out;   // [B, Tq, C]
  const float* lse;  // [B, H, Tq]
  bf16* dq;          // [B, Tq, C] written; null: not needed
  bf16* dkv;         // [B, Tk, 2C] written; null: not needed
  float* scratch;    // attention_bwd_scratch_floats(B, Tq, C, H) floats
  int64_t B, Tq, Tk, C, H;
  const int32_t* key_len = nullptr;
  bool deterministic = false;  // as AttentionBwd's
};
void cross_attention_bwd(const CrossAttentionBwd& a, Stream s);

struct CrossAttentionDecode {
  const bf16* q;   // [Bq, Tn, C]
  const bf16* kv;  // [Bk, Tk, 2C]: the cached encoder keys/values
  bf16* out;       // [Bq, Tn, C]
  int64_t Bq, Tn, Bk, Tk, C, H;
  const int32_t* key_len = nullptr;  // [Bk] optional
};
void cross_attention_decode(const CrossAttentionDecode& a, Stream s);

// ref::document_starts on the device: one thread per sequence scans its tokens [B, T].
void document_starts(const int32_t* tokens, int32_t* doc_start, int64_t B, int64_t T, int32_t eot, Stream s);
}  // namespace loom::cuda
