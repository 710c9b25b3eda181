// matmul.cu: the bias gradient of a linear layer, db[m] += sum_n dy[n, m] (dy bf16, db f32);
// the CUDA side of the bias_grad declaration in matmul.h (loom::ref::linear_bwd's db is the
// ground truth). The products themselves go through cuBLASLt in the CUDA backend.
//
// A column sum is memory-bound (dy is read once: 2 bytes an element). It must also be
// deterministic, which rules out float atomics, so it runs in two stages:
//  1. a 2D grid of (256-column tiles) x (row chunks); each block sums its chunk of rows for
//     its tile, its 8 warps splitting the rows and then meeting in shared memory in warp
//     order, and writes one partial row into a bounded scratch buffer;
//  2. a column sum of the partial rows in a fixed order (reduce.cuh's column_sum), added into
//     db.
// The chunk count depends on N, M and the device's SM count only, so a device always adds in
// the same order: bit-identical results run to run.
#include "kernels/common/cuda_compat.h"
#include "kernels/common/launch.cuh"
#include "kernels/common/reduce.cuh"
#include "kernels/common/vec.cuh"

#include <algorithm>
#include <climits>

#include "core/check.h"
#include "kernels/matmul/matmul.h"

namespace loom::cuda {
namespace {

using Bf = __nv_bfloat16;
using Pack = Pack128<Bf>;
static_assert(sizeof(Bf) == sizeof(bf16), "loom::bf16 must be layout-compatible with __nv_bfloat16");

constexpr int kPack = Pack::kSize;     // bf16 per 16-byte access
constexpr int kTileCols = 32 * kPack;  // 256 columns: a warp with one pack per lane
constexpr int kWarps = 8;              // stage 1: warps per block, splitting the chunk's rows
constexpr int kMinChunkRows = 32;      // a chunk has at least this many rows (per block work)
constexpr int kMaxChunks = 1024;       // bound on partial rows, hence on the scratch size
constexpr int kBlocksPerSm = 4;        // stage 1 target: 4 blocks of 256 threads an SM
static_assert(valid_block(kWarps * 32) && kWarps * kTileCols * sizeof(float) <= kStaticSmemLimit);

// Column held in element k of `lane`'s pack within a tile: 8 adjacent columns on the vector
// path; lanes interleaved on the scalar path so that each scalar load is coalesced.
template <bool kVector>
__device__ __forceinline__ int tile_column(int lane, int k) {
  return kVector ? lane * kPack + k : k * 32 + lane;
}

// Stage 1. Block (tile, chunk) reduces its chunk of rows (split_point) of columns
// [tile*256, tile*256 + 256) into partial[chunk][...]. Each warp keeps 8 f32 sums a lane,
// takes rows warp, warp + 8, ... in order, and the unrolled loop keeps 4 rows' loads in
// flight per warp.
template <bool kVector>
static __global__ void __launch_bounds__(kWarps * 32)
    bias_grad_partial_kernel(const Bf* __restrict__ dy, float* __restrict__ partial, int N, int M) {
  __shared__ float red[kWarps][kTileCols];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int col0 = blockIdx.x * kTileCols;
  const int r0 = split_point(N, gridDim.y, blockIdx.y);
  const int r1 = split_point(N, gridDim.y, blockIdx.y + 1);
  float acc[kPack];
#pragma unroll
  for (int k = 0; k < kPack; ++k) acc[k] = 0.f;

  if constexpr (kVector) {
    // M % 8 == 0 here, so a lane's pack is either whole or past the end.
    const int c = col0 + lane * kPack;
    if (c < M) {
#pragma unroll 4
      for (int row = r0 + warp; row < r1; row += kWarps) {
        const Pack p = load_128_cs(dy + size_t(row) * M + c);
#pragma unroll
        for (int k = 0; k < kPack; ++k) acc[k] += to_float(p[k]);
      }
    }
  } else {
#pragma unroll 2
    for (int row = r0 + warp; row < r1; row += kWarps) {
      const Bf* src = dy + size_t(row) * M + col0;
#pragma unroll
      for (int k = 0; k < kPack; ++k)
        if (col0 + tile_column<false>(lane, k) < M) acc[k] += to_float(src[tile_column<false>(lane, k)]);
    }
  }

#pragma unroll
  for (int k = 0; k < kPack; ++k) red[warp][tile_column<kVector>(lane, k)] = acc[k];
  __syncthreads();
  // Thread t owns tile column t: warps are added in warp order.
  const int t = threadIdx.x;
  if (col0 + t < M) {
    float s = red[0][t];
#pragma unroll
    for (int w = 1; w < kWarps; ++w) s += red[w][t];
    partial[size_t(blockIdx.y) * M + col0 + t] = s;
  }
}

int64_t max_chunks(int64_t N) {
  return std::clamp<int64_t>((N + kMinChunkRows - 1) / kMinChunkRows, 1, kMaxChunks);
}

// Row chunks: enough stage-1 blocks to fill the device, at most what the scratch holds.
int chunks_for(int64_t N, int64_t M, int sms) {
  const int64_t tiles = (M + kTileCols - 1) / kTileCols;
  const int64_t fill = std::max<int64_t>(1, (int64_t(kBlocksPerSm) * sms + tiles - 1) / tiles);
  return int(std::min(fill, max_chunks(N)));
}

}  // namespace

size_t bias_grad_scratch_floats(int64_t N, int64_t M) {
  return size_t(max_chunks(N)) * size_t(std::max<int64_t>(M, 0));
}

void bias_grad(const bf16* dy, float* db, float* scratch, int64_t N, int64_t M, Stream s) {
  LOOM_CHECK(N >= 0 && M >= 0 && N <= INT_MAX && M <= INT_MAX, "bias_grad: bad shape N=", N, " M=", M);
  if (N == 0 || M == 0) return;  // nothing to add
  LOOM_CHECK(dy && db && scratch, "bias_grad: null pointer");
  const int chunks = chunks_for(N, M, sm_count());
  LOOM_CHECK(size_t(chunks) * M <= bias_grad_scratch_floats(N, M), "bias_grad: partials exceed scratch");
  const dim3 grid(unsigned((M + kTileCols - 1) / kTileCols), unsigned(chunks));
  LOOM_CHECK(grid.x <= 0x7fffffffu && grid.y <= 65535u, "bias_grad: grid too large");
  const Bf* dyb = reinterpret_cast<const Bf*>(dy);
  if (M % kPack == 0 && is_aligned_16(dy))
    LOOM_LAUNCH((bias_grad_partial_kernel<true>), grid, kWarps * 32, 0, s, dyb, scratch, int(N), int(M));
  else
    LOOM_LAUNCH((bias_grad_partial_kernel<false>), grid, kWarps * 32, 0, s, dyb, scratch, int(N), int(M));
  column_sum("bias_grad (column sum)", scratch, chunks, int(M), AddToColumn{db}, s);
}

}  // namespace loom::cuda
