// embedding.h: token + position embedding, out[b,t] = wte[tokens[b,t]] + wpe[pos0 + t].
// Backward is deterministic (no float atomics): each thread owns a slice of channels.
#pragma once
#include <cstdint>

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

}  // namespace loom::ref
