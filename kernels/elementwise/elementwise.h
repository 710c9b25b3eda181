// elementwise.h: residual add (y = a + b) and scaled accumulation used by autodiff.
#pragma once
#include <cstdint>

#include "engine/core/dtype.h"
#include "kernels/common/stream.h"

namespace loom::ref {

template <typename T>
void add(const T* a, const T* b, T* y, int64_t n);

}  // namespace loom::ref

// CUDA kernels (elementwise.cu).
namespace loom::cuda {
void add(const bf16* a, const bf16* b, bf16* y, int64_t n, Stream s);  // y may alias a or b
}  // namespace loom::cuda
