// reduce.cuh: warp and block reductions (sum, max), one source for nvcc and the emulator,
// so that every kernel reduces the same way and the emulator checks that way once.
//
// warp_*: the xor butterfly, so every lane ends with the result and no broadcast is needed;
// all 32 lanes of the warp must take part.
// block_*: reduce each warp, meet in shared memory, then every warp reduces the per-warp
// partials itself, so every thread gets the result after two barriers. Preconditions:
//  - every thread of the block calls it (it contains __syncthreads), with the same line;
//  - the block's thread count is a multiple of 32: a partial warp would shuffle with lanes
//    that do not exist (the emulator returns poison for them, so the result is NaN there).
// 2D and 3D blocks are fine: warps follow the linear thread index, as on the GPU.
#pragma once
#include "cuda_compat.h"

#if !LOOM_DEVICE_CODE
#error "reduce.cuh holds device code: include it from a .cu file, not from host code"
#endif

#include <math.h>

namespace loom {

struct SumOp {
  template <class T>
  __device__ __forceinline__ T operator()(T a, T b) const {
    return a + b;
  }
};

// fmaxf, as kernels use it: a NaN operand loses to a number. Poisoned inputs still surface,
// because the sums that follow a max (softmax, norms) carry the NaN on.
struct MaxOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
  __device__ __forceinline__ double operator()(double a, double b) const { return fmax(a, b); }
  __device__ __forceinline__ int operator()(int a, int b) const { return a > b ? a : b; }
  __device__ __forceinline__ unsigned operator()(unsigned a, unsigned b) const { return a > b ? a : b; }
};

template <class T, class Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

template <class T>
__device__ __forceinline__ T warp_sum(T v) {
  return warp_reduce(v, SumOp{});
}

template <class T>
__device__ __forceinline__ T warp_max(T v) {
  return warp_reduce(v, MaxOp{});
}

// identity: the value that does not change the result (0 for a sum, -inf for a max); warps
// past the last one contribute it.
template <class T, class Op>
__device__ T block_reduce(T v, Op op, T identity) {
  __shared__ T partial[32];
  const unsigned tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned nwarps = (blockDim.x * blockDim.y * blockDim.z + 31) / 32;
  const unsigned lane = tid % 32, warp = tid / 32;
  v = warp_reduce(v, op);
  __syncthreads();  // a previous call's readers are done with partial[] before it is rewritten
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < nwarps ? partial[lane] : identity;
  return warp_reduce(v, op);
}

template <class T>
__device__ __forceinline__ T block_sum(T v) {
  return block_reduce(v, SumOp{}, T(0));
}

__device__ __forceinline__ float block_max(float v) { return block_reduce(v, MaxOp{}, -INFINITY); }
__device__ __forceinline__ double block_max(double v) { return block_reduce(v, MaxOp{}, -double(INFINITY)); }

}  // namespace loom
