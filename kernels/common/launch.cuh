// launch.cuh: how launchers size their grids, written once for every kernel family (nvcc and
// the emulator alike; host code only, so it also works where kernels are not compiled).
//  - sm_count(): the current device's SM count, asked at every call: no hidden global state
//    (DESIGN.md §8), it follows cudaSetDevice, and it is a host-side attribute lookup, legal
//    while a CUDA graph is being captured. The emulator answers LOOM_SIMT_SM_COUNT (4).
//  - ceil_div(a, b): blocks for a items, b a block.
//  - grid_for(units, threads, blocks_per_sm): blocks of `threads` threads for `units` units
//    of work (one a thread), at least one and at most one full wave of `blocks_per_sm`
//    blocks an SM; a grid-stride loop covers the rest. Under the emulator's 4 SMs a wave is
//    small, so tests reach the loops' second round with small shapes.
//  - split_point(n, parts, i): where part i starts when n items are split into `parts`
//    contiguous parts as evenly as possible (host and device);
//  - blocks_per_sm(kernel, threads, smem): how many blocks of this kernel one SM holds at once,
//    as the runtime computes it from the compiled kernel (registers, shared memory, threads,
//    block slots): cudaOccupancyMaxActiveBlocksPerMultiprocessor, asked at every launch like
//    sm_count(). A grid-stride kernel's wave is blocks_per_sm() * sm_count(): a fixed guess
//    (8 blocks of 256 threads) overshoots when registers allow fewer, and the surplus blocks
//    run as a partial second wave. The emulator answers from threads, block slots and shared
//    memory (it has no registers), the same limits a GPU applies besides;
//  - allow_dynamic_smem(kernel, bytes): the opt-in a kernel needs for more than 48 KiB of
//    dynamic shared memory, made at every launch (it is per device, cheap, and legal during
//    stream capture), after checking `bytes` against the device's per-block maximum;
//  - limits known at compile time: kSmemPerBlockLimit (the shared memory one block may use on
//    the architecture being compiled, static + dynamic after the opt-in; the host pass and the
//    emulator use sm_80's, the smallest of the architectures built), kStaticSmemLimit (48 KiB
//    of `__shared__` arrays) and valid_block(threads), for the static_asserts beside each
//    kernel's tile constants. Grids depend on the shapes: LOOM_LAUNCH checks them (and the
//    block) against the hardware limits at every launch, naming the kernel;
//  - with_bool(flag, f): f(std::true_type{}) or f(std::false_type{}), a runtime choice (the
//    16-byte vector path or the scalar one) made a template argument, so that one launch
//    line serves both instantiations; with_value<V1, V2...>(name, v, f) does the same for a
//    value among those instantiated (f gets std::integral_constant<decltype(v), Vi>), and
//    stops with the name when v is none of them.
// The launch check itself is part of LOOM_LAUNCH (cuda_compat.h): every launch is checked.
#pragma once
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "core/check.h"
#include "cuda_check.h"
#include "cuda_compat.h"

namespace loom {

inline int sm_count() {
  int dev = 0, n = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
  LOOM_CHECK(n > 0, "device ", dev, " reports ", n, " SMs");
  return n;
}

constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Shared memory one block may use, static + dynamic after the opt-in, by compute capability x
// 100 (CUDA C++ Programming Guide, technical specifications): 227 KiB on sm_90/sm_100, 163 KiB
// on sm_80/sm_87, 99 KiB on sm_86/sm_89/sm_120, 64 KiB before.
constexpr size_t smem_per_block_limit(int arch) {
  if (arch >= 1200) return 101376;
  if (arch >= 900) return 232448;
  if (arch == 800 || arch == 870) return 166912;
  if (arch >= 860) return 101376;
  return 65536;
}
#if defined(__CUDA_ARCH__)
inline constexpr size_t kSmemPerBlockLimit = smem_per_block_limit(__CUDA_ARCH__);
#else
inline constexpr size_t kSmemPerBlockLimit = smem_per_block_limit(800);
#endif
inline constexpr size_t kStaticSmemLimit = 48 * 1024;
// A block the hardware accepts, in whole warps (the kernels' reductions assume whole warps).
constexpr bool valid_block(int threads) { return threads >= 32 && threads <= 1024 && threads % 32 == 0; }

template <class Kernel>
int blocks_per_sm(Kernel* kernel, int threads, size_t smem) {
  int n = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, threads, smem));
  LOOM_CHECK(n > 0, "a block of ", threads, " threads and ", smem, " bytes of dynamic shared memory fits no SM");
  return n;
}

inline int grid_for(int64_t units, int threads, int blocks_per_sm) {
  const int64_t wave = int64_t(blocks_per_sm) * sm_count();
  const int64_t blocks = ceil_div(units, threads);
  return int(blocks < 1 ? 1 : blocks < wave ? blocks : wave);
}

// 32-bit on purpose: a 64-bit division is a subroutine call on the GPU (and spills around it).
LOOM_HD inline int split_point(int n, int parts, int i) {
  const int q = n / parts, r = n % parts;
  return q * i + (i < r ? i : r);
}

template <class Kernel>
void allow_dynamic_smem(Kernel* kernel, size_t bytes) {
  if (bytes <= 48 * 1024) return;
  int dev = 0, most = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&most, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  LOOM_CHECK(bytes <= size_t(most), "a kernel needs ", bytes, " bytes of shared memory a block; device ", dev,
             " allows ", most);
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

template <class F>
void with_bool(bool flag, F&& f) {
  if (flag)
    f(std::true_type{});
  else
    f(std::false_type{});
}

template <auto... kValues, class T, class F>
void with_value(const char* name, T v, F&& f) {
  const bool found = ((v == kValues ? (f(std::integral_constant<T, kValues>{}), true) : false) || ...);
  LOOM_CHECK(found, name, ": no instantiation for ", static_cast<int64_t>(v));
}

}  // namespace loom
