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
//  - allow_dynamic_smem(kernel, bytes): the opt-in a kernel needs for more than 48 KiB of
//    dynamic shared memory, made at every launch (it is per device, cheap, and legal during
//    stream capture);
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
  if (bytes > 48 * 1024)
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
