// hopper_emu_neg_test.cpp: misuse of the sm_90 instructions (kernels/common/hopper.cuh) that
// the emulator must report, one per mode (argv[1]), each beside a control that differs only
// by the bug. Run by ctest as simt_emu_neg_test.cpp is (kernels/common/CMakeLists.txt): a bug
// mode passes only if its report names the expected source lines ("// @line:" markers) and
// the run never printed "NOT DETECTED"; a control must exit 0 with no report.
//
//   mode                    build  expected report
//   expect_tx_short         plain  a copy completes more bytes than expect_tx announced
//   expect_tx_long          plain  watchdog: the waiter's line, the barrier still owed 16 bytes
//   wrong_parity            plain  watchdog: the waiter's line, phase 1 waits for an arrival
//   uninitialised           plain  "not an initialised mbarrier" at the arrival
//   after_inval             plain  "after mbarrier.inval"
//   arrive_overflow         plain  more arrivals than the phase's count
//   named_count_mismatch    plain  named barrier count mismatch, both lines
//   setmaxnreg_nonuniform   plain  non-uniform setmaxnreg in the warpgroup
//   wgmma_not_together      plain  one warp issues a different wgmma: non-uniform
//   wgmma_warp_missing      plain  one warp returns instead of issuing: reported at the wgmma
//   wgmma_no_fence          plain  wgmma.mma_async without wgmma.fence
//   wgmma_misaligned_desc   plain  descriptor start not in its swizzle pattern's first row
//   wgmma_swizzle_mismatch  plain  a 128B-swizzled TMA tile read as no-swizzle
//   tma_misaligned_dst      plain  a swizzled box at the dynamic shared memory's start, which is
//                                  only 16-byte aligned (as on the GPU after static shared memory)
//   missing_mbarrier_wait   tsan   data race between the TMA write and the unsynchronised read
//   *_ok                    any    control: exits 0
#include "kernels/common/hopper.cuh"
#include "kernels/common/neg_test_main.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

namespace hp = loom::hopper;
using bf16 = __nv_bfloat16;

// Thread 0 initialises bar for one arrival per phase; the others wait for that.
__device__ void init_barrier(uint64_t* bar) {
  if (threadIdx.x == 0) hp::mbarrier_init(bar, 1);
  __syncthreads();
}

// One producer thread copies 256 bytes, announced as `expect` bytes; every thread waits on
// `parity` (after the first phase when wait_twice) and reads.
__global__ void expect_tx_kernel(const float* src, float* out, unsigned expect, unsigned parity, int wait_twice) {
  LOOM_DYNAMIC_SMEM(float, buf);
  __shared__ __align__(8) uint64_t bar;
  const unsigned t = threadIdx.x;
  init_barrier(&bar);
  if (t == 0) {
    hp::mbarrier_arrive_expect_tx(&bar, expect);
    hp::bulk_copy_g2s(buf, src, 256, &bar);  // @line:short_copy
  }
  hp::mbarrier_wait_parity(&bar, 0);  // @line:first_wait
  if (wait_twice) hp::mbarrier_wait_parity(&bar, parity);  // @line:second_wait
  out[t] = buf[t];
}

// mbarrier life cycle: use before init, after inval, more arrivals than the count.
__global__ void lifecycle_kernel(float* out, int init, int inval, unsigned arrivals) {
  __shared__ __align__(8) uint64_t bar;
  if (init) hp::mbarrier_init(&bar, 2);
  if (inval) hp::mbarrier_inval(&bar);
  hp::mbarrier_arrive(&bar, arrivals);  // @line:arrive
  out[0] = 1.0f;
}

// Warp 0 names a different thread count for the same barrier phase than warps 1 and 2.
__global__ void named_count_kernel(float* out, unsigned warp0_count) {
  if (threadIdx.x < 32) hp::named_barrier_sync(1, warp0_count);  // @line:named_a
  else hp::named_barrier_sync(1, 96);                             // @line:named_b
  out[threadIdx.x] = 1.0f;
}

// Warp 3 of the warpgroup asks for a different register count.
__global__ void setmaxnreg_kernel(float* out, int nonuniform) {
  if (nonuniform && threadIdx.x >= 96) hp::setmaxnreg_dec<48>();  // @line:nreg_b
  else hp::setmaxnreg_dec<40>();                                  // @line:nreg_a
  out[threadIdx.x] = 1.0f;
}

enum WgmmaBug { kNone, kNotTogether, kWarpMissing, kNoFence, kMisaligned, kSwizzleMismatch, kTmaMisaligned };

// A 64 x 64 A tile and an 8 x 64 B tile loaded by TMA with 128B swizzle, multiplied by four
// wgmma k-steps; `bug` breaks one rule.
__global__ void wgmma_kernel(const __grid_constant__ CUtensorMap ma, const __grid_constant__ CUtensorMap mb, int bug,
                             float* out) {
  LOOM_DYNAMIC_SMEM(unsigned char, raw);
  __shared__ __align__(8) uint64_t bar;
  const unsigned t = threadIdx.x;
  // The dynamic shared memory is only 16-byte aligned: the bug forgets to align it.
  unsigned char* sa = bug == kTmaMisaligned ? raw : hp::align_smem(raw, 1024);
  unsigned char* sb = sa + 9216;
  init_barrier(&bar);
  if (t == 0) {
    hp::mbarrier_arrive_expect_tx(&bar, 8192 + 1024);
    hp::tma_load<2>(sa, &ma, &bar, {0, 0});  // @line:tma_dst
    hp::tma_load<2>(sb, &mb, &bar, {0, 0});
  }
  hp::mbarrier_wait_parity(&bar, 0);
  float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  if (bug == kWarpMissing && t >= 96) return;  // warp 3 skips the product
  if (bug != kNoFence) hp::wgmma_fence();
  const CUtensorMapSwizzle a_mode = bug == kSwizzleMismatch ? CU_TENSOR_MAP_SWIZZLE_NONE : CU_TENSOR_MAP_SWIZZLE_128B;
  const unsigned a_shift = bug == kMisaligned ? 128 : 0;
  for (unsigned ks = 0; ks < 4; ++ks) {
    const uint64_t da = hp::make_smem_desc(sa + a_shift + 32 * ks, a_mode, 16, 1024);
    const uint64_t db = hp::make_smem_desc(sb + 32 * ks, CU_TENSOR_MAP_SWIZZLE_128B, 16, 1024);
    if (bug == kNotTogether && t >= 96) hp::wgmma_ss<8, bf16>(d, da, db, 1);  // @line:wgmma_b
    else hp::wgmma_ss<8, bf16>(d, da, db, 1);                                 // @line:wgmma_a
  }
  hp::wgmma_commit_group();
  hp::wgmma_wait_group<0>();
  out[t] = d[0] + d[1] + d[2] + d[3];
}

// The TMA issuer writes the box; the other threads read it with or without waiting first.
__global__ void missing_wait_kernel(const __grid_constant__ CUtensorMap m, int wait, float* out) {
  LOOM_DYNAMIC_SMEM(float, buf);
  __shared__ __align__(8) uint64_t bar;
  const unsigned t = threadIdx.x;
  init_barrier(&bar);
  if (t == 0) {
    hp::mbarrier_arrive_expect_tx(&bar, 64 * sizeof(float));
    hp::tma_load<2>(buf, &m, &bar, {0, 0});
  }
  if (wait) hp::mbarrier_wait_parity(&bar, 0);
  out[t] = buf[63 - t];  // @line:unsynchronised_read
}

CUtensorMap map_2d(void* base, cuuint64_t cols, cuuint64_t rows, CUtensorMapDataType type, unsigned elem,
                   CUtensorMapSwizzle swizzle) {
  alignas(128) CUtensorMap map;
  const cuuint64_t dims[2] = {cols, rows}, strides[1] = {cols * elem};
  const cuuint32_t box[2] = {unsigned(cols), unsigned(rows)}, ones[2] = {1, 1};
  if (hp::encode_tensor_map_tiled(&map, type, 2, base, dims, strides, box, ones, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle,
                                  CU_TENSOR_MAP_L2_PROMOTION_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) != CUDA_SUCCESS)
    std::abort();
  return map;
}

bool run(const char* mode) {
  const auto is = [&](const char* m) { return std::strcmp(mode, m) == 0; };
  const auto either = [&](const char* m) { return is(m) || is((std::string(m) + "_ok").c_str()); };
  const bool bug = !loom::test::is_control(mode);
  float* src = nullptr;
  float* out = nullptr;
  cudaMalloc(&src, 64 * 64 * sizeof(float));
  cudaMalloc(&out, 256 * sizeof(float));
  cudaMemset(src, 0, 64 * 64 * sizeof(float));
  if (either("expect_tx_short")) {
    LOOM_LAUNCH(expect_tx_kernel, 1, 64, 256, 0, src, out, bug ? 240u : 256u, 0u, 0);
  } else if (either("expect_tx_long")) {
    LOOM_LAUNCH(expect_tx_kernel, 1, 64, 256, 0, src, out, bug ? 272u : 256u, 0u, 0);
  } else if (either("wrong_parity")) {
    // After phase 0 the next wait must be for parity 1 only if someone completes phase 1.
    LOOM_LAUNCH(expect_tx_kernel, 1, 64, 256, 0, src, out, 256u, bug ? 1u : 0u, 1);
  } else if (either("uninitialised")) {
    LOOM_LAUNCH(lifecycle_kernel, 1, 1, 0, 0, out, bug ? 0 : 1, 0, 1u);
  } else if (either("after_inval")) {
    LOOM_LAUNCH(lifecycle_kernel, 1, 1, 0, 0, out, 1, bug ? 1 : 0, 1u);
  } else if (either("arrive_overflow")) {
    LOOM_LAUNCH(lifecycle_kernel, 1, 1, 0, 0, out, 1, 0, bug ? 3u : 2u);
  } else if (either("named_count_mismatch")) {
    LOOM_LAUNCH(named_count_kernel, 1, 96, 0, 0, out, bug ? 64u : 96u);
  } else if (either("setmaxnreg_nonuniform")) {
    LOOM_LAUNCH(setmaxnreg_kernel, 1, 128, 0, 0, out, int(bug));
  } else if (either("wgmma_not_together") || either("wgmma_warp_missing") || either("wgmma_no_fence") || either("wgmma_misaligned_desc") ||
             either("wgmma_swizzle_mismatch") || either("tma_misaligned_dst")) {
    bf16* a = nullptr;
    cudaMalloc(&a, (64 + 8) * 64 * sizeof(bf16));
    cudaMemset(a, 0, (64 + 8) * 64 * sizeof(bf16));
    const CUtensorMap ma = map_2d(a, 64, 64, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, CU_TENSOR_MAP_SWIZZLE_128B);
    const CUtensorMap mb = map_2d(a + 64 * 64, 64, 8, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, CU_TENSOR_MAP_SWIZZLE_128B);
    const int kind = !bug                             ? kNone
                     : either("wgmma_not_together")   ? kNotTogether
                     : either("wgmma_warp_missing")   ? kWarpMissing
                     : either("wgmma_no_fence")       ? kNoFence
                     : either("wgmma_misaligned_desc") ? kMisaligned
                     : either("wgmma_swizzle_mismatch") ? kSwizzleMismatch
                                                        : kTmaMisaligned;
    LOOM_LAUNCH(wgmma_kernel, 1, 128, 1024 + 9216 + 1024, 0, ma, mb, kind, out);
    cudaFree(a);
  } else if (either("missing_mbarrier_wait")) {
    const CUtensorMap m = map_2d(src, 16, 4, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 4, CU_TENSOR_MAP_SWIZZLE_NONE);
    LOOM_LAUNCH(missing_wait_kernel, 1, 64, 256, 0, m, bug ? 0 : 1, out);
  } else {
    return false;
  }
  cudaFree(src);
  cudaFree(out);
  return true;
}

}  // namespace

int main(int argc, char** argv) { return loom::test::neg_test_main(argc, argv, run); }
