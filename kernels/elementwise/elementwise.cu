// elementwise.cu: y = a + b on bf16 (the residual add), y = s * x, and bf16 -> f32 widening,
// f32 arithmetic; the CUDA side of elementwise.h (loom::ref::add / scale are the ground truth).
//
// Pure streams (6, 4 and 6 bytes an element, nothing to compute): each kernel is its
// per-element functor run by vec.cuh's map_elements, which owns the access pattern (16-byte
// packs in a grid-stride loop when the pointers allow, a scalar tail). y may alias a or b
// (in-place accumulation): every element is read, then written, by the same thread. The loads
// are not the streaming (evict-first) kind: with y aliasing an input the line is written
// right back, and the sum is usually read again soon (the next layer norm).
#include "kernels/common/cuda_compat.h"
#include "kernels/common/vec.cuh"

#include "kernels/elementwise/elementwise.h"

namespace loom::cuda {
namespace {

using Bf = __nv_bfloat16;

struct Add {
  __device__ __forceinline__ Bf operator()(Bf a, Bf b) const { return from_float<Bf>(to_float(a) + to_float(b)); }
};
struct Scale {
  float s;
  __device__ __forceinline__ Bf operator()(Bf x) const { return from_float<Bf>(s * to_float(x)); }
};
// Exact: every bf16 is a float. (A conversion for matrix products whose other operand is f32;
// not on any hot path.)
struct Widen {
  __device__ __forceinline__ float operator()(Bf x) const { return to_float(x); }
};

}  // namespace

void add(const bf16* a, const bf16* b, bf16* y, int64_t n, Stream s) {
  map_elements("add", Add{}, n, s, as_nv(y), as_nv(a), as_nv(b));
}
void scale(const bf16* x, float sc, bf16* y, int64_t n, Stream s) {
  map_elements("scale", Scale{sc}, n, s, as_nv(y), as_nv(x));
}
void widen_bf16(const bf16* src, float* dst, int64_t n, Stream s) {
  map_elements("widen_bf16", Widen{}, n, s, dst, as_nv(src));
}

}  // namespace loom::cuda
