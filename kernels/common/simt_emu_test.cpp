// simt_emu_test.cpp: positive tests of the SIMT emulator and of reduce.cuh / vec.cuh.
//
// One source, built four ways (kernels/common/CMakeLists.txt): emulated (label emu), emulated
// under TSan and under ASan+UBSan (label sanitize: the emulator itself must not produce false
// reports), and, where nvcc exists, compiled as CUDA for a real GPU (label gpu). On the GPU
// the expectations are the CUDA programming guide's, so a GPU run checks that the emulator
// models the hardware; checks of emulator-only behaviour (poison values, the host API shim)
// sit behind `#if LOOM_SIMT_EMULATION`.
//
// The last test, ExampleSoftmax, is the worked example of a kernel written for both
// compilers: vector loads with a scalar fallback, block reductions, dynamic shared memory
// and a templated kernel launched through LOOM_LAUNCH.
#include "kernels/common/cuda_compat.h"
#include "kernels/common/reduce.cuh"
#include "kernels/common/test_util.h"
#include "kernels/common/vec.cuh"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

namespace {

using loom::test::DeviceBuffer;

// ---------------------------------------------------------------------------------------
// Built-in variables and warp membership in 3D blocks.

__global__ void index_kernel(uint32_t* out) {
  const unsigned tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned bid = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned nt = blockDim.x * blockDim.y * blockDim.z;
  uint32_t* o = out + 4 * (size_t(bid) * nt + tid);
  o[0] = threadIdx.x | threadIdx.y << 8 | threadIdx.z << 16;
  o[1] = blockIdx.x | blockIdx.y << 8 | blockIdx.z << 16;
  o[2] = blockDim.x | blockDim.y << 8 | blockDim.z << 16 | gridDim.x << 24;
  // Warps are formed from the linear thread index: lane 0 of each warp broadcasts its tid.
  o[3] = __shfl_sync(0xffffffffu, tid, 0);
}

TEST(Builtins, GridBlockAndWarpIndices) {
  const dim3 grid(3, 2, 2), block(8, 4, 2);
  const unsigned nt = 64, nb = 12;
  DeviceBuffer<uint32_t> out(4 * nt * nb);
  out.poison();
  LOOM_LAUNCH(index_kernel, grid, block, 0, 0, out.get());
  ASSERT_CUDA(cudaGetLastError());
  const auto h = out.download();
  for (unsigned b = 0; b < nb; ++b)
    for (unsigned t = 0; t < nt; ++t) {
      const uint32_t* o = &h[4 * (b * nt + t)];
      const unsigned tx = t % 8, ty = t / 8 % 4, tz = t / 32;
      const unsigned bx = b % 3, by = b / 3 % 2, bz = b / 6;
      ASSERT_EQ(o[0], tx | ty << 8 | tz << 16) << "block " << b << " thread " << t;
      ASSERT_EQ(o[1], bx | by << 8 | bz << 16);
      ASSERT_EQ(o[2], 8u | 4u << 8 | 2u << 16 | 3u << 24);
      ASSERT_EQ(o[3], t / 32 * 32);
    }
}

// ---------------------------------------------------------------------------------------
// Shuffles: every kind, every width, per-lane source lanes, several operand types.

constexpr int kShuffleParams[] = {0, 1, 2, 3, 5, 8, 16, 17, 31, -1};
constexpr int kNumShuffleParams = int(sizeof(kShuffleParams) / sizeof(kShuffleParams[0]));

__global__ void shuffle_kernel(int* out, int width) {
  const int params[kNumShuffleParams] = {0, 1, 2, 3, 5, 8, 16, 17, 31, -1};
  const int tid = threadIdx.x, n = blockDim.x, lane = tid % 32;
  const int v = 1000 * (tid / 32) + lane;
  for (int p = 0; p < kNumShuffleParams; ++p) {
    const int q = params[p];
    out[(0 * kNumShuffleParams + p) * n + tid] = __shfl_sync(0xffffffffu, v, q, width);
    if (q >= 0) {
      out[(1 * kNumShuffleParams + p) * n + tid] = __shfl_up_sync(0xffffffffu, v, unsigned(q), width);
      out[(2 * kNumShuffleParams + p) * n + tid] = __shfl_down_sync(0xffffffffu, v, unsigned(q), width);
      out[(3 * kNumShuffleParams + p) * n + tid] = __shfl_xor_sync(0xffffffffu, v, q, width);
    }
  }
  // A source lane that differs per lane, as in a rotation.
  out[4 * kNumShuffleParams * n + tid] = __shfl_sync(0xffffffffu, v, (lane * 7 + 3) % 32, width);
}

// The CUDA programming guide's definitions, written independently of the emulator's PTX
// formulation.
int expected_shuffle(int kind, int lane, int q, int width) {
  const int base = lane / width * width;
  switch (kind) {
    case 0: return base + (q & (width - 1));
    case 1: return lane - base >= q ? lane - q : lane;
    case 2: return lane - base + q < width ? lane + q : lane;
    default: {
      const int src = lane ^ q;
      return src < base + width ? src : lane;  // later groups: own value; earlier: allowed
    }
  }
}

TEST(Shuffle, AllKindsAllWidths) {
  const int n = 64;
  DeviceBuffer<int> out((4 * kNumShuffleParams + 1) * n);
  for (int width = 1; width <= 32; width *= 2) {
    out.poison();
    LOOM_LAUNCH(shuffle_kernel, 1, n, 0, 0, out.get(), width);
    ASSERT_CUDA(cudaGetLastError());
    const auto h = out.download();
    for (int tid = 0; tid < n; ++tid) {
      const int lane = tid % 32, warp = tid / 32;
      for (int kind = 0; kind < 4; ++kind)
        for (int p = 0; p < kNumShuffleParams; ++p) {
          const int q = kShuffleParams[p];
          if (q < 0 && kind > 0) continue;
          const int src = expected_shuffle(kind, lane, q, width);
          EXPECT_EQ(h[(kind * kNumShuffleParams + p) * n + tid], 1000 * warp + src)
              << "kind " << kind << " width " << width << " param " << q << " lane " << lane;
        }
      const int rot = expected_shuffle(0, lane, (lane * 7 + 3) % 32, width);
      EXPECT_EQ(h[4 * kNumShuffleParams * n + tid], 1000 * warp + rot) << "rotation, width " << width;
    }
  }
}

__global__ void shuffle_types_kernel(double* d, long long* ll, float* f, __nv_bfloat16* b, __half* h) {
  const int lane = threadIdx.x % 32;
  d[threadIdx.x] = __shfl_down_sync(0xffffffffu, 0.5 + lane, 1);
  ll[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (1ll << 40) + lane, 3);
  f[threadIdx.x] = __shfl_up_sync(0xffffffffu, 0.25f * lane, 2);
  b[threadIdx.x] = __shfl_sync(0xffffffffu, __float2bfloat16(float(lane)), 31 - lane);
  h[threadIdx.x] = __shfl_xor_sync(0xffffffffu, __float2half(float(lane)), 16);
}

TEST(Shuffle, SixtyFourBitAndSixteenBitTypes) {
  DeviceBuffer<double> d(32);
  DeviceBuffer<long long> ll(32);
  DeviceBuffer<float> f(32);
  DeviceBuffer<__nv_bfloat16> b(32);
  DeviceBuffer<__half> h(32);
  LOOM_LAUNCH(shuffle_types_kernel, 1, 32, 0, 0, d.get(), ll.get(), f.get(), b.get(), h.get());
  ASSERT_CUDA(cudaGetLastError());
  const auto hd = d.download();
  const auto hll = ll.download();
  const auto hf = f.download();
  const auto hb = b.download();
  const auto hh = h.download();
  for (int l = 0; l < 32; ++l) {
    EXPECT_EQ(hd[l], 0.5 + (l < 31 ? l + 1 : l));
    EXPECT_EQ(hll[l], (1ll << 40) + (l ^ 3));
    EXPECT_EQ(hf[l], 0.25f * (l >= 2 ? l - 2 : l));
    EXPECT_EQ(loom::to_float(hb[l]), float(31 - l));
    EXPECT_EQ(loom::to_float(hh[l]), float(l ^ 16));
  }
}

// ---------------------------------------------------------------------------------------
// Votes, match and reduce, with full masks and with the two halves of a warp in separate
// branches (partial masks; disjoint groups meet independently).

__global__ void vote_kernel(unsigned* out) {
  const unsigned tid = threadIdx.x, lane = tid % 32, n = blockDim.x;
  const int pred = lane % 3 == 0;
  out[0 * n + tid] = __ballot_sync(0xffffffffu, pred);
  out[1 * n + tid] = __any_sync(0xffffffffu, lane == 7);
  out[2 * n + tid] = __all_sync(0xffffffffu, lane < 32);
  out[3 * n + tid] = __all_sync(0xffffffffu, lane != 5);
  out[4 * n + tid] = __activemask();
  if (lane < 16) {
    out[5 * n + tid] = __ballot_sync(0x0000ffffu, pred);
    out[6 * n + tid] = __all_sync(0x0000ffffu, lane < 16);
  } else {
    out[5 * n + tid] = __ballot_sync(0xffff0000u, lane % 2);
    out[6 * n + tid] = __any_sync(0xffff0000u, lane == 3);
  }
  out[7 * n + tid] = __match_any_sync(0xffffffffu, lane / 4);
  int all_equal = -1;
  out[8 * n + tid] = __match_all_sync(0xffffffffu, 42u, &all_equal);
  out[9 * n + tid] = unsigned(all_equal);
  out[10 * n + tid] = __reduce_add_sync(0xffffffffu, lane);
  out[11 * n + tid] = unsigned(__reduce_min_sync(0xffffffffu, int(lane) - 20));
  out[12 * n + tid] = __reduce_max_sync(0x0000ffffu | 0xffff0000u, lane * 3);
}

TEST(Vote, BallotAnyAllMatchReduce) {
  const unsigned n = 64;
  DeviceBuffer<unsigned> out(13 * n);
  out.poison();
  LOOM_LAUNCH(vote_kernel, 1, n, 0, 0, out.get());
  ASSERT_CUDA(cudaGetLastError());
  const auto h = out.download();
  unsigned every3 = 0, odd_hi = 0;
  for (unsigned l = 0; l < 32; ++l) {
    if (l % 3 == 0) every3 |= 1u << l;
    if (l >= 16 && l % 2) odd_hi |= 1u << l;
  }
  for (unsigned tid = 0; tid < n; ++tid) {
    const unsigned lane = tid % 32;
    EXPECT_EQ(h[0 * n + tid], every3);
    EXPECT_EQ(h[1 * n + tid], 1u);
    EXPECT_EQ(h[2 * n + tid], 1u);
    EXPECT_EQ(h[3 * n + tid], 0u);
    EXPECT_EQ(h[4 * n + tid], 0xffffffffu);
    EXPECT_EQ(h[5 * n + tid], lane < 16 ? (every3 & 0xffffu) : odd_hi) << "lane " << lane;
    EXPECT_EQ(h[6 * n + tid], lane < 16 ? 1u : 0u) << "lane " << lane;
    EXPECT_EQ(h[7 * n + tid], 0xfu << (lane / 4 * 4));
    EXPECT_EQ(h[8 * n + tid], 0xffffffffu);
    EXPECT_EQ(h[9 * n + tid], 1u);
    EXPECT_EQ(h[10 * n + tid], 31u * 32u / 2u);
    EXPECT_EQ(int(h[11 * n + tid]), -20);
    EXPECT_EQ(h[12 * n + tid], 93u);
  }
}

// ---------------------------------------------------------------------------------------
// __syncwarp orders shared memory between the lanes it names (TSan checks it does here);
// each half of the warp uses its own mask.

__global__ void syncwarp_kernel(float* out) {
  __shared__ float s[64];
  const unsigned tid = threadIdx.x, lane = tid % 32;
  const unsigned half = lane < 16 ? 0x0000ffffu : 0xffff0000u;
  for (int round = 0; round < 3; ++round) {
    s[tid] = float(tid * 2 + round);
    __syncwarp(half);
    const float neighbour = s[tid ^ 1];  // same half of the same warp
    __syncwarp(half);                   // before the next round overwrites s
    out[round * 64 + tid] = neighbour;
  }
}

TEST(Syncwarp, PartialMasksOrderSharedMemory) {
  DeviceBuffer<float> out(3 * 64);
  out.poison();
  LOOM_LAUNCH(syncwarp_kernel, 2, 64, 0, 0, out.get());
  ASSERT_CUDA(cudaGetLastError());
  const auto h = out.download();
  for (int round = 0; round < 3; ++round)
    for (unsigned tid = 0; tid < 64; ++tid) EXPECT_EQ(h[round * 64 + tid], float((tid ^ 1) * 2 + round));
}

#if LOOM_SIMT_EMULATION
// ---------------------------------------------------------------------------------------
// Emulator-only: reading a lane that exited or is not in the mask returns poison. On the GPU
// the value is undefined, so there is nothing to compare with.

__global__ void poison_kernel(float* f, int* i, float* g) {
  const unsigned lane = threadIdx.x % 32;
  if (lane >= 16) return;                               // lanes 16..31 exit
  f[lane] = __shfl_sync(0xffffffffu, 1.0f, lane + 16);  // their values are gone
  i[lane] = __shfl_sync(0xffffffffu, 7, lane + 16);
  if (lane < 8) g[lane] = __shfl_sync(0x000000ffu, 2.0f, 9);  // lane 9 is live but not named
}

TEST(EmulatorOnly, ExitedOrUnnamedLaneReadsPoison) {
  DeviceBuffer<float> f(16), g(8);
  DeviceBuffer<int> i(16);
  LOOM_LAUNCH(poison_kernel, 1, 32, 0, 0, f.get(), i.get(), g.get());
  for (float v : f.download()) EXPECT_TRUE(std::isnan(v));
  for (int v : i.download()) EXPECT_EQ(v, -1);
  for (float v : g.download()) EXPECT_TRUE(std::isnan(v));
}

// Dynamic shared memory starts as NaN in every block; static shared memory is per block.
__global__ void smem_poison_kernel(float* before, float* after) {
  LOOM_DYNAMIC_SMEM(float, dyn);
  __shared__ float stat[64];
  const unsigned tid = threadIdx.x;
  before[blockIdx.x * 64 + tid] = dyn[tid];
  __syncthreads();  // everyone has read before anyone writes
  dyn[tid] = float(blockIdx.x);
  stat[tid] = float(blockIdx.x * 100 + tid);
  __syncthreads();
  after[blockIdx.x * 64 + tid] = dyn[63 - tid] + stat[63 - tid];
}

TEST(EmulatorOnly, DynamicSharedMemoryIsPoisonedEachBlock) {
  DeviceBuffer<float> before(3 * 64), after(3 * 64);
  LOOM_LAUNCH(smem_poison_kernel, 3, 64, 64 * sizeof(float), 0, before.get(), after.get());
  const auto b = before.download();
  const auto a = after.download();
  for (float v : b) EXPECT_TRUE(std::isnan(v));
  for (unsigned blk = 0; blk < 3; ++blk)
    for (unsigned t = 0; t < 64; ++t) EXPECT_EQ(a[blk * 64 + t], float(blk) + float(blk * 100 + 63 - t));
}

// The host API shim: allocations are poisoned, copies check direction and bounds, a double
// free is an error, and errors show in cudaGetLastError once.
TEST(EmulatorOnly, HostApiShimChecksCopies) {
  float* d = nullptr;
  ASSERT_CUDA(cudaMalloc(&d, 16 * sizeof(float)));
  float h[32];
  ASSERT_CUDA(cudaMemcpy(h, d, 16 * sizeof(float), cudaMemcpyDeviceToHost));
  EXPECT_TRUE(std::isnan(h[0]) && std::isnan(h[15]));
  EXPECT_EQ(cudaMemcpy(d, h, 32 * sizeof(float), cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(h, d, 4, cudaMemcpyHostToDevice), cudaErrorInvalidValue);  // swapped
  EXPECT_EQ(cudaMemcpy(d + 8, d, 8 * sizeof(float), cudaMemcpyDeviceToDevice), cudaSuccess);
  EXPECT_EQ(cudaMemset(d + 15, 0, 2 * sizeof(float)), cudaErrorInvalidValue);
  ASSERT_CUDA(cudaFree(d));
  EXPECT_EQ(cudaFree(d), cudaErrorInvalidValue);
  cudaGetLastError();
  int sms = 0;
  ASSERT_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  EXPECT_GT(sms, 0);
}

// The SM count launchers size grids by follows LOOM_SIMT_SM_COUNT, asked at every call.
TEST(EmulatorOnly, SmCountFollowsTheEnvironment) {
  {
    loom::test::EmulatedSms one(1);
    EXPECT_EQ(loom::sm_count(), 1);
    EXPECT_EQ(loom::grid_for(100000, 256, 8), 8);
  }
  loom::test::EmulatedSms three(3);
  EXPECT_EQ(loom::sm_count(), 3);
  EXPECT_EQ(loom::grid_for(100000, 256, 8), 24);
  EXPECT_EQ(loom::grid_for(1000, 256, 8), 4);
  EXPECT_EQ(loom::grid_for(0, 256, 8), 1);
}

__global__ void iota_kernel(int* out) { out[threadIdx.x] = int(threadIdx.x); }

// LOOM_LAUNCH checks every launch: an error pending in the runtime when a kernel is launched
// (here the emulator's answer to a copy past an allocation, left unchecked) stops the program
// at the launch, naming the kernel and the error, as a refused launch on the GPU does.
TEST(EmulatorOnlyDeathTest, LaunchIsChecked) {
  if (LOOM_SANITIZED) GTEST_SKIP() << "death tests fork; not under the sanitizers";
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  DeviceBuffer<int> out(32);
  EXPECT_DEATH(
      {
        int h[64] = {};
        (void)cudaMemcpy(out.get(), h, sizeof h, cudaMemcpyHostToDevice);
        LOOM_LAUNCH(iota_kernel, 1, 32, 0, 0, out.get());
      },
      "kernel launch at .*simt_emu_test\\.cpp:[0-9]+: iota_kernel: cudaErrorInvalidValue");
  LOOM_LAUNCH(iota_kernel, 1, 32, 0, 0, out.get());  // nothing pending: no abort
  const std::vector<int> h = out.download();
  for (int i = 0; i < 32; ++i) EXPECT_EQ(h[size_t(i)], i);
}

// A grid or block outside the hardware's limits stops at the launch with the kernel's name and
// the numbers; an integer grid is checked before it narrows to dim3's 32 bits. A shared-memory
// request past the device's per-block maximum stops in allow_dynamic_smem, before the opt-in.
TEST(EmulatorOnlyDeathTest, LaunchShapeIsChecked) {
  if (LOOM_SANITIZED) GTEST_SKIP() << "death tests fork; not under the sanitizers";
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  DeviceBuffer<int> out(32);
  const int64_t too_many = int64_t(1) << 32;  // 1 as a dim3 after truncation
  EXPECT_DEATH(LOOM_LAUNCH(iota_kernel, too_many, 32, 0, 0, out.get()),
               "iota_kernel: grid of 4294967296 outside the device's limits \\(1\\.\\.2147483647\\)");
  EXPECT_DEATH(LOOM_LAUNCH(iota_kernel, 0, 32, 0, 0, out.get()), "iota_kernel: grid of 0 outside");
  EXPECT_DEATH(LOOM_LAUNCH(iota_kernel, dim3(1, 70000), 32, 0, 0, out.get()),
               "iota_kernel: grid 1x70000x1 outside the device's limits \\(x 1\\.\\.2\\^31-1, y and z 1\\.\\.65535\\)");
  EXPECT_DEATH(LOOM_LAUNCH(iota_kernel, 1, 2048, 0, 0, out.get()), "iota_kernel: block of 2048 outside");
  EXPECT_DEATH(LOOM_LAUNCH(iota_kernel, 1, dim3(32, 32, 2), 0, 0, out.get()),
               "iota_kernel: block 32x32x2 outside the device's limits \\(1\\.\\.1024 threads, z <= 64\\)");
  EXPECT_DEATH(loom::allow_dynamic_smem(iota_kernel, 300000),
               "a kernel needs 300000 bytes of shared memory a block; device 0 allows 232448");
  LOOM_LAUNCH(iota_kernel, int64_t(1), dim3(32), 0, 0, out.get());  // within the limits
  EXPECT_EQ(out.download()[31], 31);
}

// The occupancy calculator's answer under the emulator: an SM of 2048 threads, 32 block slots
// and 228 KiB of shared memory (1 KiB reserved a block); no registers.
TEST(EmulatorOnly, OccupancyFromThreadsSlotsAndSharedMemory) {
  EXPECT_EQ(loom::blocks_per_sm(iota_kernel, 256, 0), 8);
  EXPECT_EQ(loom::blocks_per_sm(iota_kernel, 1024, 0), 2);
  EXPECT_EQ(loom::blocks_per_sm(iota_kernel, 32, 0), 32);              // block slots
  EXPECT_EQ(loom::blocks_per_sm(iota_kernel, 100, 0), 16);             // whole warps: 128 threads
  EXPECT_EQ(loom::blocks_per_sm(iota_kernel, 128, 100 * 1024), 2);     // shared memory
  EXPECT_EQ(loom::blocks_per_sm(iota_kernel, 128, 232448), 1);
  int n = -1;
  EXPECT_EQ(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, iota_kernel, 2048, 0), cudaErrorInvalidValue);
  (void)cudaGetLastError();
}
#endif  // LOOM_SIMT_EMULATION

// ---------------------------------------------------------------------------------------
// More than 48 KiB of dynamic shared memory after the opt-in the GPU requires.

__global__ void big_smem_kernel(float* out, int n) {
  LOOM_DYNAMIC_SMEM(float, buf);
  for (int i = threadIdx.x; i < n; i += blockDim.x) buf[i] = float(i);
  __syncthreads();
  float s = 0.f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += buf[n - 1 - i];
  s = loom::block_sum(s);
  if (threadIdx.x == 0) out[blockIdx.x] = s;
}

TEST(SharedMemory, LargeDynamicAfterOptIn) {
  const int n = 16384;  // 64 KiB
  DeviceBuffer<float> out(2);
  out.poison();
  ASSERT_CUDA(cudaFuncSetAttribute(big_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   int(n * sizeof(float))));
  LOOM_LAUNCH(big_smem_kernel, 2, 64, n * sizeof(float), 0, out.get(), n);
  ASSERT_CUDA(cudaGetLastError());
  for (float v : out.download()) EXPECT_EQ(v, float(n) * float(n - 1) / 2.f);
}

// The occupancy calculator through launch.cuh, on any device: one block of 64 threads with
// 64 KiB of shared memory fits an SM, a few fit (sm_80 and later hold 163 KiB or more), never
// more than the 32 block slots; a grid-stride grid is then that many blocks an SM.
TEST(SharedMemory, OccupancyCountsSharedMemory) {
  const int small = loom::blocks_per_sm(big_smem_kernel, 64, 0);
  const int big = loom::blocks_per_sm(big_smem_kernel, 64, 64 * 1024);
  EXPECT_GE(small, 1);
  EXPECT_LE(small, 32);
  EXPECT_GE(big, 1);
  EXPECT_LE(big, 3);
  EXPECT_EQ(loom::grid_for(int64_t(1) << 30, 64, big), big * loom::sm_count());
}

// ---------------------------------------------------------------------------------------
// Atomics from many threads of several blocks: exact integer results; float sums of small
// integers are exact too.

struct AtomicCounters {
  int i_add, i_max, i_min, i_sub, i_exch;
  unsigned u_add, u_max, u_inc, u_or, u_min;
  unsigned long long ull_add;
  float f_add, f_exch;
  double d_add;
  __nv_bfloat16 b_add;
  int cas_product;  // updated with a CAS loop
};

__global__ void atomics_kernel(AtomicCounters* c) {
  const unsigned gid = blockIdx.x * blockDim.x + threadIdx.x;
  atomicAdd(&c->i_add, 1);
  atomicMax(&c->i_max, int(gid));
  atomicMin(&c->i_min, -int(gid));
  atomicSub(&c->i_sub, 2);
  atomicExch(&c->i_exch, int(gid));
  atomicAdd(&c->u_add, 2u);
  atomicMax(&c->u_max, gid * 3);
  atomicInc(&c->u_inc, 99u);  // wraps to 0 after 99
  atomicOr(&c->u_or, 1u << (gid % 32));
  atomicMin(&c->u_min, gid + 5);
  atomicAdd(&c->ull_add, 1ull << 33);
  atomicAdd(&c->f_add, 1.0f);
  atomicExch(&c->f_exch, 0.5f * float(gid));
  atomicAdd(&c->d_add, 0.5);
  if (gid < 64) atomicAdd(&c->b_add, __float2bfloat16(1.0f));
  if (gid % 97 == 0) {  // a read-modify-write the hardware lacks, through atomicCAS
    // The first read is atomic too: the guide's plain `old = *p` races with the other
    // threads' CAS by the C++ memory model, and TSan says so.
    int old = atomicOr(&c->cas_product, 0), assumed;
    do {
      assumed = old;
      old = atomicCAS(&c->cas_product, assumed, assumed * 3 % 1000003);
    } while (old != assumed);
  }
}

TEST(Atomics, IntegerFloatAndCasLoops) {
  const unsigned blocks = 8, threads = 256, n = blocks * threads;
  AtomicCounters init{};
  init.i_min = 0;
  init.u_min = 0xffffffffu;
  init.cas_product = 1;
  DeviceBuffer<AtomicCounters> c(std::vector<AtomicCounters>{init});
  LOOM_LAUNCH(atomics_kernel, blocks, threads, 0, 0, c.get());
  ASSERT_CUDA(cudaGetLastError());
  const AtomicCounters r = c.download()[0];
  EXPECT_EQ(r.i_add, int(n));
  EXPECT_EQ(r.i_max, int(n - 1));
  EXPECT_EQ(r.i_min, -int(n - 1));
  EXPECT_EQ(r.i_sub, -2 * int(n));
  EXPECT_TRUE(r.i_exch >= 0 && r.i_exch < int(n));
  EXPECT_EQ(r.u_add, 2 * n);
  EXPECT_EQ(r.u_max, 3 * (n - 1));
  EXPECT_EQ(r.u_inc, n % 100);
  EXPECT_EQ(r.u_or, 0xffffffffu);
  EXPECT_EQ(r.u_min, 5u);
  EXPECT_EQ(r.ull_add, (1ull << 33) * n);
  EXPECT_EQ(r.f_add, float(n));
  EXPECT_EQ(std::fmod(r.f_exch, 0.5f), 0.f);
  EXPECT_EQ(r.d_add, 0.5 * n);
  EXPECT_EQ(loom::to_float(r.b_add), 64.f);
  long long expect = 1;
  for (unsigned g = 0; g < n; g += 97) expect = expect * 3 % 1000003;
  EXPECT_EQ(r.cas_product, int(expect));
}

// ---------------------------------------------------------------------------------------
// Warp and block reductions against a double-precision reference, over several blocks,
// block shapes (1D, 2D) and two calls in a row (the reuse the leading barrier protects).

__global__ void reduce_kernel(const float* x, int cols, float* sums, float* maxes, float* warp_sums,
                              double* dsums) {
  const unsigned nt = blockDim.x * blockDim.y;
  const unsigned tid = threadIdx.x + blockDim.x * threadIdx.y;
  const float* row = x + size_t(blockIdx.x) * cols;
  float s = 0.f, m = -INFINITY;
  double d = 0.0;
  for (int c = tid; c < cols; c += nt) {
    s += row[c];
    m = fmaxf(m, row[c]);
    d += double(row[c]) * row[c];
  }
  const float ws = loom::warp_sum(s);
  s = loom::block_sum(s);
  m = loom::block_max(m);
  d = loom::block_sum(d);
  if (tid % 32 == 0) warp_sums[blockIdx.x * (nt / 32) + tid / 32] = ws;
  if (tid == 0) {
    sums[blockIdx.x] = s;
    maxes[blockIdx.x] = m;
    dsums[blockIdx.x] = d;
  }
}

void check_reductions(unsigned blocks, dim3 block, int cols) {
  const unsigned nt = block.x * block.y;
  std::mt19937 rng(blocks * 131 + nt);
  std::normal_distribution<float> nd(0.f, 2.f);
  std::vector<float> x(size_t(blocks) * cols);
  for (float& v : x) v = nd(rng);
  DeviceBuffer<float> dx(x), sums(blocks), maxes(blocks), warp_sums(blocks * nt / 32);
  DeviceBuffer<double> dsums(blocks);
  sums.poison();
  maxes.poison();
  warp_sums.poison();
  dsums.poison();
  LOOM_LAUNCH(reduce_kernel, blocks, block, 0, 0, dx.get(), cols, sums.get(), maxes.get(), warp_sums.get(),
              dsums.get());
  ASSERT_CUDA(cudaGetLastError());
  const auto hs = sums.download();
  const auto hm = maxes.download();
  const auto hw = warp_sums.download();
  const auto hd = dsums.download();
  for (unsigned b = 0; b < blocks; ++b) {
    const float* row = &x[size_t(b) * cols];
    double s = 0, sq = 0, m = -INFINITY;
    for (int c = 0; c < cols; ++c) {
      s += row[c];
      sq += double(row[c]) * row[c];
      m = std::max(m, double(row[c]));
    }
    EXPECT_NEAR(hs[b], s, 1e-4 * cols) << "block " << b;
    EXPECT_EQ(hm[b], float(m)) << "block " << b;
    EXPECT_NEAR(hd[b], sq, 1e-9 * sq) << "block " << b;
    for (unsigned w = 0; w < nt / 32; ++w) {
      double ws = 0;
      for (int c = int(w * 32); c < cols; c += int(nt))
        for (int l = 0; l < 32 && c + l < cols; ++l) ws += row[c + l];
      EXPECT_NEAR(hw[b * (nt / 32) + w], ws, 1e-4 * cols) << "block " << b << " warp " << w;
    }
  }
}

TEST(Reduce, BlockSumAndMaxOverSeveralBlocks) {
  check_reductions(5, dim3(64), 1000);
  check_reductions(3, dim3(256), 777);
  check_reductions(2, dim3(32, 4), 513);  // 2D block: warps follow the linear index
}

// ---------------------------------------------------------------------------------------
// Threads that return before a barrier drop out of it (sm_70+), and the counting barriers.

__global__ void barrier_kernel(int n, int* out) {
  __shared__ int s[128];
  const int tid = int(threadIdx.x);
  const int count = __syncthreads_count(tid % 4 == 0);
  const int all = __syncthreads_and(tid >= 0);
  const int any = __syncthreads_or(tid == 77);
  if (tid >= n) return;
  s[tid] = tid * 3;
  __syncthreads();
  out[tid] = s[(tid + 1) % n] + 1000 * (count + 10 * all + 100 * any);
}

TEST(Barrier, EarlyExitAndCountingBarriers) {
  const int n = 100;
  DeviceBuffer<int> out(n);
  out.poison();
  LOOM_LAUNCH(barrier_kernel, 2, 128, 0, 0, n, out.get());
  ASSERT_CUDA(cudaGetLastError());
  const auto h = out.download();
  for (int t = 0; t < n; ++t) EXPECT_EQ(h[t], (t + 1) % n * 3 + 1000 * (32 + 10 + 100));
}

// ---------------------------------------------------------------------------------------
// vec.cuh: conversions round to nearest even in host code and kernels alike; packs move 16
// bytes.

TEST(Vec, Bf16ConversionsRoundToNearestEven) {
  // 1 + 2^-8 lies halfway between two bf16 values: it rounds to the even one (1.0).
  EXPECT_EQ(loom::to_float(loom::from_float<__nv_bfloat16>(1.0f + 1.0f / 256)), 1.0f);
  EXPECT_EQ(loom::to_float(loom::from_float<__nv_bfloat16>(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);
  EXPECT_EQ(loom::to_float(loom::from_float<__half>(1.0f + 1.0f / 2048)), 1.0f);
  EXPECT_TRUE(std::isnan(loom::to_float(loom::from_float<__nv_bfloat16>(NAN))));
}

__global__ void pack_kernel(const __nv_bfloat16* x, float* y, __nv_bfloat16* z) {
  const int i = threadIdx.x * loom::Pack128<__nv_bfloat16>::kSize;
  const loom::Pack128<__nv_bfloat16> p = loom::load_128(x + i);
  loom::Pack128<__nv_bfloat16> q;
  for (int k = 0; k < p.kSize; ++k) {
    y[i + k] = loom::to_float(p[k]);
    q[k] = loom::from_float<__nv_bfloat16>(2.f * loom::to_float(p[k]));
  }
  loom::store_128_cs(z + i, q);
}

TEST(Vec, PackLoadStoreMatchesHostConversion) {
  std::vector<__nv_bfloat16> x(256);
  for (int i = 0; i < 256; ++i) x[i] = loom::from_float<__nv_bfloat16>(0.37f * float(i) - 20.f);
  DeviceBuffer<__nv_bfloat16> dx(x), dz(256);
  DeviceBuffer<float> dy(256);
  LOOM_LAUNCH(pack_kernel, 1, 32, 0, 0, dx.get(), dy.get(), dz.get());
  ASSERT_CUDA(cudaGetLastError());
  const auto y = dy.download();
  const auto z = dz.download();
  for (int i = 0; i < 256; ++i) {
    EXPECT_EQ(y[i], loom::to_float(x[i]));
    EXPECT_EQ(loom::to_float(z[i]), 2.f * loom::to_float(x[i]));
  }
}

// ---------------------------------------------------------------------------------------
// The worked example: softmax over the rows of a bf16 matrix into fp32, one block per row.
// The row is staged in dynamic shared memory as float; the vector path needs 16-byte
// aligned rows, so the launcher picks it per call and falls back to scalar loads otherwise.

template <int kBlock, bool kVector>
__global__ void __launch_bounds__(kBlock) softmax_rows_kernel(const __nv_bfloat16* __restrict__ x,
                                                              float* __restrict__ y, int cols) {
  LOOM_DYNAMIC_SMEM(float, row);
  using Pack = loom::Pack128<__nv_bfloat16>;
  const __nv_bfloat16* xr = x + size_t(blockIdx.x) * cols;
  float m = -INFINITY;
  if constexpr (kVector) {
    for (int c = threadIdx.x * Pack::kSize; c < cols; c += kBlock * Pack::kSize) {
      const Pack p = loom::load_128_cs(xr + c);
      for (int k = 0; k < Pack::kSize; ++k) {
        row[c + k] = loom::to_float(p[k]);
        m = fmaxf(m, row[c + k]);
      }
    }
  } else {
    for (int c = threadIdx.x; c < cols; c += kBlock) {
      row[c] = loom::to_float(xr[c]);
      m = fmaxf(m, row[c]);
    }
  }
  m = loom::block_max(m);
  float s = 0.f;
  for (int c = threadIdx.x; c < cols; c += kBlock) {
    row[c] = __expf(row[c] - m);
    s += row[c];
  }
  const float inv = 1.f / loom::block_sum(s);
  for (int c = threadIdx.x; c < cols; c += kBlock) y[size_t(blockIdx.x) * cols + c] = row[c] * inv;
}

// The launcher: preconditions, grid choice, launch on the caller's stream (LOOM_LAUNCH checks
// the launch itself).
void softmax_rows(const __nv_bfloat16* x, float* y, int rows, int cols, cudaStream_t stream) {
  constexpr int kBlock = 128;
  const size_t smem = size_t(cols) * sizeof(float);
  LOOM_CHECK(smem <= 48 * 1024, "softmax_rows: the example keeps a row in shared memory; ", cols, " is too many");
  const bool vector = loom::is_aligned_16(x) && cols % loom::Pack128<__nv_bfloat16>::kSize == 0;
  loom::with_bool(vector, [&](auto v) {
    LOOM_LAUNCH((softmax_rows_kernel<kBlock, decltype(v)::value>), rows, kBlock, smem, stream, x, y, cols);
  });
}

void check_softmax(int rows, int cols) {
  std::mt19937 rng(rows * 7 + cols);
  std::normal_distribution<float> nd(0.f, 3.f);
  std::vector<__nv_bfloat16> x(size_t(rows) * cols);
  for (auto& v : x) v = loom::from_float<__nv_bfloat16>(nd(rng));
  DeviceBuffer<__nv_bfloat16> dx(x);
  DeviceBuffer<float> dy(x.size());
  dy.poison();
  cudaStream_t stream;
  ASSERT_CUDA(cudaStreamCreate(&stream));
  softmax_rows(dx.get(), dy.get(), rows, cols, stream);
  ASSERT_CUDA(cudaStreamSynchronize(stream));
  ASSERT_CUDA(cudaStreamDestroy(stream));
  std::vector<double> ref(x.size());
  for (int r = 0; r < rows; ++r) {
    double m = -INFINITY, s = 0;
    for (int c = 0; c < cols; ++c) m = std::max(m, double(loom::to_float(x[size_t(r) * cols + c])));
    for (int c = 0; c < cols; ++c) s += std::exp(double(loom::to_float(x[size_t(r) * cols + c])) - m);
    for (int c = 0; c < cols; ++c)
      ref[size_t(r) * cols + c] = std::exp(double(loom::to_float(x[size_t(r) * cols + c])) - m) / s;
  }
  // f32 probabilities: __expf and the f32 sums, against double.
  EXPECT_TRUE(loom::test::all_close("y", dy.download(), ref, loom::test::Tolerance{1e-10, 1e-4}));
}

TEST(ExampleSoftmax, VectorAndScalarPaths) {
  check_softmax(LOOM_SANITIZED ? 4 : 12, 512);  // aligned rows: vector path
  check_softmax(LOOM_SANITIZED ? 3 : 7, 300);   // 600-byte rows: scalar path
}

// Emulation speed: DESIGN.md budgets about 10 ms a block. Printed, not asserted: timings
// vary with the machine's load.
TEST(ExampleSoftmax, Timing) {
  if (!LOOM_SIMT_EMULATION) GTEST_SKIP() << "emulator timing only";
  const int rows = LOOM_SANITIZED ? 4 : 32, cols = 1024;
  std::vector<__nv_bfloat16> x(size_t(rows) * cols, loom::from_float<__nv_bfloat16>(0.5f));
  DeviceBuffer<__nv_bfloat16> dx(x);
  DeviceBuffer<float> dy(x.size());
  const auto t0 = std::chrono::steady_clock::now();
  softmax_rows(dx.get(), dy.get(), rows, cols, 0);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ timing   ] softmax %d rows x %d cols, 128 threads a block: %.1f ms (%.2f ms a block)\n", rows, cols,
              ms, ms / rows);
  EXPECT_EQ(dy.download()[0], 1.f / cols);
}

}  // namespace
