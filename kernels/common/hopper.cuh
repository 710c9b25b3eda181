// hopper.cuh: loom's sm_90 (Hopper) asynchronous instructions for kernels: mbarrier, named
// barriers, setmaxnreg, fence.proxy.async, TMA (tensor maps, cp.async.bulk.tensor,
// cp.async.bulk) and wgmma, as one set of functions in loom::hopper that is written once
// and runs two ways, like the rest of cuda_compat.h:
//  - under nvcc each is its PTX instruction in inline asm (sm_90a; on older architectures the
//    device code traps, so dispatch to these kernels by architecture);
//  - under g++ each is the SIMT emulator's model of the instruction (hopper_emu.h), which
//    checks its use and reports misuse with the caller's line.
// Host code gets encode_tensor_map_tiled, cuTensorMapEncodeTiled's argument list: the driver's
// own function on a GPU, the emulator's checked model otherwise.
//
// Emulator rules a kernel must follow (docs/emulator.md "Hopper instructions"): TMA boxes and
// wgmma operands live in the dynamic shared memory (LOOM_DYNAMIC_SMEM), aligned by the kernel
// itself (align_smem: the region's start is only 16-byte aligned); shared memory that TMA
// wrote is read by wgmma with the same swizzle; accumulators are read only after the
// wgmma.wait_group that covers them.
#pragma once
#include "kernels/common/cuda_compat.h"

#include <cuda.h>

#include <cstdint>

#if LOOM_SIMT_EMULATION
#include "kernels/common/hopper_emu.h"
#else

namespace loom::hopper {

// cuTensorMapEncodeTiled (its arguments exactly) through the runtime's driver entry point, so
// that nothing links libcuda directly.
template <class... Args>
inline CUresult encode_tensor_map_tiled(Args... args) {
  using Fn = decltype(&cuTensorMapEncodeTiled);
  static Fn fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult q{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
      p = nullptr;
    return reinterpret_cast<Fn>(p);
  }();
  if (!fn) return CUDA_ERROR_NOT_SUPPORTED;
  return fn(args...);
}

}  // namespace loom::hopper

#if LOOM_DEVICE_CODE
#include "kernels/common/wgmma_ptx.cuh"

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define LOOM_HOPPER_PTX 1
#else
#define LOOM_HOPPER_PTX 0
#endif

// The instruction under sm_90a, a trap on any other architecture.
#if LOOM_HOPPER_PTX
#define LOOM_SM90(...) __VA_ARGS__
#else
#define LOOM_SM90(...) __trap()
#endif

namespace loom::hopper {

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// ---- mbarrier (PTX ISA "mbarrier")
__device__ __forceinline__ void mbarrier_init(uint64_t* bar, uint32_t count) {
  LOOM_SM90(asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(bar)), "r"(count) : "memory"));
}
__device__ __forceinline__ void mbarrier_inval(uint64_t* bar) {
  LOOM_SM90(asm volatile("mbarrier.inval.shared::cta.b64 [%0];" ::"r"(smem_u32(bar)) : "memory"));
}
__device__ __forceinline__ uint64_t mbarrier_arrive(uint64_t* bar, uint32_t count = 1) {
  uint64_t token = 0;
  LOOM_SM90(asm volatile("mbarrier.arrive.shared::cta.b64 %0, [%1], %2;"
                         : "=l"(token)
                         : "r"(smem_u32(bar)), "r"(count)
                         : "memory"));
  return token;
}
__device__ __forceinline__ uint64_t mbarrier_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  uint64_t token = 0;
  LOOM_SM90(asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 %0, [%1], %2;"
                         : "=l"(token)
                         : "r"(smem_u32(bar)), "r"(bytes)
                         : "memory"));
  return token;
}
__device__ __forceinline__ void mbarrier_expect_tx(uint64_t* bar, uint32_t bytes) {
  LOOM_SM90(asm volatile("mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%0], %1;" ::"r"(smem_u32(bar)), "r"(bytes)
                         : "memory"));
}
// mbarrier.{test,try}_wait.parity, its predicate as a bool.
#define LOOM_MBARRIER_PARITY_WAIT(name, op)                                                              \
  __device__ __forceinline__ bool name(uint64_t* bar, uint32_t parity) {                                 \
    uint32_t done = 0;                                                                                   \
    LOOM_SM90(asm volatile("{\n.reg .pred p;\nmbarrier." op ".parity.shared::cta.b64 p, [%1], %2;\n"   \
                           "selp.u32 %0, 1, 0, p;\n}\n"                                                  \
                           : "=r"(done)                                                                  \
                           : "r"(smem_u32(bar)), "r"(parity)                                             \
                           : "memory"));                                                                 \
    return done != 0;                                                                                    \
  }
LOOM_MBARRIER_PARITY_WAIT(mbarrier_test_wait_parity, "test_wait")
LOOM_MBARRIER_PARITY_WAIT(mbarrier_try_wait_parity, "try_wait")
#undef LOOM_MBARRIER_PARITY_WAIT
__device__ __forceinline__ void mbarrier_wait_parity(uint64_t* bar, uint32_t parity) {
  while (!mbarrier_try_wait_parity(bar, parity)) {
  }
}

// ---- named barriers (PTX ISA "bar, barrier"), setmaxnreg, fences
__device__ __forceinline__ void named_barrier_sync(unsigned id, unsigned count) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(count) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(unsigned id, unsigned count) {
  asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(count) : "memory");
}
template <unsigned N>
__device__ __forceinline__ void setmaxnreg_inc() {
  LOOM_SM90(asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(N)));
}
template <unsigned N>
__device__ __forceinline__ void setmaxnreg_dec() {
  LOOM_SM90(asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(N)));
}
__device__ __forceinline__ void fence_proxy_async_shared() {
  LOOM_SM90(asm volatile("fence.proxy.async.shared::cta;" ::: "memory"));
}
__device__ __forceinline__ void fence_barrier_init() {
  LOOM_SM90(asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory"));
}

// ---- TMA (PTX ISA "cp.async.bulk.tensor", "cp.async.bulk")
template <int R>
__device__ __forceinline__ void tma_load(void* dst, const CUtensorMap* map, uint64_t* bar, const int32_t (&c)[R]) {
  static_assert(R >= 1 && R <= 5);
  const uint32_t d = smem_u32(dst), b = smem_u32(bar);
  const uint64_t m = reinterpret_cast<uint64_t>(map);
#if LOOM_HOPPER_PTX
#define LOOM_TMA_LOAD(R) "cp.async.bulk.tensor." #R "d.shared::cluster.global.tile.mbarrier::complete_tx::bytes "
  if constexpr (R == 1)
    asm volatile(LOOM_TMA_LOAD(1) "[%0], [%1, {%2}], [%3];" ::"r"(d), "l"(m), "r"(c[0]), "r"(b) : "memory");
  else if constexpr (R == 2)
    asm volatile(LOOM_TMA_LOAD(2) "[%0], [%1, {%2, %3}], [%4];" ::"r"(d), "l"(m), "r"(c[0]), "r"(c[1]), "r"(b)
                 : "memory");
  else if constexpr (R == 3)
    asm volatile(LOOM_TMA_LOAD(3) "[%0], [%1, {%2, %3, %4}], [%5];" ::"r"(d), "l"(m), "r"(c[0]), "r"(c[1]),
                 "r"(c[2]), "r"(b)
                 : "memory");
  else if constexpr (R == 4)
    asm volatile(LOOM_TMA_LOAD(4) "[%0], [%1, {%2, %3, %4, %5}], [%6];" ::"r"(d), "l"(m), "r"(c[0]), "r"(c[1]),
                 "r"(c[2]), "r"(c[3]), "r"(b)
                 : "memory");
  else
    asm volatile(LOOM_TMA_LOAD(5) "[%0], [%1, {%2, %3, %4, %5, %6}], [%7];" ::"r"(d), "l"(m), "r"(c[0]), "r"(c[1]),
                 "r"(c[2]), "r"(c[3]), "r"(c[4]), "r"(b)
                 : "memory");
#undef LOOM_TMA_LOAD
#else
  (void)d, (void)b, (void)m, (void)c;
  __trap();
#endif
}
template <int R>
__device__ __forceinline__ void tma_store(const CUtensorMap* map, const void* src, const int32_t (&c)[R]) {
  static_assert(R >= 1 && R <= 5);
  const uint32_t s = smem_u32(src);
  const uint64_t m = reinterpret_cast<uint64_t>(map);
#if LOOM_HOPPER_PTX
  if constexpr (R == 1)
    asm volatile("cp.async.bulk.tensor.1d.global.shared::cta.tile.bulk_group [%0, {%2}], [%1];"
                 ::"l"(m), "r"(s), "r"(c[0]) : "memory");
  else if constexpr (R == 2)
    asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.tile.bulk_group [%0, {%2, %3}], [%1];"
                 ::"l"(m), "r"(s), "r"(c[0]), "r"(c[1]) : "memory");
  else if constexpr (R == 3)
    asm volatile("cp.async.bulk.tensor.3d.global.shared::cta.tile.bulk_group [%0, {%2, %3, %4}], [%1];"
                 ::"l"(m), "r"(s), "r"(c[0]), "r"(c[1]), "r"(c[2]) : "memory");
  else if constexpr (R == 4)
    asm volatile("cp.async.bulk.tensor.4d.global.shared::cta.tile.bulk_group [%0, {%2, %3, %4, %5}], [%1];"
                 ::"l"(m), "r"(s), "r"(c[0]), "r"(c[1]), "r"(c[2]), "r"(c[3]) : "memory");
  else
    asm volatile("cp.async.bulk.tensor.5d.global.shared::cta.tile.bulk_group [%0, {%2, %3, %4, %5, %6}], [%1];"
                 ::"l"(m), "r"(s), "r"(c[0]), "r"(c[1]), "r"(c[2]), "r"(c[3]), "r"(c[4]) : "memory");
#else
  (void)s, (void)m, (void)c;
  __trap();
#endif
}
__device__ __forceinline__ void bulk_copy_g2s(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  LOOM_SM90(asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                         ::"r"(smem_u32(dst)), "l"(src), "r"(bytes), "r"(smem_u32(bar)) : "memory"));
}
__device__ __forceinline__ void bulk_copy_s2g(void* dst, const void* src, uint32_t bytes) {
  LOOM_SM90(asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;"
                         ::"l"(dst), "r"(smem_u32(src)), "r"(bytes) : "memory"));
}
__device__ __forceinline__ void bulk_commit_group() {
  LOOM_SM90(asm volatile("cp.async.bulk.commit_group;" ::: "memory"));
}
template <int N>
__device__ __forceinline__ void bulk_wait_group_read() {
  LOOM_SM90(asm volatile("cp.async.bulk.wait_group.read %0;" ::"n"(N) : "memory"));
}

// ---- wgmma (PTX ISA "Asynchronous Warpgroup Level Matrix Multiply-Accumulate")
__device__ __forceinline__ uint64_t make_smem_desc(const void* smem, CUtensorMapSwizzle swizzle, uint32_t lbo_bytes,
                                                   uint32_t sbo_bytes) {
  constexpr uint64_t kLayout[4] = {0, 3, 2, 1};  // CUtensorMapSwizzle -> descriptor bits 62-63
  return uint64_t((smem_u32(smem) >> 4) & 0x3FFF) | uint64_t((lbo_bytes >> 4) & 0x3FFF) << 16 |
         uint64_t((sbo_bytes >> 4) & 0x3FFF) << 32 | kLayout[swizzle & 3] << 62;
}
__device__ __forceinline__ void wgmma_fence() { LOOM_SM90(asm volatile("wgmma.fence.sync.aligned;" ::: "memory")); }
__device__ __forceinline__ void wgmma_commit_group() {
  LOOM_SM90(asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"));
}
template <int N>
__device__ __forceinline__ void wgmma_wait_group() {
  static_assert(N >= 0 && N <= 7, "wgmma.wait_group takes 0..7");
  LOOM_SM90(asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory"));
}

#define LOOM_WGMMA_CASE(KIND, n)        \
  if constexpr (N == n) {               \
    if constexpr (kBf16)                \
      LOOM_WGMMA_##KIND##_##n("bf16");  \
    else                                \
      LOOM_WGMMA_##KIND##_##n("f16");   \
  }
#define LOOM_WGMMA_DISPATCH(KIND)                                                                        \
  LOOM_WGMMA_CASE(KIND, 8) else LOOM_WGMMA_CASE(KIND, 16) else LOOM_WGMMA_CASE(KIND, 32) else             \
      LOOM_WGMMA_CASE(KIND, 64) else LOOM_WGMMA_CASE(KIND, 128) else LOOM_WGMMA_CASE(KIND, 256)

// The emulator takes any N that is a multiple of 8 up to 256; wgmma_ptx.cuh spells out these.
template <int N>
inline constexpr bool kWgmmaN = N == 8 || N == 16 || N == 32 || N == 64 || N == 128 || N == 256;

template <int N, class T>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, int scale_d) {
  static_assert(kWgmmaN<N>, "wgmma_ptx.cuh has N in {8, 16, 32, 64, 128, 256}");
  constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;
  static_assert(kBf16 || std::is_same_v<T, __half>);
#if LOOM_HOPPER_PTX
  LOOM_WGMMA_DISPATCH(SS)
#else
  (void)d, (void)desc_a, (void)desc_b, (void)scale_d;
  __trap();
#endif
}
template <int N, class T>
__device__ __forceinline__ void wgmma_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b, int scale_d) {
  static_assert(kWgmmaN<N>, "wgmma_ptx.cuh has N in {8, 16, 32, 64, 128, 256}");
  constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;
  static_assert(kBf16 || std::is_same_v<T, __half>);
#if LOOM_HOPPER_PTX
  LOOM_WGMMA_DISPATCH(RS)
#else
  (void)d, (void)a, (void)desc_b, (void)scale_d;
  __trap();
#endif
}
#undef LOOM_WGMMA_DISPATCH
#undef LOOM_WGMMA_CASE

}  // namespace loom::hopper

#undef LOOM_SM90
#endif  // LOOM_DEVICE_CODE
#endif  // LOOM_SIMT_EMULATION

#if LOOM_DEVICE_CODE
namespace loom::hopper {
// p moved up to the next multiple of `align` (a power of two) in shared-window address. The
// dynamic shared memory is only as aligned as LOOM_DYNAMIC_SMEM declares (16 bytes: on the GPU
// it follows the kernel's static shared memory), while swizzled TMA boxes need 128 bytes and a
// 128B-swizzled tile should start its 1024-byte pattern: allocate align - 16 bytes of slack.
template <class T>
__device__ __forceinline__ T* align_smem(T* p, uint32_t align) {
  const uint32_t skip = (align - smem_u32(p) % align) % align;
  return reinterpret_cast<T*>(reinterpret_cast<unsigned char*>(p) + skip);
}
}  // namespace loom::hopper
#endif
