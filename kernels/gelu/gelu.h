// gelu.h: GELU with the tanh approximation (as GPT-2), elementwise.
#pragma once
#include <cmath>
#include <cstdint>

namespace loom::ref {

template <typename T>
struct GeluArgs {
  const T* x;   // [n]
  T* y;         // [n]
  int64_t n;
};
template <typename T>
void gelu_fwd(const GeluArgs<T>& a);

template <typename T>
struct GeluBwdArgs {
  const T* dy;  // [n]
  const T* x;   // [n]
  T* dx;        // [n] written
  int64_t n;
};
template <typename T>
void gelu_bwd(const GeluBwdArgs<T>& a);

}  // namespace loom::ref
