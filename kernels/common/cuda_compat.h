// cuda_compat.h: the one CUDA include of every kernel source (<family>.cu) and kernel test.
// It picks real CUDA under nvcc and the SIMT emulator under g++, so that a kernel family's
// kernels, launchers and tests are written once and run three ways (DESIGN.md §4).
//
// Modes, chosen by the compiler and one define:
//  - nvcc (__CUDACC__): the real runtime; LOOM_LAUNCH is <<<...>>> and its check.
//  - host code compiled by g++ that links the real runtime (the "gpu" test binaries, the
//    CUDA backend): define LOOM_CUDA_RUNTIME_HOST. The real runtime API only; LOOM_LAUNCH
//    does not exist there, since kernels and their launches live in .cu files.
//  - anything else: the emulator (simt_emu.h) plus a host API shim below in which "device"
//    memory is host memory and every call is synchronous.
//
// What a source may rely on in every mode:
//  - LOOM_SIMT_EMULATION is 1 under the emulator, 0 otherwise. Keep tensor-core and inline
//    PTX paths behind `#if !LOOM_SIMT_EMULATION` with a SIMT path of the same tiling beside.
//  - LOOM_LAUNCH(kernel, grid, block, smem, stream, args...): check the grid and the block
//    against the hardware limits (grid x 1..2^31-1, y and z 1..65535; 1..1024 threads, z <= 64;
//    an integer grid is checked before it narrows to 32 bits), launch, then check the launch
//    (cudaGetLastError) and abort through LOOM_CHECK's family with the kernel's name, the
//    launch's file:line and the CUDA error; wrap a template-id in parentheses, e.g.
//    LOOM_LAUNCH((softmax_kernel<128, float>), rows, 128, 0, stream, ...).
//    LOOM_LAUNCH_AS(name, kernel, ...) names the launch itself (a generic kernel launched on
//    behalf of several launchers). kernels/common/launch.cuh has the grid helpers.
//  - LOOM_DYNAMIC_SMEM(T, name) inside a kernel: `T* name` pointing at the dynamic shared
//    memory (`extern __shared__` cannot be emulated).
//  - LOOM_HD: __host__ __device__ for helpers that host code and kernels both call.
//  - LOOM_DEVICE_CODE is 1 where kernels can be compiled (nvcc, emulator), 0 in host code
//    against the real runtime: device-only helpers hide behind it.
//  - LOOM_SANITIZED is 1 in ThreadSanitizer / AddressSanitizer builds: tests shrink shapes.
//  - The sm_90 asynchronous instructions (mbarrier, TMA, wgmma...) are in hopper.cuh, included
//    by the kernels that use them: PTX under nvcc, the emulator's models (hopper_emu.h) here.
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "core/check.h"

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define LOOM_SANITIZED 1
#else
#define LOOM_SANITIZED 0
#endif

#if defined(__CUDACC__)
// ---- nvcc ----------------------------------------------------------------------------------
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#define LOOM_SIMT_EMULATION 0
#define LOOM_DEVICE_CODE 1
#define LOOM_HD __host__ __device__
#define LOOM_LAUNCH_AS(name, kernel, grid, block, smem, stream, ...)                                 \
  do {                                                                                              \
    const dim3 loom_grid_ = ::loom::detail::launch_dims((name), "grid", (grid), __FILE__, __LINE__);   \
    const dim3 loom_block_ = ::loom::detail::launch_dims((name), "block", (block), __FILE__, __LINE__); \
    kernel<<<loom_grid_, loom_block_, (smem), (stream)>>>(__VA_ARGS__);                                \
    ::loom::detail::check_launch((name), __FILE__, __LINE__);                                       \
  } while (0)
// Every kernel of a translation unit shares this one declaration, hence one name and one
// alignment.
#define LOOM_DYNAMIC_SMEM(T, name)                                         \
  extern __shared__ __align__(16) unsigned char loom_dynamic_smem_bytes[]; \
  T* name = reinterpret_cast<T*>(loom_dynamic_smem_bytes)

#elif defined(LOOM_CUDA_RUNTIME_HOST)
// ---- g++ host code against the real runtime --------------------------------------------------
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#define LOOM_SIMT_EMULATION 0
#define LOOM_DEVICE_CODE 0
// Empty: for g++, cuda_runtime.h spells __host__ as an attribute that g++ warns about.
#define LOOM_HD

#else
// ---- g++ with the SIMT emulator ----------------------------------------------------------------
#include "simt_emu.h"

#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#define LOOM_DEVICE_CODE 1
#define LOOM_HD
#define LOOM_LAUNCH_AS(name, kernel, grid, block, smem, stream, ...)                                  \
  do {                                                                                               \
    const dim3 loom_grid_ = ::loom::detail::launch_dims((name), "grid", (grid), __FILE__, __LINE__);    \
    const dim3 loom_block_ = ::loom::detail::launch_dims((name), "block", (block), __FILE__, __LINE__); \
    ::loom::simt::launch((kernel), loom_grid_, loom_block_, static_cast<size_t>(smem), (stream)       \
                         __VA_OPT__(, ) __VA_ARGS__);                                                \
    ::loom::detail::check_launch((name), __FILE__, __LINE__);                                        \
  } while (0)
#define LOOM_DYNAMIC_SMEM(T, name) T* name = reinterpret_cast<T*>(::loom::simt::dynamic_smem())

// Streams and events are handles only: every call below completes before it returns.
struct CUstream_st {
  unsigned flags;
};
struct CUevent_st {
  std::chrono::steady_clock::time_point when;
};

namespace loom::simt::host {
inline thread_local cudaError_t t_last_error = cudaSuccess;

// Every failing call says why on stderr (the real runtime only returns a code), and the code
// is also what cudaGetLastError reports next, as with the real runtime.
__attribute__((format(printf, 2, 3))) inline cudaError_t error(cudaError_t e, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  ::loom::simt::detail::vreport(fmt, ap);
  va_end(ap);
  t_last_error = e;
  return e;
}

// True when [p, p + n) lies inside one allocation that kernels see as device memory.
inline bool in_device_memory(const void* p, size_t n) {
  auto r = ::loom::simt::detail::find_region(p, n);
  return r && r->kind != ::loom::simt::detail::MemKind::kHostPinned;
}
inline bool is_device_pointer(const void* p) {
  auto r = ::loom::simt::detail::find_region(p, 0);
  return r && r->kind == ::loom::simt::detail::MemKind::kDevice;
}

inline cudaError_t alloc(void** p, size_t n, ::loom::simt::detail::MemKind kind, const char* what) {
  if (!p) return error(cudaErrorInvalidValue, "%s: null output pointer", what);
  if (n == 0) {  // as the real runtime does: success, and a null pointer
    *p = nullptr;
    return cudaSuccess;
  }
  *p = ::loom::simt::device_alloc(n, kind);
  return *p ? cudaSuccess : error(cudaErrorMemoryAllocation, "%s: out of memory (%zu bytes)", what, n);
}

inline const char* kind_name(cudaMemcpyKind k) {
  switch (k) {
    case cudaMemcpyHostToHost: return "HostToHost";
    case cudaMemcpyHostToDevice: return "HostToDevice";
    case cudaMemcpyDeviceToHost: return "DeviceToHost";
    case cudaMemcpyDeviceToDevice: return "DeviceToDevice";
    default: return "Default";
  }
}

inline int sm_count() {
  const int n = std::atoi(::loom::simt::detail::env_or("LOOM_SIMT_SM_COUNT", "4"));
  return n > 0 ? n : 4;
}
}  // namespace loom::simt::host

// ---- the runtime API subset launchers and tests use; signatures as in cuda_runtime_api.h.

template <class T>
inline cudaError_t cudaMalloc(T** p, size_t n) {
  return ::loom::simt::host::alloc(reinterpret_cast<void**>(p), n, ::loom::simt::detail::MemKind::kDevice,
                                   "cudaMalloc");
}
template <class T>
inline cudaError_t cudaMallocAsync(T** p, size_t n, cudaStream_t = 0) {
  return cudaMalloc(p, n);
}
template <class T>
inline cudaError_t cudaMallocManaged(T** p, size_t n, unsigned = cudaMemAttachGlobal) {
  return ::loom::simt::host::alloc(reinterpret_cast<void**>(p), n, ::loom::simt::detail::MemKind::kManaged,
                                   "cudaMallocManaged");
}
template <class T>
inline cudaError_t cudaMallocHost(T** p, size_t n) {
  return ::loom::simt::host::alloc(reinterpret_cast<void**>(p), n, ::loom::simt::detail::MemKind::kHostPinned,
                                   "cudaMallocHost");
}
template <class T>
inline cudaError_t cudaHostAlloc(T** p, size_t n, unsigned) {
  return cudaMallocHost(p, n);
}
inline cudaError_t cudaFree(void* p) {
  using ::loom::simt::detail::MemKind;
  if (!p || ::loom::simt::device_free(p, MemKind::kDevice) || ::loom::simt::device_free(p, MemKind::kManaged))
    return cudaSuccess;
  return ::loom::simt::host::error(cudaErrorInvalidValue,
                                   "cudaFree(%p): not the start of a live cudaMalloc allocation (double free?)", p);
}
inline cudaError_t cudaFreeAsync(void* p, cudaStream_t = 0) { return cudaFree(p); }
inline cudaError_t cudaFreeHost(void* p) {
  if (!p || ::loom::simt::device_free(p, ::loom::simt::detail::MemKind::kHostPinned)) return cudaSuccess;
  return ::loom::simt::host::error(cudaErrorInvalidValue, "cudaFreeHost(%p): not a live cudaMallocHost allocation", p);
}

// The direction must match the pointers and the device side must lie inside one allocation;
// the real runtime fails (or corrupts memory) otherwise.
inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  namespace h = ::loom::simt::host;
  if (n == 0) return cudaSuccess;
  const bool dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  const bool dst_host = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyHostToHost;
  const bool src_host = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyHostToHost;
  if (dst_dev && !h::in_device_memory(dst, n))
    return h::error(cudaErrorInvalidValue, "cudaMemcpy(%s): destination [%p, +%zu) is not inside one device allocation",
                    h::kind_name(kind), dst, n);
  if (src_dev && !h::in_device_memory(src, n))
    return h::error(cudaErrorInvalidValue, "cudaMemcpy(%s): source [%p, +%zu) is not inside one device allocation",
                    h::kind_name(kind), src, n);
  if ((dst_host && h::is_device_pointer(dst)) || (src_host && h::is_device_pointer(src)))
    return h::error(cudaErrorInvalidValue, "cudaMemcpy(%s): a device pointer is on the host side of the copy",
                    h::kind_name(kind));
  if (!dst || !src) return h::error(cudaErrorInvalidValue, "cudaMemcpy: null pointer");
  std::memcpy(dst, src, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t = 0) {
  return cudaMemcpy(dst, src, n, kind);
}
inline cudaError_t cudaMemset(void* dst, int value, size_t n) {
  if (n == 0) return cudaSuccess;
  if (!::loom::simt::host::in_device_memory(dst, n))
    return ::loom::simt::host::error(cudaErrorInvalidValue, "cudaMemset: [%p, +%zu) is not inside one device allocation",
                                     dst, n);
  std::memset(dst, value, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* dst, int value, size_t n, cudaStream_t = 0) { return cudaMemset(dst, value, n); }
template <class T>
inline cudaError_t cudaMemcpyToSymbol(const T& symbol, const void* src, size_t n, size_t offset = 0,
                                      cudaMemcpyKind = cudaMemcpyHostToDevice) {
  if (offset + n > sizeof(T))
    return ::loom::simt::host::error(cudaErrorInvalidValue, "cudaMemcpyToSymbol: %zu + %zu bytes > symbol size %zu",
                                     offset, n, sizeof(T));
  std::memcpy(reinterpret_cast<char*>(const_cast<T*>(&symbol)) + offset, src, n);
  return cudaSuccess;
}
template <class T>
inline cudaError_t cudaMemcpyFromSymbol(void* dst, const T& symbol, size_t n, size_t offset = 0,
                                        cudaMemcpyKind = cudaMemcpyDeviceToHost) {
  if (offset + n > sizeof(T))
    return ::loom::simt::host::error(cudaErrorInvalidValue, "cudaMemcpyFromSymbol: %zu + %zu bytes > symbol size %zu",
                                     offset, n, sizeof(T));
  std::memcpy(dst, reinterpret_cast<const char*>(&symbol) + offset, n);
  return cudaSuccess;
}

inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaDeviceReset() { return cudaSuccess; }
inline cudaError_t cudaGetLastError() {
  const cudaError_t e = ::loom::simt::host::t_last_error;
  ::loom::simt::host::t_last_error = cudaSuccess;
  return e;
}
inline cudaError_t cudaPeekAtLastError() { return ::loom::simt::host::t_last_error; }
inline const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    default: return "cudaErrorUnknown";
  }
}
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    default: return "unknown error (emulated runtime)";
  }
}

// One emulated device, described as an sm_90 part except for its SM count: launchers that
// size grids by SM count then launch few blocks, which keeps emulation fast
// (LOOM_SIMT_SM_COUNT overrides it, default 4).
inline cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
inline cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int d) {
  return d == 0 ? cudaSuccess : ::loom::simt::host::error(cudaErrorInvalidDevice, "cudaSetDevice(%d): one emulated device", d);
}
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr attr, int device) {
  if (device != 0) return ::loom::simt::host::error(cudaErrorInvalidDevice, "cudaDeviceGetAttribute: device %d", device);
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *v = ::loom::simt::host::sm_count(); break;
    case cudaDevAttrMaxThreadsPerBlock: *v = 1024; break;
    case cudaDevAttrWarpSize: *v = 32; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *v = int(::loom::simt::kDefaultDynamicSmem); break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = int(::loom::simt::kMaxDynamicSmem); break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *v = 233472; break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *v = 2048; break;
    case cudaDevAttrMaxRegistersPerBlock: *v = 65536; break;
    case cudaDevAttrL2CacheSize: *v = 50 * 1024 * 1024; break;
    case cudaDevAttrComputeCapabilityMajor: *v = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *v = 0; break;
    case cudaDevAttrMaxBlockDimX: *v = 1024; break;
    case cudaDevAttrMaxBlockDimY: *v = 1024; break;
    case cudaDevAttrMaxBlockDimZ: *v = 64; break;
    case cudaDevAttrMaxGridDimX: *v = 0x7fffffff; break;
    case cudaDevAttrMaxGridDimY: *v = 65535; break;
    case cudaDevAttrMaxGridDimZ: *v = 65535; break;
    default:
      return ::loom::simt::host::error(cudaErrorInvalidValue, "cudaDeviceGetAttribute: attribute %d not emulated",
                                       int(attr));
  }
  return cudaSuccess;
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
  if (device != 0) return ::loom::simt::host::error(cudaErrorInvalidDevice, "cudaGetDeviceProperties: device %d", device);
  *p = cudaDeviceProp{};
  std::snprintf(p->name, sizeof p->name, "loom SIMT emulator");
  p->totalGlobalMem = size_t{16} << 30;
  p->sharedMemPerBlock = ::loom::simt::kDefaultDynamicSmem;
  p->sharedMemPerBlockOptin = ::loom::simt::kMaxDynamicSmem;
  p->sharedMemPerMultiprocessor = 233472;
  p->regsPerBlock = 65536;
  p->warpSize = 32;
  p->maxThreadsPerBlock = 1024;
  p->maxThreadsDim[0] = 1024;
  p->maxThreadsDim[1] = 1024;
  p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 0x7fffffff;
  p->maxGridSize[1] = 65535;
  p->maxGridSize[2] = 65535;
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = ::loom::simt::host::sm_count();
  p->maxThreadsPerMultiProcessor = 2048;
  p->l2CacheSize = 50 * 1024 * 1024;
  return cudaSuccess;
}
inline cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  *free_bytes = size_t{16} << 30;
  *total_bytes = size_t{16} << 30;
  return cudaSuccess;
}

// The occupancy calculator, with what the emulator knows of a kernel: an SM of 2048 threads,
// 32 block slots and 228 KiB of shared memory (1 KiB of it reserved per block), as on sm_90;
// registers are not modelled (the emulator compiles no register allocation), so a
// kernel whose registers limit it on a GPU gets more blocks here. Launchers that size a
// grid-stride grid from this answer then get the wave that threads and shared memory allow:
// 8 blocks of 256 threads an SM, 4 SMs by default, which tests exceed to go round the loops.
template <class T>
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, T* kernel, int threads, size_t smem) {
  if (!n || !kernel)
    return ::loom::simt::host::error(cudaErrorInvalidValue, "cudaOccupancyMaxActiveBlocksPerMultiprocessor: null pointer");
  if (threads <= 0 || unsigned(threads) > ::loom::simt::kMaxThreadsPerBlock)
    return ::loom::simt::host::error(cudaErrorInvalidValue,
                                     "cudaOccupancyMaxActiveBlocksPerMultiprocessor: block of %d threads", threads);
  constexpr size_t kSmemPerSm = 233472, kReservedPerBlock = 1024;
  const int by_threads = 2048 / ((threads + 31) / 32 * 32);
  const int by_smem = int(kSmemPerSm / (smem + kReservedPerBlock));
  *n = std::min({by_threads, 32, by_smem});
  return cudaSuccess;
}

// Opt-in to more than 48 KiB of dynamic shared memory, checked at launch as the GPU does.
template <class T>
inline cudaError_t cudaFuncSetAttribute(T* entry, cudaFuncAttribute attr, int value) {
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || size_t(value) > ::loom::simt::kMaxDynamicSmem)
      return ::loom::simt::host::error(cudaErrorInvalidValue, "cudaFuncSetAttribute: %d bytes of dynamic smem > %zu",
                                       value, ::loom::simt::kMaxDynamicSmem);
    std::lock_guard<std::mutex> lk(::loom::simt::smem_optin_mu());
    ::loom::simt::smem_optin()[reinterpret_cast<const void*>(entry)] = size_t(value);
  }
  return cudaSuccess;
}

// Stream and event handles. cudaStreamLegacy/PerThread are small constants, never freed.
inline cudaError_t cudaStreamCreate(cudaStream_t* s) {
  *s = new CUstream_st{0};
  return cudaSuccess;
}
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags) {
  *s = new CUstream_st{flags};
  return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t s) {
  if (reinterpret_cast<uintptr_t>(s) > 0x10) delete s;
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaStreamQuery(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = new CUevent_st{std::chrono::steady_clock::now()};
  return cudaSuccess;
}
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) { return cudaEventCreate(e); }
inline cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete e;
  return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t = 0) {
  e->when = std::chrono::steady_clock::now();
  return cudaSuccess;
}
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventQuery(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  *ms = std::chrono::duration<float, std::milli>(end->when - start->when).count();
  return cudaSuccess;
}
inline cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned = 0) { return cudaSuccess; }

#endif

#if LOOM_DEVICE_CODE
#define LOOM_LAUNCH(kernel, grid, block, smem, stream, ...) \
  LOOM_LAUNCH_AS(#kernel, kernel, grid, block, smem, stream __VA_OPT__(, ) __VA_ARGS__)

namespace loom::detail {
// The grid or block of a launch, checked against the limits of every device since sm_30 before
// the launch, so that a shape too large for the grid fails with the kernel's name and the
// numbers (the runtime's cudaErrorInvalidConfiguration says neither). An integer is a 1-D
// grid or block, checked before it narrows to the 32-bit dim3.
inline dim3 launch_dims(const char* name, const char* what, dim3 d, const char* file, int line) {
  const bool grid = what[0] == 'g';
  const uint64_t threads = uint64_t(d.x) * d.y * d.z;
  const bool ok = grid ? d.x >= 1 && d.x <= 0x7fffffffu && d.y >= 1 && d.y <= 65535 && d.z >= 1 && d.z <= 65535
                       : d.x >= 1 && d.y >= 1 && d.z >= 1 && d.z <= 64 && threads <= 1024;
  if (!ok)
    check_fail("kernel launch", file, line,
               concat(name, ": ", what, " ", d.x, "x", d.y, "x", d.z, " outside the device's limits (",
                      grid ? "x 1..2^31-1, y and z 1..65535" : "1..1024 threads, z <= 64", ")"));
  return d;
}
template <class I>
  requires std::is_integral_v<I>
inline dim3 launch_dims(const char* name, const char* what, I n, const char* file, int line) {
  const int64_t v = static_cast<int64_t>(n);
  const int64_t most = what[0] == 'g' ? 0x7fffffff : 1024;
  if (v < 1 || v > most)
    check_fail("kernel launch", file, line, concat(name, ": ", what, " of ", v, " outside the device's limits (1..", most, ")"));
  return dim3(unsigned(v));
}

// The check in every LOOM_LAUNCH. A launch the runtime refuses (grid or block size, shared
// memory, registers) fails at once and says so through cudaGetLastError, so the launcher that
// made it is named, not whatever synchronises next. An earlier kernel's asynchronous fault or
// an unchecked failing runtime call can surface here too: the name says where it was noticed.
// The emulator reports what it refuses itself, with the kernel's line.
inline void check_launch(const char* name, const char* file, int line) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    check_fail("kernel launch", file, line, concat(name, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")"));
}
}  // namespace loom::detail
#endif
