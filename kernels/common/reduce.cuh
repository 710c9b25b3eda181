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
// column_sum(name, m, rows, cols, add, stream): add(c, sum over r of m[r][c]) for every
// column c of a row-major f32 matrix, in a fixed order (second stages of deterministic
// gradient sums: partial rows in, one row out), with a functor AddToColumn or the caller's.
#pragma once
#include "cuda_compat.h"
#include "launch.cuh"

#if !LOOM_DEVICE_CODE
#error "reduce.cuh holds device code: include it from a .cu file, not from host code"
#endif

#include <math.h>

#include <algorithm>

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

// ---- column sums ---------------------------------------------------------------------------

// A block covers 32 columns (each thread row's loads are coalesced) and its blockDim.y thread
// rows take rows y, y + blockDim.y, ... before meeting in shared memory in row order. The
// order depends on the shape alone, so a device gives the same bits on every run without
// float atomics; 32 columns a block still makes cols / 32 blocks (48 for 2 x 768), where a
// thread per column would leave most SMs idle.
constexpr int kColSumX = 32, kColSumY = 8;
static_assert(valid_block(kColSumX * kColSumY) && kColSumY * (kColSumX + 1) * sizeof(float) <= kStaticSmemLimit);

template <class Add>
static __global__ void __launch_bounds__(kColSumX * kColSumY)
    column_sum_kernel(const float* __restrict__ m, int rows, int cols, Add add) {
  __shared__ float part[kColSumY][kColSumX + 1];
  const int col = blockIdx.x * kColSumX + threadIdx.x;
  float s = 0.f;
  if (col < cols) {
#pragma unroll 4
    for (int r = threadIdx.y; r < rows; r += blockDim.y) s += m[size_t(r) * cols + col];
  }
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    float t = part[0][threadIdx.x];
    for (unsigned y = 1; y < blockDim.y; ++y) t += part[y][threadIdx.x];
    add(col, t);
  }
}

// The usual epilogue: out[col] += sum (gradients accumulate).
struct AddToColumn {
  float* out;
  __device__ __forceinline__ void operator()(int col, float sum) const { out[col] += sum; }
};

// A thread row per 8 rows, up to kColSumY: few rows cost few threads.
template <class Add>
static void column_sum(const char* name, const float* m, int rows, int cols, Add add, cudaStream_t stream) {
  const dim3 block(kColSumX, unsigned(std::clamp(rows / 8, 1, kColSumY)));
  LOOM_LAUNCH_AS(name, (column_sum_kernel<Add>), ceil_div(cols, kColSumX), block, 0, stream, m, rows, cols,
                 add);
}

}  // namespace loom
