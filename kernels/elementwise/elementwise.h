// elementwise.h: residual add (y = a + b) and scaled accumulation used by autodiff.
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "kernels/common/stream.h"

namespace loom::ref {

template <typename T>
void add(const T* a, const T* b, T* y, int64_t n);
template <typename T>
void scale(const T* x, T s, T* y, int64_t n);  // y = s * x (LoRA's alpha / rank)

}  // namespace loom::ref

// CUDA kernels (elementwise.cu).
namespace loom::cuda {
void add(const bf16* a, const bf16* b, bf16* y, int64_t n, Stream s);  // y may alias a or b
void scale(const bf16* x, float s, bf16* y, int64_t n, Stream st);  // y = s * x, f32 math; y may alias x
void widen_bf16(const bf16* src, float* dst, int64_t n, Stream s);      // dst = float(src), exact
}  // namespace loom::cuda
