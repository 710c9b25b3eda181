// hopper_emu_test.cpp: positive tests of the sm_90 instructions of kernels/common/hopper.cuh:
// each model against a hand-worked example from the PTX ISA's definitions (phase flips of an
// mbarrier, swizzled addresses of given (row, chunk) pairs, a TMA box with out-of-bounds
// fill, wgmma fragments against a CPU matmul through the documented layouts).
//
// Built like simt_emu_test.cpp (kernels/common/CMakeLists.txt): emulated (label emu), under
// TSan and ASan+UBSan (label sanitize), and compiled by nvcc for a real sm_90a GPU (label
// gpu, skipped without one), so a GPU run checks the models against the hardware. Checks of
// emulator-only behaviour (NaN accumulators before the wait, the tensor-map argument checks
// and the swizzle function itself) sit behind `#if LOOM_SIMT_EMULATION`.
#include "kernels/common/hopper.cuh"
#include "kernels/common/test_util.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace {

using loom::test::DeviceBuffer;
namespace hp = loom::hopper;

// On a real GPU the kernels need sm_90 (their sm_90a code; they trap on other architectures).
bool is_sm90() {
#if LOOM_SIMT_EMULATION
  return true;
#else
  int device = 0, major = 0;
  return cudaGetDevice(&device) == cudaSuccess &&
         cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess && major == 9;
#endif
}
#define LOOM_REQUIRE_SM90() \
  if (!is_sm90()) GTEST_SKIP() << "needs an sm_90 GPU"

// Thread 0 initialises bar for `count` arrivals per phase; the others wait for that.
__device__ void init_barrier(uint64_t* bar, unsigned count) {
  if (threadIdx.x == 0) {
    hp::mbarrier_init(bar, count);
    hp::fence_barrier_init();
  }
  __syncthreads();
}

// ---------------------------------------------------------------------------------------
// mbarrier: a phase ends after `count` arrivals and once its tx-count is back to zero; a wait
// on parity p returns once the phase of that parity has completed (PTX ISA "mbarrier",
// "Phase Completion of the mbarrier object").

__global__ void mbarrier_phase_kernel(const float* src, float* dst, int* seen) {
  LOOM_DYNAMIC_SMEM(float, buf);
  __shared__ __align__(8) uint64_t bar;
  const unsigned t = threadIdx.x;
  init_barrier(&bar, 2);
  if (t == 0) hp::mbarrier_arrive_expect_tx(&bar, 64 * sizeof(float));
  __syncthreads();
  if (t == 0) seen[0] = hp::mbarrier_test_wait_parity(&bar, 0);  // an arrival and 256 bytes missing
  __syncthreads();
  if (t == 1) hp::mbarrier_arrive(&bar);
  __syncthreads();
  if (t == 0) seen[1] = hp::mbarrier_test_wait_parity(&bar, 0);  // the bytes are still missing
  __syncthreads();
  if (t == 0) hp::bulk_copy_g2s(buf, src, 64 * sizeof(float), &bar);
  hp::mbarrier_wait_parity(&bar, 0);  // every thread: phase 0 ends with the copy's bytes
  dst[t] = buf[63 - t];
  if (t == 0) {
    seen[2] = hp::mbarrier_test_wait_parity(&bar, 0);  // phase 0 is complete
    seen[3] = hp::mbarrier_test_wait_parity(&bar, 1);  // phase 1 runs, nothing arrived
  }
  __syncthreads();
  if (t < 2) hp::mbarrier_arrive(&bar);  // two arrivals, no bytes: phase 1 ends
  __syncthreads();
  if (t == 0) {
    seen[4] = hp::mbarrier_test_wait_parity(&bar, 1);
    seen[5] = hp::mbarrier_test_wait_parity(&bar, 0);  // phase 2 (parity 0) runs
    hp::mbarrier_inval(&bar);
  }
}

TEST(Mbarrier, PhaseEndsAfterArrivalsAndBytes) {
  LOOM_REQUIRE_SM90();
  std::vector<float> h(64);
  for (int i = 0; i < 64; ++i) h[i] = 0.25f * float(i) - 3.0f;
  DeviceBuffer<float> src(h), dst(64);
  DeviceBuffer<int> seen(6);
  dst.poison();
  seen.poison();
  LOOM_LAUNCH(mbarrier_phase_kernel, 1, 64, 64 * sizeof(float), 0, src.get(), dst.get(), seen.get());
  ASSERT_CUDA(cudaGetLastError());
  const auto s = seen.download();
  EXPECT_EQ(s, (std::vector<int>{0, 0, 1, 0, 1, 0}));
  const auto d = dst.download();
  for (int i = 0; i < 64; ++i) EXPECT_EQ(d[i], h[63 - i]) << i;
}

// ---------------------------------------------------------------------------------------
// TMA: a box through a tensor map, out-of-bounds elements zero, swizzled in shared memory.

struct TileArgs {
  int c[3];
  unsigned box_bytes;
  unsigned n;  // floats of shared memory copied out, raw
};

// The dynamic shared memory is only 16-byte aligned; kernels align their boxes themselves, to
// 1024 bytes here so that a 128B-swizzled box starts its pattern (launch with 1 KiB of slack).
constexpr unsigned kSlack = 1024;

template <int R>
__global__ void tma_tile_kernel(const __grid_constant__ CUtensorMap map, TileArgs a, float* out) {
  LOOM_DYNAMIC_SMEM(float, raw);
  float* buf = hp::align_smem(raw, 1024);
  __shared__ __align__(8) uint64_t bar;
  const unsigned t = threadIdx.x;
  init_barrier(&bar, 1);
  if (t == 0) {
    hp::mbarrier_arrive_expect_tx(&bar, a.box_bytes);
    int32_t c[R];
    for (int i = 0; i < R; ++i) c[i] = a.c[i];
    hp::tma_load<R>(buf, &map, &bar, c);
  }
  hp::mbarrier_wait_parity(&bar, 0);
  for (unsigned i = t; i < a.n; i += blockDim.x) out[i] = buf[i];
}

CUtensorMap make_map(CUtensorMapDataType type, unsigned rank, void* base, const cuuint64_t* dims,
                     const cuuint64_t* strides, const cuuint32_t* box, CUtensorMapSwizzle swizzle) {
  alignas(128) CUtensorMap map;
  const cuuint32_t ones[5] = {1, 1, 1, 1, 1};
  const CUresult r = hp::encode_tensor_map_tiled(&map, type, rank, base, dims, strides, box, ones,
                                                 CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_NONE,
                                                 CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  EXPECT_EQ(r, CUDA_SUCCESS);
  return map;
}

// A 6 x 10 float tensor; the 4 x 8 box at (col 4, row 4) covers columns 4..11 and rows 4..7:
// columns 10, 11 and rows 6, 7 are outside and read as zero. Rows are padded to 48 bytes.
TEST(Tma, TwoDimensionalBoxWithOutOfBoundsFill) {
  LOOM_REQUIRE_SM90();
  std::vector<float> g(6 * 12);
  for (int i = 0; i < 72; ++i) g[i] = 1.0f + float(i);
  DeviceBuffer<float> src(g), out(32);
  out.poison();
  const cuuint64_t dims[2] = {10, 6}, strides[1] = {12 * sizeof(float)};
  const cuuint32_t box[2] = {8, 4};
  const CUtensorMap map = make_map(CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 2, src.get(), dims, strides, box,
                                   CU_TENSOR_MAP_SWIZZLE_NONE);
  LOOM_LAUNCH((tma_tile_kernel<2>), 1, 64, kSlack + 32 * sizeof(float), 0, map, TileArgs{{4, 4, 0}, 128, 32}, out.get());
  const auto o = out.download();
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 8; ++c) {
      const int gr = 4 + r, gc = 4 + c;
      const float want = gr < 6 && gc < 10 ? g[gr * 12 + gc] : 0.0f;
      EXPECT_EQ(o[r * 8 + c], want) << r << "," << c;
    }
}

// Rank 3 with negative coordinates: planes and rows before the tensor are zero too.
TEST(Tma, ThreeDimensionalBoxWithNegativeCoordinates) {
  LOOM_REQUIRE_SM90();
  std::vector<float> g(3 * 4 * 4);
  for (int i = 0; i < 48; ++i) g[i] = 0.5f * float(i) + 1.0f;
  DeviceBuffer<float> src(g), out(2 * 2 * 4);
  out.poison();
  const cuuint64_t dims[3] = {4, 4, 3}, strides[2] = {16, 64};
  const cuuint32_t box[3] = {4, 2, 2};
  const CUtensorMap map = make_map(CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 3, src.get(), dims, strides, box,
                                   CU_TENSOR_MAP_SWIZZLE_NONE);
  LOOM_LAUNCH((tma_tile_kernel<3>), 1, 32, kSlack + 16 * sizeof(float), 0, map, TileArgs{{0, -1, 2}, 64, 16}, out.get());
  const auto o = out.download();
  for (int z = 0; z < 2; ++z)
    for (int y = 0; y < 2; ++y)
      for (int x = 0; x < 4; ++x) {
        const int gz = 2 + z, gy = -1 + y;
        const float want = gz < 3 && gy >= 0 ? g[gz * 16 + gy * 4 + x] : 0.0f;
        EXPECT_EQ(o[(z * 2 + y) * 4 + x], want) << z << "," << y << "," << x;
      }
}

// The swizzle modes in shared memory: with W = 32/64/128 bytes a row of the box, the 16-byte
// chunk c of byte offset o lands in chunk c ^ ((o >> 7) & (W/16 - 1)) of its row (PTX ISA
// "Tensor-map: swizzling modes": address bits 4..6 XOR bits 7..9). Checked raw, element by
// element, for an 8-row box of each mode.
TEST(Tma, SwizzleModesPermuteSixteenByteChunks) {
  LOOM_REQUIRE_SM90();
  for (CUtensorMapSwizzle mode : {CU_TENSOR_MAP_SWIZZLE_32B, CU_TENSOR_MAP_SWIZZLE_64B, CU_TENSOR_MAP_SWIZZLE_128B}) {
    const unsigned W = 16u << mode, cols = W / 4, rows = 16;
    std::vector<float> g(rows * cols);
    for (unsigned i = 0; i < g.size(); ++i) g[i] = float(i) + 0.5f;
    DeviceBuffer<float> src(g), out(g.size());
    out.poison();
    const cuuint64_t dims[2] = {cols, rows}, strides[1] = {W};
    const cuuint32_t box[2] = {cols, rows};
    const CUtensorMap map = make_map(CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 2, src.get(), dims, strides, box, mode);
    LOOM_LAUNCH((tma_tile_kernel<2>), 1, 64, kSlack + g.size() * sizeof(float), 0, map,
                TileArgs{{0, 0, 0}, unsigned(g.size() * 4), unsigned(g.size())}, out.get());
    const auto o = out.download();
    const unsigned mask = W / 16 - 1;
    for (unsigned r = 0; r < rows; ++r)
      for (unsigned c = 0; c < cols; ++c) {
        const unsigned off = r * W + c * 4;
        const unsigned phys = (off & ~0x70u) | ((((off >> 4) & 7) ^ ((off >> 7) & mask)) << 4);
        EXPECT_EQ(o[phys / 4], g[r * cols + c]) << "swizzle " << W << "B row " << r << " col " << c;
      }
  }
}

// TMA store: a box written by the threads goes to global memory; out-of-bounds elements are
// dropped, so the guard around the tensor keeps its values.
__global__ void tma_store_kernel(const __grid_constant__ CUtensorMap map, int c0, int c1) {
  LOOM_DYNAMIC_SMEM(float, raw);
  float* buf = hp::align_smem(raw, 128);
  const unsigned t = threadIdx.x;
  buf[t] = 100.0f + float(t);
  hp::fence_proxy_async_shared();
  __syncthreads();
  if (t == 0) {
    hp::tma_store<2>(&map, buf, {c0, c1});
    hp::bulk_commit_group();
    hp::bulk_wait_group_read<0>();
  }
}

TEST(Tma, StoreDropsOutOfBoundsElements) {
  LOOM_REQUIRE_SM90();
  std::vector<float> g(8 * 8, -1.0f);
  DeviceBuffer<float> dst(g);
  const cuuint64_t dims[2] = {6, 5}, strides[1] = {8 * sizeof(float)};
  const cuuint32_t box[2] = {4, 4};
  const CUtensorMap map = make_map(CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 2, dst.get(), dims, strides, box,
                                   CU_TENSOR_MAP_SWIZZLE_NONE);
  LOOM_LAUNCH(tma_store_kernel, 1, 16, 128 + 16 * sizeof(float), 0, map, 4, 3);
  const auto o = dst.download();
  for (int r = 0; r < 8; ++r)
    for (int c = 0; c < 8; ++c) {
      const bool in_box = r >= 3 && r < 7 && c >= 4 && c < 8, in_tensor = r < 5 && c < 6;
      const float want = in_box && in_tensor ? 100.0f + float((r - 3) * 4 + (c - 4)) : -1.0f;
      EXPECT_EQ(o[r * 8 + c], want) << r << "," << c;
    }
}

// ---------------------------------------------------------------------------------------
// wgmma m64nNk16: D = A B + D through the documented fragment layouts and descriptors.

using bf16 = __nv_bfloat16;

template <class T = bf16>
std::vector<T> random_16bit(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-2.0f, 2.0f);
  std::vector<T> v(n);
  for (auto& x : v) x = T(u(rng));
  return v;
}

// out[m][n] = init(m, n) + sum_k a[m][k] b[n][k], in double.
template <class T>
std::vector<float> reference(const std::vector<T>& a, const std::vector<T>& b, unsigned n, unsigned k, bool accumulate) {
  std::vector<float> out(64 * n);
  for (unsigned i = 0; i < 64; ++i)
    for (unsigned j = 0; j < n; ++j) {
      double s = accumulate ? 0.125 * double(i) - 0.5 * double(j) : 0.0;
      for (unsigned q = 0; q < k; ++q) s += double(float(a[i * k + q])) * double(float(b[j * k + q]));
      out[i * n + j] = float(s);
    }
  return out;
}

// The accumulator fragment: d[i] of thread t is row 16w + g + 8*((i/2)%2), column
// 8*(i/4) + 2c + i%2, with w = t/32, g = lane/4, c = lane%4.
__device__ inline void fragment_position(unsigned t, unsigned i, unsigned* row, unsigned* col) {
  const unsigned w = t / 32, g = t % 32 / 4, c = t % 4;
  *row = 16 * w + g + 8 * ((i / 2) % 2);
  *col = 8 * (i / 4) + 2 * c + i % 2;
}

// No swizzle, operands written by the threads in 8x16-byte core matrices: element (r, k) at
// (r/8)*SBO + (k/8)*LBO + (r%8)*16 + (k%8)*2 with LBO = 128 and SBO = 256. With a_regs the A
// operand comes from the registers instead: register j of thread t holds row
// 16w + g + 8*(j%2), columns 2c + 8*(j/2) + {0, 1}.
template <int N, class T>
__global__ void wgmma_core_matrix_kernel(const T* a, const T* b, float* out, int a_regs, int wait) {
  LOOM_DYNAMIC_SMEM(unsigned char, smem);
  T* sa = reinterpret_cast<T*>(smem);
  T* sb = reinterpret_cast<T*>(smem + 2048);
  const unsigned t = threadIdx.x;
  const auto core = [](unsigned r, unsigned k) { return ((r / 8) * 256 + (k / 8) * 128 + (r % 8) * 16 + (k % 8) * 2) / 2; };
  for (unsigned i = t; i < 64 * 16; i += 128) sa[core(i / 16, i % 16)] = a[i];
  for (unsigned i = t; i < N * 16; i += 128) sb[core(i / 16, i % 16)] = b[i];
  hp::fence_proxy_async_shared();
  __syncthreads();
  float d[N / 2];
  for (unsigned i = 0; i < N / 2; ++i) {
    unsigned row, col;
    fragment_position(t, i, &row, &col);
    d[i] = 0.125f * float(row) - 0.5f * float(col);
  }
  const uint64_t db = hp::make_smem_desc(sb, CU_TENSOR_MAP_SWIZZLE_NONE, 128, 256);
  hp::wgmma_fence();
  if (a_regs) {
    const unsigned w = t / 32, g = t % 32 / 4, c = t % 4;
    uint32_t regs[4];
    for (unsigned j = 0; j < 4; ++j) {
      const unsigned row = 16 * w + g + 8 * (j % 2), col = 2 * c + 8 * (j / 2);
      uint16_t lo, hi;
      std::memcpy(&lo, &a[row * 16 + col], 2);
      std::memcpy(&hi, &a[row * 16 + col + 1], 2);
      regs[j] = uint32_t(lo) | uint32_t(hi) << 16;
    }
    hp::wgmma_rs<N, T>(d, regs, db, 1);
  } else {
    hp::wgmma_ss<N, T>(d, hp::make_smem_desc(sa, CU_TENSOR_MAP_SWIZZLE_NONE, 128, 256), db, 1);
  }
  hp::wgmma_commit_group();
  if (wait) hp::wgmma_wait_group<0>();
  for (unsigned i = 0; i < N / 2; ++i) {
    unsigned row, col;
    fragment_position(t, i, &row, &col);
    out[row * N + col] = d[i];
  }
}

template <int N, class T = bf16>
void check_core_matrix(bool a_regs) {
  std::mt19937 rng(N * 7 + a_regs);
  const auto a = random_16bit<T>(64 * 16, rng), b = random_16bit<T>(N * 16, rng);
  DeviceBuffer<T> da(a), db(b);
  DeviceBuffer<float> out(64 * N);
  out.poison();
  LOOM_LAUNCH((wgmma_core_matrix_kernel<N, T>), 1, 128, 2048 + N * 32, 0, da.get(), db.get(), out.get(), int(a_regs), 1);
  const auto o = out.download();
  const auto want = reference(a, b, N, 16, true);
  // bf16 and f16 products are exact in f32; 16 f32 additions: a few ulps of the sums' magnitude (< 64).
  for (unsigned i = 0; i < 64 * N; ++i) ASSERT_NEAR(o[i], want[i], 1e-4f) << "row " << i / N << " col " << i % N;
}

TEST(Wgmma, M64N8K16FromSharedMemoryCoreMatrices) {
  LOOM_REQUIRE_SM90();
  check_core_matrix<8>(false);
}
TEST(Wgmma, M64N64K16FromSharedMemoryCoreMatrices) {
  LOOM_REQUIRE_SM90();
  check_core_matrix<64>(false);
}
TEST(Wgmma, M64N16K16WithAFromRegisters) {
  LOOM_REQUIRE_SM90();
  check_core_matrix<16>(true);
}
TEST(Wgmma, HalfPrecisionFromSharedMemoryAndRegisters) {
  LOOM_REQUIRE_SM90();
  check_core_matrix<32, __half>(false);
  check_core_matrix<32, __half>(true);
}

// TMA loads A (64 x K) and B (N x K), K-major, with W-byte swizzle (K = W/2 bf16 per row);
// wgmma reads them through descriptors of the same swizzle, one k-step of 16 (32 bytes) at a
// time: start + 32*ks, SBO = 8 rows * W. The first step overwrites D (scale-d = 0).
template <int N>
__global__ void wgmma_tma_kernel(const __grid_constant__ CUtensorMap ma, const __grid_constant__ CUtensorMap mb,
                                 CUtensorMapSwizzle mode, float* out) {
  LOOM_DYNAMIC_SMEM(unsigned char, raw);
  __shared__ __align__(8) uint64_t bar;
  unsigned char* smem = hp::align_smem(raw, 1024);
  const unsigned W = 16u << mode, t = threadIdx.x;
  unsigned char* sa = smem;
  unsigned char* sb = smem + 64 * W;
  init_barrier(&bar, 1);
  if (t == 0) {
    hp::mbarrier_arrive_expect_tx(&bar, (64 + N) * W);
    hp::tma_load<2>(sa, &ma, &bar, {0, 0});
    hp::tma_load<2>(sb, &mb, &bar, {0, 0});
  }
  hp::mbarrier_wait_parity(&bar, 0);
  float d[N / 2];
  for (float& x : d) x = __int_as_float(0x7fc00000);  // scale-d = 0 must not read it
  hp::wgmma_fence();
  for (unsigned ks = 0; ks < W / 32; ++ks)
    hp::wgmma_ss<N, bf16>(d, hp::make_smem_desc(sa + 32 * ks, mode, 16, 8 * W), hp::make_smem_desc(sb + 32 * ks, mode, 16, 8 * W),
                          ks > 0);
  hp::wgmma_commit_group();
  hp::wgmma_wait_group<0>();
  for (unsigned i = 0; i < N / 2; ++i) {
    unsigned row, col;
    fragment_position(t, i, &row, &col);
    out[row * N + col] = d[i];
  }
}

TEST(Wgmma, ReadsTmaTilesInEverySwizzleMode) {
  LOOM_REQUIRE_SM90();
  constexpr unsigned N = 16;
  for (CUtensorMapSwizzle mode : {CU_TENSOR_MAP_SWIZZLE_32B, CU_TENSOR_MAP_SWIZZLE_64B, CU_TENSOR_MAP_SWIZZLE_128B}) {
    const unsigned W = 16u << mode, K = W / 2;
    std::mt19937 rng(W);
    const auto a = random_16bit(64 * K, rng), b = random_16bit(N * K, rng);
    DeviceBuffer<bf16> da(a), db(b);
    DeviceBuffer<float> out(64 * N);
    out.poison();
    const cuuint64_t adims[2] = {K, 64}, bdims[2] = {K, N}, strides[1] = {W};
    const cuuint32_t abox[2] = {K, 64}, bbox[2] = {K, N};
    const CUtensorMap ma = make_map(CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, da.get(), adims, strides, abox, mode);
    const CUtensorMap mb = make_map(CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, db.get(), bdims, strides, bbox, mode);
    LOOM_LAUNCH((wgmma_tma_kernel<N>), 1, 128, kSlack + (64 + N) * W, 0, ma, mb, mode, out.get());
    const auto o = out.download();
    const auto want = reference(a, b, N, K, false);
    for (unsigned i = 0; i < 64 * N; ++i)
      ASSERT_NEAR(o[i], want[i], 4e-4f) << "swizzle " << W << "B row " << i / N << " col " << i % N;
  }
}

// ---------------------------------------------------------------------------------------
// Warp specialisation: a producer warpgroup hands four rounds to a consumer warpgroup
// through named barriers 1 (full) and 2 (empty), each counting both warpgroups (256).
// setmaxnreg moves registers from the producer to the consumer, uniformly per warpgroup.

__global__ void producer_consumer_kernel(float* out) {
  __shared__ float s[128];
  const unsigned t = threadIdx.x;
  if (t < 128) {
    hp::setmaxnreg_dec<40>();
    for (int round = 0; round < 4; ++round) {
      if (round > 0) hp::named_barrier_sync(2, 256);
      s[t] = float(round * 1000 + int(t));
      hp::named_barrier_arrive(1, 256);
    }
  } else {
    hp::setmaxnreg_inc<232>();
    for (int round = 0; round < 4; ++round) {
      hp::named_barrier_sync(1, 256);
      out[round * 128 + (t - 128)] = s[255 - t];
      if (round < 3) hp::named_barrier_arrive(2, 256);
    }
  }
}

TEST(NamedBarrier, ProducerConsumerRounds) {
  LOOM_REQUIRE_SM90();
  DeviceBuffer<float> out(4 * 128);
  out.poison();
  LOOM_LAUNCH(producer_consumer_kernel, 2, 256, 0, 0, out.get());
  const auto o = out.download();
  for (int r = 0; r < 4; ++r)
    for (int i = 0; i < 128; ++i) EXPECT_EQ(o[r * 128 + i], float(r * 1000 + 127 - i)) << r << "," << i;
}

#if LOOM_SIMT_EMULATION
// Without wgmma.wait_group the accumulators are NaN: the GPU leaves them undefined until the
// wait, and the emulator makes that visible in every result.
TEST(EmulatorOnly, AccumulatorsBeforeTheWaitAreNaN) {
  std::mt19937 rng(3);
  const auto a = random_16bit(64 * 16, rng), b = random_16bit(8 * 16, rng);
  DeviceBuffer<bf16> da(a), db(b);
  DeviceBuffer<float> out(64 * 8);
  LOOM_LAUNCH((wgmma_core_matrix_kernel<8, bf16>), 1, 128, 2048 + 8 * 32, 0, da.get(), db.get(), out.get(), 0, 0);
  for (float v : out.download()) EXPECT_TRUE(std::isnan(v));
}

// Address bits 4..6 XOR bits 7..9, as many of them as the mode has: (row, chunk) pairs worked
// by hand from the PTX ISA's 128B pattern (row r's chunk c goes to chunk c ^ (r % 8)).
TEST(EmulatorOnly, SwizzleOfRowAndChunk) {
  using loom::simt::hopper_detail::swizzle;
  EXPECT_EQ(swizzle(3 * 128 + 5 * 16, CU_TENSOR_MAP_SWIZZLE_128B), 3u * 128 + 6 * 16);  // 5 ^ 3 = 6
  EXPECT_EQ(swizzle(7 * 128 + 0 * 16 + 4, CU_TENSOR_MAP_SWIZZLE_128B), 7u * 128 + 7 * 16 + 4);
  EXPECT_EQ(swizzle(9 * 128 + 2 * 16, CU_TENSOR_MAP_SWIZZLE_128B), 9u * 128 + 3 * 16);  // row 9: 9 % 8 = 1
  EXPECT_EQ(swizzle(0x400 + 5 * 16, CU_TENSOR_MAP_SWIZZLE_128B), 0x400u + 5 * 16);     // pattern repeats
  EXPECT_EQ(swizzle(3 * 128 + 1 * 16, CU_TENSOR_MAP_SWIZZLE_64B), 3u * 128 + 2 * 16);  // 1 ^ (3 & 3)
  EXPECT_EQ(swizzle(4 * 128 + 1 * 16, CU_TENSOR_MAP_SWIZZLE_64B), 4u * 128 + 1 * 16);  // 4 & 3 = 0
  EXPECT_EQ(swizzle(1 * 128 + 0 * 16, CU_TENSOR_MAP_SWIZZLE_32B), 1u * 128 + 1 * 16);
  EXPECT_EQ(swizzle(2 * 128 + 1 * 16, CU_TENSOR_MAP_SWIZZLE_32B), 2u * 128 + 1 * 16);
  EXPECT_EQ(swizzle(5 * 128 + 3 * 16, CU_TENSOR_MAP_SWIZZLE_NONE), 5u * 128 + 3 * 16);
}

// The descriptor's bit fields: start >> 4 in 0-13, LBO >> 4 in 16-29, SBO >> 4 in 32-45,
// swizzle in 62-63 (1 = 128B, 2 = 64B, 3 = 32B). The dynamic shared memory starts at shared
// address 0x410 here (1 KiB reserved, then as if 16 bytes of static shared memory).
__global__ void descriptor_kernel(uint64_t* out) {
  LOOM_DYNAMIC_SMEM(unsigned char, smem);
  out[0] = hp::make_smem_desc(smem + 0x1230, CU_TENSOR_MAP_SWIZZLE_128B, 16, 1024);
  out[1] = hp::make_smem_desc(smem + 0x40, CU_TENSOR_MAP_SWIZZLE_NONE, 128, 256);
  out[2] = hp::make_smem_desc(hp::align_smem(smem, 1024), CU_TENSOR_MAP_SWIZZLE_32B, 16, 256);
  out[3] = hp::smem_u32(smem);
}

TEST(EmulatorOnly, DescriptorBitFields) {
  DeviceBuffer<uint64_t> out(4);
  LOOM_LAUNCH(descriptor_kernel, 1, 1, 8192, 0, out.get());
  const auto o = out.download();
  EXPECT_EQ(o[3], 0x410u);
  EXPECT_EQ(o[0], 0x164ull | 1ull << 16 | 64ull << 32 | 1ull << 62);  // (0x410 + 0x1230) >> 4
  EXPECT_EQ(o[1], 0x45ull | 8ull << 16 | 16ull << 32);                // (0x410 + 0x40) >> 4
  EXPECT_EQ(o[2], 0x80ull | 1ull << 16 | 16ull << 32 | 3ull << 62);   // 0x800 >> 4
}

// cuTensorMapEncodeTiled's documented argument checks: each bad argument alone is refused.
TEST(EmulatorOnly, TensorMapArgumentsAreChecked) {
  DeviceBuffer<float> g(64 * 64);
  alignas(128) CUtensorMap map;
  const cuuint32_t ones[2] = {1, 1};
  struct Case {
    const char* what;
    CUtensorMapDataType type = CU_TENSOR_MAP_DATA_TYPE_FLOAT32;
    unsigned rank = 2;
    size_t offset = 0;  // floats added to the global address
    cuuint64_t dims[2] = {64, 64}, stride = 256;
    cuuint32_t box[2] = {32, 8};
    CUtensorMapSwizzle swizzle = CU_TENSOR_MAP_SWIZZLE_128B;
    CUtensorMapInterleave interleave = CU_TENSOR_MAP_INTERLEAVE_NONE;
    CUtensorMapFloatOOBfill oob = CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE;
    bool ok = false;
  };
  std::vector<Case> cases(12);
  cases[0].what = "valid", cases[0].ok = true;
  cases[1].what = "rank 0", cases[1].rank = 0;
  cases[2].what = "rank 6", cases[2].rank = 6;
  cases[3].what = "address 4-byte aligned", cases[3].offset = 1;
  cases[4].what = "stride not a multiple of 16", cases[4].stride = 264;
  cases[5].what = "stride below the row", cases[5].stride = 128;
  cases[6].what = "box 257", cases[6].box[1] = 257;
  cases[7].what = "inner box 36 bytes", cases[7].box[0] = 9, cases[7].swizzle = CU_TENSOR_MAP_SWIZZLE_NONE;
  cases[8].what = "inner box 256 bytes > 128B swizzle", cases[8].box[0] = 64;
  cases[9].what = "interleave", cases[9].interleave = CU_TENSOR_MAP_INTERLEAVE_32B;
  cases[10].what = "NaN fill of an integer type", cases[10].type = CU_TENSOR_MAP_DATA_TYPE_INT32,
  cases[10].oob = CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA;
  cases[11].what = "dimension 0", cases[11].dims[1] = 0;
  for (const Case& c : cases) {
    const cuuint64_t strides[1] = {c.stride};
    const CUresult r = hp::encode_tensor_map_tiled(&map, c.type, c.rank, g.get() + c.offset, c.dims, strides, c.box, ones,
                                                   c.interleave, c.swizzle, CU_TENSOR_MAP_L2_PROMOTION_NONE, c.oob);
    EXPECT_EQ(r, c.ok ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE) << c.what;
  }
}
#endif

}  // namespace
