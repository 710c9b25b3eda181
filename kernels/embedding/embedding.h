// embedding.h: token + position embedding, out[b,t] = wte[tokens[b,t]] + wpe[pos0 + t].
// Backward is deterministic (no float atomics): each thread owns a slice of channels.
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "kernels/common/stream.h"

namespace loom::ref {

template <typename T>
struct EmbeddingArgs {
  const int32_t* tokens;  // [B, T]
  const T* wte;           // [V, C]
  const T* wpe;           // [maxT, C]
  T* out;                 // [B, T, C]
  int64_t B, seq, C, V, maxT;
  int64_t pos0;           // position of t = 0 (decode: the cache length)
};
template <typename T>
void embedding_fwd(const EmbeddingArgs<T>& a);

template <typename T>
struct EmbeddingBwdArgs {
  const T* dout;          // [B, T, C]
  const int32_t* tokens;  // [B, T]
  T* dwte;                // [V, C] accumulated (+=)
  T* dwpe;                // [maxT, C] accumulated (+=)
  int64_t B, seq, C, V, maxT;
  int64_t pos0;
};
template <typename T>
void embedding_bwd(const EmbeddingBwdArgs<T>& a);

// Context embedding (feed-forward LM): out[b, t, j*E:(j+1)*E] = wte[tokens[b, t-n+1+j]], or
// wte[pad] where t-n+1+j < 0 (a token equal to pad is padding too).
template <typename T>
struct ContextEmbeddingArgs {
  const int32_t* tokens;  // [B, T]
  const T* wte;           // [V, E], V > pad
  T* out;                 // [B, T, n*E]
  int64_t B, seq, E, V;
  int n, pad;
};
template <typename T>
void context_embedding_fwd(const ContextEmbeddingArgs<T>& a);
template <typename T>
struct ContextEmbeddingBwdArgs {
  const T* dout;          // [B, T, n*E]
  const int32_t* tokens;  // [B, T]
  T* dwte;                // [V, E] accumulated (+=)
  int64_t B, seq, E, V;
  int n, pad;
};
template <typename T>
void context_embedding_bwd(const ContextEmbeddingBwdArgs<T>& a);

}  // namespace loom::ref

// CUDA kernels (embedding.cu). Backward is deterministic without float atomics: positions
// are grouped by token (integer work only), then each token's rows are summed in position
// order. pos0 is a device pointer (decode reads the cache length from device memory, so the
// launch can live in a CUDA graph), or nullptr for 0.
namespace loom::cuda {
struct EmbeddingFwd {
  const int32_t* tokens;  // [B, T]
  const bf16* wte;        // [V, C]
  const bf16* wpe;        // [maxT, C], or nullptr: token rows only
  bf16* out;              // [B, T, C]
  int64_t B, T, C, V, maxT;
  const int32_t* pos0;    // [1] device, or nullptr
};
void embedding_fwd(const EmbeddingFwd& a, Stream s);

struct EmbeddingBwd {
  const bf16* dout;       // [B, T, C]
  const int32_t* tokens;  // [B, T]
  float* dwte;            // [V, C] accumulated (+=)
  float* dwpe;            // [maxT, C] accumulated (+=), or nullptr (no position table)
  int32_t* scratch;       // embedding_bwd_scratch_ints(B * T, V) ints
  int64_t B, T, C, V, maxT;
  const int32_t* pos0;    // [1] device, or nullptr
};
size_t embedding_bwd_scratch_ints(int64_t BT, int64_t V);
void embedding_bwd(const EmbeddingBwd& a, Stream s);
// The context embedding as an embedding without positions: out[(b*T + t)*n + j] =
// tokens[b, t-n+1+j], or pad before the window. Then embedding_fwd/bwd over B*T*n rows of E.
void context_tokens(const int32_t* tokens, int32_t* out, int64_t B, int64_t T, int n, int pad, Stream s);
}  // namespace loom::cuda
