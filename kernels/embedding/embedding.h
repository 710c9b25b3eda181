// embedding.h: token + position embedding, out[b,t] = wte[tokens[b,t]] + wpe[pos0 + t].
// Backward is deterministic (no float atomics): each thread owns a slice of channels.
#pragma once
#include <cstdint>

#include "engine/core/dtype.h"
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

}  // namespace loom::ref

// CUDA kernels (embedding.cu). Backward is deterministic without float atomics: positions
// are grouped by token (integer work only), then each token's rows are summed in position
// order. pos0 is a device pointer (decode reads the cache length from device memory, so the
// launch can live in a CUDA graph), or nullptr for 0.
namespace loom::cuda {
struct EmbeddingFwd {
  const int32_t* tokens;  // [B, T]
  const bf16* wte;        // [V, C]
  const bf16* wpe;        // [maxT, C]
  bf16* out;              // [B, T, C]
  int64_t B, T, C, V, maxT;
  const int32_t* pos0;    // [1] device, or nullptr
};
void embedding_fwd(const EmbeddingFwd& a, Stream s);

struct EmbeddingBwd {
  const bf16* dout;       // [B, T, C]
  const int32_t* tokens;  // [B, T]
  float* dwte;            // [V, C] accumulated (+=)
  float* dwpe;            // [maxT, C] accumulated (+=)
  int32_t* scratch;       // embedding_bwd_scratch_ints(B * T, V) ints
  int64_t B, T, C, V, maxT;
  const int32_t* pos0;    // [1] device, or nullptr
};
size_t embedding_bwd_scratch_ints(int64_t BT, int64_t V);
void embedding_bwd(const EmbeddingBwd& a, Stream s);
}  // namespace loom::cuda
