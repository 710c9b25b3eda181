// vec.cuh: small typed helpers that kernels (and tests) share, so that every kernel converts
// and moves data the same way:
//  - to_float / from_float<T> for float, __nv_bfloat16 and __half (round to nearest even),
//    usable in kernels, in the emulator and in plain host code;
//  - Pack128<T>: 16 bytes of T (8 bf16, 4 float), the unit of a vectorised access, with
//    load_128 / store_128 (and streaming _cs variants) for 16-byte aligned addresses and
//    load_128_partial / store_128_partial for a row's tail.
// On the GPU a Pack128 access is one 128-bit instruction; a misaligned one faults. The
// emulator copies bytes and aborts on misalignment with the caller's line, so a launcher that
// picks the vector path for an unaligned row fails in CI rather than on the device.
#pragma once
#include "cuda_compat.h"

#include <string.h>

namespace loom {

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

template <class T>
inline Pack128<T> load_128(const T* p, std::source_location loc = std::source_location::current()) {
  detail::check_aligned_16(p, "load_128", loc);
  Pack128<T> r;
  memcpy(static_cast<void*>(&r), p, 16);
  return r;
}
template <class T>
inline Pack128<T> load_128_cs(const T* p, std::source_location loc = std::source_location::current()) {
  detail::check_aligned_16(p, "load_128_cs", loc);
  Pack128<T> r;
  memcpy(static_cast<void*>(&r), p, 16);
  return r;
}
template <class T>
inline void store_128(T* p, const Pack128<T>& v, std::source_location loc = std::source_location::current()) {
  detail::check_aligned_16(p, "store_128", loc);
  memcpy(static_cast<void*>(p), &v, 16);
}
template <class T>
inline void store_128_cs(T* p, const Pack128<T>& v, std::source_location loc = std::source_location::current()) {
  detail::check_aligned_16(p, "store_128_cs", loc);
  memcpy(static_cast<void*>(p), &v, 16);
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

#endif  // LOOM_DEVICE_CODE

}  // namespace loom
