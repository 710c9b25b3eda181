// elementwise.h: residual add (y = a + b) and scaled accumulation used by autodiff.
#pragma once
#include <cstdint>

namespace loom::ref {

template <typename T>
void add(const T* a, const T* b, T* y, int64_t n);

}  // namespace loom::ref
