// vec.cuh: small typed helpers that kernels (and tests) share, so that every kernel converts
// and moves data the same way:
//  - as_nv(p): a loom::bf16 pointer (the API's storage type, core/dtype.h) as the
//    layout-identical __nv_bfloat16 that kernels compute on;
//  - to_float / from_float<T> for float, __nv_bfloat16 and __half (round to nearest even),
//    usable in kernels, in the emulator and in plain host code;
//  - Pack128<T>: 16 bytes of T (8 bf16, 4 float), the unit of a vectorised access, with
//    load_128 / store_128 (and streaming _cs variants) for 16-byte aligned addresses,
//    store_128_global for global memory (one st.global.v4 whatever nvcc makes of store_128),
//    and load_128_partial / store_128_partial for a row's tail;
//  - map_elements(name, f, n, stream, y, x...): the elementwise kernel, written once:
//    y[i] = f(x[i]...) for i < n, over 16-byte packs (16 bytes of the narrowest type a step)
//    in a grid-stride loop when every pointer is 16-byte aligned, scalar code otherwise and
//    for the n % width tail, one wave of blocks (launch.cuh's blocks_per_sm). An elementwise
//    kernel is then its per-element functor plus one line of launch;
//    map_elements<Loads::kStreaming> reads the inputs evict-first.
// On the GPU a Pack128 access is one 128-bit instruction; a misaligned one faults. The
// emulator copies bytes and aborts on misalignment with the caller's line, so a launcher that
// picks the vector path for an unaligned row fails in CI rather than on the device.
#pragma once
#include "cuda_compat.h"
#include "launch.cuh"

#include <string.h>

#include <cstdint>

#include "core/dtype.h"

namespace loom {

static_assert(sizeof(bf16) == sizeof(__nv_bfloat16) && alignof(bf16) == alignof(__nv_bfloat16),
              "loom::bf16 must be layout-compatible with __nv_bfloat16");
LOOM_HD inline const __nv_bfloat16* as_nv(const bf16* p) { return reinterpret_cast<const __nv_bfloat16*>(p); }
LOOM_HD inline __nv_bfloat16* as_nv(bf16* p) { return reinterpret_cast<__nv_bfloat16*>(p); }

LOOM_HD inline float to_float(float x) { return x; }
LOOM_HD inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
LOOM_HD inline float to_float(__half x) { return __half2float(x); }

template <class T>
LOOM_HD inline T from_float(float x);
template <>
LOOM_HD inline float from_float<float>(float x) {
  return x;
}
template <>
LOOM_HD inline __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
LOOM_HD inline __half from_float<__half>(float x) {
  return __float2half_rn(x);
}

template <class T>
struct alignas(16) Pack128 {
  static constexpr int kSize = 16 / int(sizeof(T));
  T v[kSize];
  LOOM_HD T& operator[](int i) { return v[i]; }
  LOOM_HD const T& operator[](int i) const { return v[i]; }
};
static_assert(sizeof(Pack128<float>) == 16 && sizeof(Pack128<__nv_bfloat16>) == 16);

LOOM_HD inline bool is_aligned_16(const void* p) { return (reinterpret_cast<size_t>(p) & 15u) == 0; }

#if LOOM_DEVICE_CODE

#if LOOM_SIMT_EMULATION
namespace detail {
inline void check_aligned_16(const void* p, const char* what, const std::source_location& loc) {
  if (!is_aligned_16(p))
    ::loom::simt::detail::fail("%s at %s:%u: address %p is not 16-byte aligned (the GPU faults: misaligned address)",
                               what, loc.file_name(), loc.line(), p);
}
}  // namespace detail

namespace detail {
template <class T>
inline Pack128<T> load_pack(const T* p, const char* what, const std::source_location& loc) {
  check_aligned_16(p, what, loc);
  Pack128<T> r;
  memcpy(static_cast<void*>(&r), p, 16);
  return r;
}
template <class T>
inline void store_pack(T* p, const Pack128<T>& v, const char* what, const std::source_location& loc) {
  check_aligned_16(p, what, loc);
  memcpy(static_cast<void*>(p), &v, 16);
}
}  // namespace detail

// No caches here: the variants differ only in the name a misalignment report gives.
using SrcLoc = std::source_location;
template <class T>
inline Pack128<T> load_128(const T* p, SrcLoc loc = SrcLoc::current()) { return detail::load_pack(p, "load_128", loc); }
template <class T>
inline Pack128<T> load_128_cs(const T* p, SrcLoc loc = SrcLoc::current()) {
  return detail::load_pack(p, "load_128_cs", loc);
}
template <class T>
inline void store_128(T* p, const Pack128<T>& v, SrcLoc loc = SrcLoc::current()) {
  detail::store_pack(p, v, "store_128", loc);
}
template <class T>
inline void store_128_cs(T* p, const Pack128<T>& v, SrcLoc loc = SrcLoc::current()) {
  detail::store_pack(p, v, "store_128_cs", loc);
}
template <class T>
inline void store_128_global(T* p, const Pack128<T>& v, SrcLoc loc = SrcLoc::current()) {
  detail::store_pack(p, v, "store_128_global", loc);
}
#else
// One 128-bit access; the memcpy between int4 and the pack becomes register moves.
template <class T>
__device__ __forceinline__ Pack128<T> load_128(const T* p) {
  const int4 bits = *reinterpret_cast<const int4*>(p);
  Pack128<T> r;
  memcpy(static_cast<void*>(&r), &bits, 16);
  return r;
}
// Streaming (evict-first) variants for data read or written once, so it does not push
// reused data out of L2.
template <class T>
__device__ __forceinline__ Pack128<T> load_128_cs(const T* p) {
  const int4 bits = __ldcs(reinterpret_cast<const int4*>(p));
  Pack128<T> r;
  memcpy(static_cast<void*>(&r), &bits, 16);
  return r;
}
template <class T>
__device__ __forceinline__ void store_128(T* p, const Pack128<T>& v) {
  int4 bits;
  memcpy(&bits, &v, 16);
  *reinterpret_cast<int4*>(p) = bits;
}
template <class T>
__device__ __forceinline__ void store_128_cs(T* p, const Pack128<T>& v) {
  int4 bits;
  memcpy(&bits, &v, 16);
  __stcs(reinterpret_cast<int4*>(p), bits);
}
// Global memory only. nvcc 13 splits store_128's plain int4 store into four 4-byte stores in
// some kernels (seen in their PTX); __stwb is an inline-asm st.global.wb.v4 (the default
// caching), which stays one instruction, as the asm-backed _cs variants do.
template <class T>
__device__ __forceinline__ void store_128_global(T* p, const Pack128<T>& v) {
  int4 bits;
  memcpy(&bits, &v, 16);
  __stwb(reinterpret_cast<int4*>(p), bits);
}
#endif

// Scalar fallbacks for the last n < kSize elements of a row: element i of the pack comes
// from p[i] for i < n and is `fill` beyond, and only p[0..n) is written back.
template <class T>
__device__ __forceinline__ Pack128<T> load_128_partial(const T* p, int n, T fill) {
  Pack128<T> r;
#pragma unroll
  for (int i = 0; i < Pack128<T>::kSize; ++i) r[i] = i < n ? p[i] : fill;
  return r;
}
template <class T>
__device__ __forceinline__ void store_128_partial(T* p, const Pack128<T>& v, int n) {
#pragma unroll
  for (int i = 0; i < Pack128<T>::kSize; ++i)
    if (i < n) p[i] = v[i];
}

// ---- elementwise map -------------------------------------------------------------------

enum class Loads { kCached, kStreaming };

namespace detail {

constexpr int kMapThreads = 256;
static_assert(valid_block(kMapThreads));

// Elements a vector step handles: 16 bytes of the narrowest type, so that every operand moves
// in whole 16-byte packs (8 bf16 in, 8 f32 out: one pack in, two out).
template <class... T>
constexpr int map_width() {
  size_t narrowest = 16;
  ((narrowest = sizeof(T) < narrowest ? sizeof(T) : narrowest), ...);
  return int(16 / narrowest);
}

// N elements of T as whole packs.
template <class T, int N>
struct MapVec {
  static constexpr int kPacks = N * int(sizeof(T)) / 16;
  static_assert(kPacks * 16 == N * int(sizeof(T)), "a map step is whole 16-byte packs of every operand");
  Pack128<T> p[kPacks];
  __device__ __forceinline__ T operator[](int k) const { return p[k / Pack128<T>::kSize][k % Pack128<T>::kSize]; }
  __device__ __forceinline__ T& operator[](int k) { return p[k / Pack128<T>::kSize][k % Pack128<T>::kSize]; }
};

template <int N, bool kStream, class T>
__device__ __forceinline__ MapVec<T, N> map_load(const T* x) {
  MapVec<T, N> v;
#pragma unroll
  for (int q = 0; q < MapVec<T, N>::kPacks; ++q)
    v.p[q] = kStream ? load_128_cs(x + q * Pack128<T>::kSize) : load_128(x + q * Pack128<T>::kSize);
  return v;
}

template <int N, class F, class Out, class... In>
__device__ __forceinline__ void map_step(const F& f, Out* y, const MapVec<In, N>&... x) {
  MapVec<Out, N> out;
#pragma unroll
  for (int k = 0; k < N; ++k) out[k] = f(x[k]...);
#pragma unroll
  for (int q = 0; q < MapVec<Out, N>::kPacks; ++q) store_128_global(y + q * Pack128<Out>::kSize, out.p[q]);
}

// y may alias an input (in-place updates): every element is read, then written, by the same
// thread, so the pointers are not __restrict__.
template <class F, bool kVector, bool kStream, class Out, class... In>
static __global__ void __launch_bounds__(kMapThreads) map_kernel(F f, Out* y, int64_t n, const In*... x) {
  constexpr int N = map_width<Out, In...>();
  const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t scalar_from = 0;
  if constexpr (kVector) {
    const int64_t steps = n / N;
    for (int64_t s = first; s < steps; s += stride) map_step<N>(f, y + s * N, map_load<N, kStream>(x + s * N)...);
    scalar_from = steps * N;
  }
  for (int64_t i = scalar_from + first; i < n; i += stride) y[i] = f(x[i]...);
}

}  // namespace detail

// F: a functor with `__device__ Out operator()(In...) const`, passed to the kernel by value.
// A thread a vector step (or element, on the scalar path), at most one wave of blocks.
template <Loads kLoads = Loads::kCached, class F, class Out, class... In>
static void map_elements(const char* name, F f, int64_t n, cudaStream_t stream, Out* y, const In*... x) {
  LOOM_CHECK(n >= 0, name, ": n = ", n);
  if (n == 0) return;  // a grid of zero blocks would be a launch error
  LOOM_CHECK(y && (x && ...), name, ": null pointer");
  using detail::kMapThreads, detail::map_kernel;
  constexpr int N = detail::map_width<Out, In...>();
  constexpr bool kStream = kLoads == Loads::kStreaming;
  // One wave of the kernel as compiled (its registers depend on f): the grid-stride loop does
  // the rest.
  if (is_aligned_16(y) && (is_aligned_16(x) && ...)) {
    auto* kernel = map_kernel<F, true, kStream, Out, In...>;
    const int grid = grid_for(ceil_div(n, N), kMapThreads, blocks_per_sm(kernel, kMapThreads, 0));
    LOOM_LAUNCH_AS(name, kernel, grid, kMapThreads, 0, stream, f, y, n, x...);
  } else {
    auto* kernel = map_kernel<F, false, kStream, Out, In...>;
    const int grid = grid_for(n, kMapThreads, blocks_per_sm(kernel, kMapThreads, 0));
    LOOM_LAUNCH_AS(name, kernel, grid, kMapThreads, 0, stream, f, y, n, x...);
  }
}

#endif  // LOOM_DEVICE_CODE

}  // namespace loom
