// simt_emu.h: loom's SIMT emulator. Runs CUDA __global__ kernels on the CPU, compiled by
// g++, so that every kernel is checked in CI without a GPU, and checked under
// ThreadSanitizer and AddressSanitizer, which cannot look inside a real GPU.
//
// Include it through kernels/common/cuda_compat.h, never directly. docs/emulator.md has the
// user's guide; this comment is the model in brief.
//  - One OS thread per CUDA thread: that is what lets TSan see a missing __syncthreads as a
//    data race and ASan see an out-of-bounds index, at the kernel's own source line.
//  - The blocks of a grid run one after another on the same blockDim threads, and launches
//    are serialised process-wide; both together make `__shared__` as `static` storage exact.
//    The OS threads are kept in a pool between launches (starting them was most of a
//    launch's cost, under TSan above all).
//  - __syncthreads is a per-block barrier; a thread that returns drops out of it, as exited
//    threads do on sm_70+. Threads must meet at the same source line (else: abort).
//  - Warp collectives (shuffles, votes, match, reduce, __syncwarp) rendezvous per warp with
//    PTX's membermask rule: each lane waits until every non-exited lane named in its mask
//    has executed the same collective with the same mask. Partial masks and disjoint groups
//    in divergent branches therefore work; reading a lane that exited, or that is not in the
//    mask, returns poison (all bits set: NaN, -1).
//  - Under ThreadSanitizer a shuffle, vote, match or reduce orders no memory (as on the GPU,
//    where only __syncwarp and __syncthreads do), so a race "protected" by a shuffle is
//    reported; the emulator's own bookkeeping is hidden from TSan.
//  - Waits that can never end are reported at once with both source lines (a warp op naming
//    a lane that waits in __syncthreads; two warp ops waiting for each other); any other
//    stall is caught by a watchdog (LOOM_SIMT_TIMEOUT_S, default 30 s) that prints where
//    every thread is.
//  - Dynamic shared memory and cudaMalloc'd memory start as 0xFF bytes (NaN), so reading
//    before writing shows up in the results.
//  - Instruction families most kernels never use keep their per-block state in a
//    BlockExtension made on first use (the Hopper models of hopper_emu.h), so launches
//    without them pay nothing.
#pragma once
#if defined(__CUDACC__)
#error "simt_emu.h is for host compilers; under nvcc cuda_compat.h uses the real CUDA runtime"
#endif

// The toolkit's plain-C++ headers first: dim3/uint3/float4, the runtime's enums and structs
// (cudaError_t, cudaStream_t, cudaDeviceProp...), and __half / __nv_bfloat16, which work in
// host code. They define __shared__, __device__... for host compilers (as ignored
// attributes), so these must come before the redefinitions below.
//
// The runtime API itself (cuda_runtime_api.h, which vector_functions.h would pull in) is
// kept out by defining its include guards first: its extern "C" declarations would clash
// with the emulated API that cuda_compat.h defines, and a later #include <cuda_runtime.h> in
// a kernel source becomes a no-op.
#ifndef __CUDA_RUNTIME_H__
#define __CUDA_RUNTIME_H__
#endif
#ifndef __CUDA_RUNTIME_API_H__
#define __CUDA_RUNTIME_API_H__
#endif
#include <builtin_types.h>
#include <vector_types.h>
#include <vector_functions.h>
#include <driver_types.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <bit>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <semaphore>
#include <source_location>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>
#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#endif
#include <sched.h>
#include <unistd.h>

#if defined(__SANITIZE_THREAD__)
// libtsan's annotation entry points (the dynamic-annotations API and tsan_interface.h).
extern "C" {
void AnnotateIgnoreSyncBegin(const char* file, int line);
void AnnotateIgnoreSyncEnd(const char* file, int line);
void AnnotateIgnoreReadsBegin(const char* file, int line);
void AnnotateIgnoreReadsEnd(const char* file, int line);
void AnnotateIgnoreWritesBegin(const char* file, int line);
void AnnotateIgnoreWritesEnd(const char* file, int line);
void __tsan_acquire(void* addr);
void __tsan_release(void* addr);
}
#endif

#define LOOM_SIMT_EMULATION 1

#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __shared__
#undef __constant__
#undef __managed__
#undef __align__
#undef __launch_bounds__
#undef __grid_constant__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// `static` is exact only because blocks never run concurrently (see the header comment).
#define __shared__ static
#define __constant__
#define __managed__
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
#define __grid_constant__
// __noinline__ is left alone on purpose: libstdc++ spells __attribute__((__noinline__)), which
// a macro would break. Use __attribute__((noinline)) in kernels; nvcc accepts it too.

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;
constexpr int warpSize = 32;

namespace loom::simt {

// Device limits of an sm_90 part; launches beyond them fail on the GPU, so they fail here.
constexpr size_t kDefaultDynamicSmem = 48 * 1024;  // without cudaFuncSetAttribute opt-in
constexpr size_t kMaxDynamicSmem = 232448;          // sm_90 opt-in maximum (227 KiB)
constexpr unsigned kMaxThreadsPerBlock = 1024;

namespace detail {

// One "loom simt: ..." line on stderr.
inline void vreport(const char* fmt, va_list ap) {
  std::fputs("loom simt: ", stderr);
  std::vfprintf(stderr, fmt, ap);
  std::fputc('\n', stderr);
  std::fflush(stderr);
}

// Prints one diagnostic and aborts. The first failing thread wins; any other thread that
// fails at the same moment blocks on the mutex instead of interleaving its message.
[[noreturn]] __attribute__((format(printf, 1, 2))) inline void fail(const char* fmt, ...) {
  static std::mutex mu;
  mu.lock();
  va_list ap;
  va_start(ap, fmt);
  vreport(fmt, ap);
  va_end(ap);
  std::abort();
}

// Where threads wait for an event another thread announces. A waiter first yields its core
// a few times: with hundreds of runnable CUDA threads on a few cores, a yield hands the core
// to another of them at the price of one switch, while a sleep costs a futex call on both
// sides and a wake-up (a warp op measured several times slower that way on a 2-core VM).
// Then it sleeps on a raw futex; std::atomic::wait would spin and yield again first. The
// announcer enters the kernel only when someone sleeps. TSan sees the happens-before through
// the atomics, not the futex.
struct Gate {
  std::atomic<uint32_t> epoch{0};
  std::atomic<uint32_t> sleepers{0};

  template <class Ready>
  void wait_until(Ready ready, int yields) {
    for (int i = 0; !ready(); ++i) {
      if (i < yields) {
        sched_yield();
        continue;
      }
      // seq_cst on both sides: either open() sees a sleeper, or this load sees its epoch
      // (and the futex call returns at once).
      sleepers.fetch_add(1);
      const uint32_t e = epoch.load();
      if (!ready()) futex_wait(e);
      sleepers.fetch_sub(1);
    }
  }
  // Call after making the waiters' ready() true.
  void open() {
    epoch.fetch_add(1);
    if (sleepers.load()) futex_wake_all();
  }

 private:
  void futex_wait(uint32_t old) {
#if defined(__linux__)
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&epoch), FUTEX_WAIT_PRIVATE, old, nullptr, nullptr, 0);
#else
    epoch.wait(old);
#endif
  }
  void futex_wake_all() {
#if defined(__linux__)
    syscall(SYS_futex, reinterpret_cast<uint32_t*>(&epoch), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
#else
    epoch.notify_all();
#endif
  }
};

// Yields before sleeping (see Gate). A warp op waits for 31 lanes that are usually runnable
// already, so a few yields find it complete; a barrier waits for up to 1023 threads, where
// yielding mostly costs switches without finding the phase over.
constexpr int kWarpYields = 4;
constexpr int kBarrierYields = 0;

// The warp's lock: held for a few hundred nanoseconds. A std::mutex put the lanes that a
// completion woke together to sleep on each other; this one spins, then yields.
struct SpinLock {
  std::atomic<bool> held{false};
  void lock() {
    for (int i = 0; held.exchange(true, std::memory_order_acquire); ++i) {
      if (i < 16) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      } else {
        sched_yield();
      }
    }
  }
  void unlock() { held.store(false, std::memory_order_release); }
};

// A barrier whose phase ends when every thread still in it has arrived; a dropping thread
// counts for the current phase and leaves all later ones (an exited CUDA thread). The last
// arrival runs `done` while every other thread still waits. Arrived count, expected count
// and pending drops share one atomic word, so an arrival is one compare-exchange.
template <class Done>
class PhaseBarrier {
 public:
  PhaseBarrier(unsigned n, Done done) : state_(pack(0, n, 0)), done_(done) {}
  // Only while no thread is inside the barrier (between blocks).
  void reset(unsigned n) { state_.store(pack(0, n, 0), std::memory_order_relaxed); }
  void arrive_and_wait() { arrive(false); }
  void arrive_and_drop() { arrive(true); }

 private:
  static uint64_t pack(uint64_t arrived, uint64_t expected, uint64_t drops) {
    return arrived | expected << 16 | drops << 32;
  }
  void arrive(bool drop) {
    const uint32_t phase = phase_.load(std::memory_order_acquire);
    uint64_t old = state_.load(std::memory_order_relaxed), next;
    bool last;
    do {
      const uint64_t arrived = (old & 0xFFFF) + 1, expected = old >> 16 & 0xFFFF, drops = (old >> 32) + drop;
      last = arrived == expected;
      next = last ? pack(0, expected - drops, 0) : pack(arrived, expected, drops);
    } while (!state_.compare_exchange_weak(old, next, std::memory_order_acq_rel, std::memory_order_relaxed));
    if (last) {
      done_();
      phase_.fetch_add(1, std::memory_order_release);
      gate_.open();
    } else if (!drop) {
      gate_.wait_until([&] { return phase_.load(std::memory_order_acquire) != phase; }, kBarrierYields);
    }
  }
  std::atomic<uint64_t> state_;
  std::atomic<uint32_t> phase_{0};
  Gate gate_;
  Done done_;
};

// Within its scope this thread's synchronisation and memory accesses are invisible to TSan.
// Warp collectives meet through locks and atomics, which TSan would otherwise take as
// happens-before between the lanes, hiding races that the GPU does not order.
struct TsanHidden {
  TsanHidden() {
#if defined(__SANITIZE_THREAD__)
    AnnotateIgnoreSyncBegin(__FILE__, __LINE__);
    AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
    AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
#endif
  }
  ~TsanHidden() {
#if defined(__SANITIZE_THREAD__)
    AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
    AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
    AnnotateIgnoreSyncEnd(__FILE__, __LINE__);
#endif
  }
  TsanHidden(const TsanHidden&) = delete;
  TsanHidden& operator=(const TsanHidden&) = delete;
};
inline void tsan_release(void* addr) {
#if defined(__SANITIZE_THREAD__)
  __tsan_release(addr);
#else
  (void)addr;
#endif
}
inline void tsan_acquire(void* addr) {
#if defined(__SANITIZE_THREAD__)
  __tsan_acquire(addr);
#else
  (void)addr;
#endif
}

// What a thread is doing, for the watchdog and the divergence checks.
enum class State : uint8_t { kRunning, kWarpOp, kBlockBarrier, kExited, kAsyncWait };

// Per-block state of an instruction family that most kernels never use (the Hopper models in
// hopper_emu.h): made by the first thread that needs it, so other launches pay nothing.
// next_block runs in the completion step between blocks; thread_exited after a thread of the
// block returned (waits that need every thread can then fail at once); describe adds lines to
// a deadlock report.
struct BlockExtension {
  virtual ~BlockExtension() = default;
  virtual void next_block() = 0;
  virtual void thread_exited() = 0;
  virtual void describe(FILE* out) = 0;
};

enum class OpKind : uint8_t {
  kShflIdx, kShflUp, kShflDown, kShflXor, kBallot, kAny, kAll, kMatchAny, kMatchAll,
  kReduceAdd, kReduceMin, kReduceMax, kReduceAnd, kReduceOr, kReduceXor, kSyncWarp
};

inline const char* op_name(OpKind k) {
  static const char* const names[] = {
      "__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync", "__ballot_sync",
      "__any_sync", "__all_sync", "__match_any_sync", "__match_all_sync", "__reduce_add_sync",
      "__reduce_min_sync", "__reduce_max_sync", "__reduce_and_sync", "__reduce_or_sync",
      "__reduce_xor_sync", "__syncwarp"};
  return names[static_cast<int>(k)];
}

enum class SyncKind : uint8_t { kPlain, kCount, kAnd, kOr };

// Per-thread record. The atomics are read by the watchdog while the thread runs; the sync_*
// fields are written before arriving at __syncthreads and read in its completion step.
struct alignas(64) ThreadSlot {
  std::atomic<State> state{State::kRunning};
  std::atomic<const char*> what{"kernel start"};
  std::atomic<const char*> file{""};
  std::atomic<unsigned> line{0};
  std::atomic<unsigned> mask{0};
  const char* sync_file = nullptr;
  unsigned sync_line = 0;
  unsigned sync_column = 0;  // two __syncthreads on one line are still two barriers
  SyncKind sync_kind = SyncKind::kPlain;
  int sync_pred = 0;
};

// One lane's pending warp collective.
struct LaneOp {
  OpKind kind = OpKind::kSyncWarp;
  unsigned mask = 0;
  uint64_t value = 0;     // the lane's operand, zero-extended bits
  unsigned src = 0;       // shuffles: the lane to read, already resolved with PTX's rules
  unsigned size = 0;      // operand bytes
  bool is_signed = false; // __reduce_min/max_sync on int
  uint64_t result = 0;
};

struct Warp {
  SpinLock mu;                  // guards live, waiting, in_barrier and op[]
  uint32_t live = 0;            // lanes that exist in this block and have not exited
  uint32_t waiting = 0;         // lanes blocked in a warp collective
  uint32_t in_barrier = 0;      // lanes blocked in __syncthreads
  LaneOp op[32];
  std::atomic<bool> done[32];   // set by whoever completes the lane's group
  Gate gate;                    // opened at each completion: one wake-up for the whole group
  unsigned first_tid = 0;
  char order_token[32];         // TSan sync addresses for __syncwarp, by the mask's lowest lane
};

struct Launch;
struct BlockBarrierDone {
  Launch* launch;
  void operator()() noexcept;
};
struct NextBlock {
  Launch* launch;
  void operator()() noexcept;
};

struct Launch {
  dim3 grid, block;
  unsigned nthreads, nwarps;
  uint64_t nblocks;
  std::atomic<uint64_t> cur_block{~uint64_t{0}};  // read by the watchdog
  unsigned char* dyn_smem;
  size_t dyn_bytes;
  std::unique_ptr<ThreadSlot[]> threads;
  std::unique_ptr<Warp[]> warps;
  PhaseBarrier<BlockBarrierDone> block_bar;  // __syncthreads; reset per block (drops persist)
  PhaseBarrier<NextBlock> all;               // between blocks
  std::once_flag ext_once;
  std::unique_ptr<BlockExtension> ext_owner;
  std::atomic<BlockExtension*> ext{nullptr};  // read by the watchdog
  int sync_result = 0;                       // __syncthreads_count/and/or
  std::atomic<uint64_t> progress{0};         // watched by the watchdog

  Launch(dim3 g, dim3 b, size_t smem)
      : grid(g), block(b), nthreads(b.x * b.y * b.z), nwarps((nthreads + 31) / 32),
        nblocks(uint64_t{g.x} * g.y * g.z),
        dyn_smem(static_cast<unsigned char*>(::operator new[](smem, std::align_val_t{128}))),
        dyn_bytes(smem), threads(new ThreadSlot[nthreads]), warps(new Warp[nwarps]),
        block_bar(nthreads, BlockBarrierDone{this}), all(nthreads, NextBlock{this}) {}
  ~Launch() { ::operator delete[](dyn_smem, std::align_val_t{128}); }
  Launch(const Launch&) = delete;
  Launch& operator=(const Launch&) = delete;
};

struct ThreadCtx {
  Launch* launch = nullptr;
  unsigned tid = 0;
  unsigned lane = 0;
  Warp* warp = nullptr;
};
inline thread_local ThreadCtx t_ctx;

inline ThreadCtx& ctx(const char* what) {
  if (!t_ctx.launch) fail("%s called outside a kernel launched through LOOM_LAUNCH", what);
  return t_ctx;
}

// The running block's extension E (see BlockExtension), made on first use. Hidden from TSan:
// call_once would order the first user before every later one, which the GPU does not.
template <class E>
inline E& extension(const char* what) {
  Launch& L = *ctx(what).launch;
  {
    TsanHidden hidden;
    std::call_once(L.ext_once, [&] {
      L.ext_owner = std::make_unique<E>(L);
      L.ext.store(L.ext_owner.get(), std::memory_order_release);
    });
  }
  return static_cast<E&>(*L.ext.load(std::memory_order_acquire));
}

inline void set_state(State s, const char* what, const std::source_location& loc,
                      unsigned mask = 0) {
  ThreadSlot& ts = t_ctx.launch->threads[t_ctx.tid];
  ts.what.store(what, std::memory_order_relaxed);
  ts.file.store(loc.file_name(), std::memory_order_relaxed);
  ts.line.store(loc.line(), std::memory_order_relaxed);
  ts.mask.store(mask, std::memory_order_relaxed);
  ts.state.store(s, std::memory_order_relaxed);
}

inline void bump_progress(Launch& L) { L.progress.fetch_add(1, std::memory_order_relaxed); }

inline uint64_t poison_bits(unsigned size) { return size >= 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * size)) - 1; }

inline const char* slot_file(const Launch& L, unsigned tid) {
  return L.threads[tid].file.load(std::memory_order_relaxed);
}
inline unsigned slot_line(const Launch& L, unsigned tid) {
  return L.threads[tid].line.load(std::memory_order_relaxed);
}

// ---- warp collectives --------------------------------------------------------------------

// Computes every result of a group whose lanes have all arrived. Called with w.mu held.
inline void compute_group(Warp& w, uint32_t group, OpKind kind) {
  uint64_t acc = 0;
  switch (kind) {
    case OpKind::kShflIdx:
    case OpKind::kShflUp:
    case OpKind::kShflDown:
    case OpKind::kShflXor:
      for (uint32_t g = group; g; g &= g - 1) {
        LaneOp& o = w.op[std::countr_zero(g)];
        o.result = (group >> o.src & 1u) ? w.op[o.src].value : poison_bits(o.size);
      }
      return;
    case OpKind::kBallot:
    case OpKind::kAny:
    case OpKind::kAll:
      for (uint32_t g = group; g; g &= g - 1) {
        const int l = std::countr_zero(g);
        if (w.op[l].value) acc |= uint64_t{1} << l;
      }
      if (kind == OpKind::kAny) acc = acc != 0;
      if (kind == OpKind::kAll) acc = acc == group;
      break;
    case OpKind::kMatchAny:
      for (uint32_t g = group; g; g &= g - 1) {
        LaneOp& o = w.op[std::countr_zero(g)];
        o.result = 0;
        for (uint32_t h = group; h; h &= h - 1)
          if (w.op[std::countr_zero(h)].value == o.value) o.result |= uint64_t{1} << std::countr_zero(h);
      }
      return;
    case OpKind::kMatchAll: {
      const uint64_t v0 = w.op[std::countr_zero(group)].value;
      acc = group;
      for (uint32_t g = group; g; g &= g - 1)
        if (w.op[std::countr_zero(g)].value != v0) acc = 0;
      break;
    }
    case OpKind::kReduceAdd:
    case OpKind::kReduceMin:
    case OpKind::kReduceMax:
    case OpKind::kReduceAnd:
    case OpKind::kReduceOr:
    case OpKind::kReduceXor: {
      const bool sgn = w.op[std::countr_zero(group)].is_signed;
      uint32_t r = static_cast<uint32_t>(w.op[std::countr_zero(group)].value);
      for (uint32_t g = group & (group - 1); g; g &= g - 1) {
        const uint32_t v = static_cast<uint32_t>(w.op[std::countr_zero(g)].value);
        switch (kind) {
          case OpKind::kReduceAdd: r += v; break;
          case OpKind::kReduceMin:
            r = sgn ? static_cast<uint32_t>(std::min<int32_t>(int32_t(r), int32_t(v))) : std::min(r, v);
            break;
          case OpKind::kReduceMax:
            r = sgn ? static_cast<uint32_t>(std::max<int32_t>(int32_t(r), int32_t(v))) : std::max(r, v);
            break;
          case OpKind::kReduceAnd: r &= v; break;
          case OpKind::kReduceOr: r |= v; break;
          default: r ^= v; break;
        }
      }
      acc = r;
      break;
    }
    case OpKind::kSyncWarp:
      break;
  }
  for (uint32_t g = group; g; g &= g - 1) w.op[std::countr_zero(g)].result = acc;
}

[[noreturn]] inline void fail_warp_vs_barrier(Launch& L, Warp& w, unsigned op_lane, unsigned bar_lane) {
  const unsigned t_op = w.first_tid + op_lane, t_bar = w.first_tid + bar_lane;
  fail("warp op and __syncthreads can never meet (deadlock): thread %u waits in %s (mask 0x%08x) "
       "at %s:%u for thread %u, which waits in __syncthreads at %s:%u",
       t_op, op_name(w.op[op_lane].kind), w.op[op_lane].mask, slot_file(L, t_op), slot_line(L, t_op),
       t_bar, slot_file(L, t_bar), slot_line(L, t_bar));
}

// Completes lane's group if all its lanes are waiting in the same collective with the same
// mask; reports a certain deadlock at once. Called with w.mu held.
inline bool try_complete(Launch& L, Warp& w, unsigned lane) {
  const LaneOp& a = w.op[lane];
  const uint32_t group = a.mask & w.live;
  for (uint32_t g = group & ~(1u << lane); g; g &= g - 1) {
    const unsigned b = std::countr_zero(g);
    if (w.in_barrier >> b & 1u) fail_warp_vs_barrier(L, w, lane, b);
    if (!(w.waiting >> b & 1u)) return false;  // still running: it completes the group later
    const LaneOp& o = w.op[b];
    if (o.kind != a.kind || o.mask != a.mask || o.size != a.size) {
      if ((o.mask & w.live) >> lane & 1u) {  // each waits for the other: neither can move
        const unsigned ta = w.first_tid + lane, tb = w.first_tid + b;
        fail("divergent warp ops can never meet (deadlock): thread %u waits in %s (mask 0x%08x) at "
             "%s:%u, thread %u waits in %s (mask 0x%08x) at %s:%u",
             ta, op_name(a.kind), a.mask, slot_file(L, ta), slot_line(L, ta), tb, op_name(o.kind),
             o.mask, slot_file(L, tb), slot_line(L, tb));
      }
      return false;  // b waits for other lanes first; PTX allows a's op to meet it later
    }
  }
  compute_group(w, group, a.kind);
  w.waiting &= ~group;
  for (uint32_t g = group; g; g &= g - 1) w.done[std::countr_zero(g)].store(true, std::memory_order_release);
  w.gate.open();
  bump_progress(L);
  return true;
}

// The one entry point of every warp collective: publish, wait for the group, read the result.
inline uint64_t collective(OpKind kind, unsigned mask, uint64_t value, unsigned src, unsigned size,
                          bool is_signed, const std::source_location& loc) {
  ThreadCtx& c = ctx(op_name(kind));
  Launch& L = *c.launch;
  Warp& w = *c.warp;
  if (!(mask >> c.lane & 1u))
    fail("%s at %s:%u: thread %u (lane %u) is not in its own mask 0x%08x", op_name(kind),
         loc.file_name(), loc.line(), c.tid, c.lane, mask);
  set_state(State::kWarpOp, op_name(kind), loc, mask);
  // Only __syncwarp orders memory between the lanes it names: each releases before arriving
  // and acquires after the group completed.
  void* const token = &w.order_token[std::countr_zero(mask)];
  if (kind == OpKind::kSyncWarp) tsan_release(token);
  uint64_t r;
  {
    TsanHidden hidden;
    {
      std::lock_guard<SpinLock> lk(w.mu);
      w.op[c.lane] = LaneOp{kind, mask, value, src, size, is_signed, 0};
      w.done[c.lane].store(false, std::memory_order_relaxed);
      w.waiting |= 1u << c.lane;
      try_complete(L, w, c.lane);
    }
    w.gate.wait_until([&] { return w.done[c.lane].load(std::memory_order_acquire); }, kWarpYields);
    // Nobody writes op[lane] again before this lane's next arrival, so no lock is needed.
    r = w.op[c.lane].result;
  }
  if (kind == OpKind::kSyncWarp) tsan_acquire(token);
  L.threads[c.tid].state.store(State::kRunning, std::memory_order_relaxed);
  return r;
}

// Byte copies, not bit_cast: T may be 2 bytes and __half has no constexpr copy.
template <class T>
inline uint64_t to_bits(T v) {
  uint64_t b = 0;
  std::memcpy(&b, static_cast<const void*>(&v), sizeof(T));
  return b;
}
template <class T>
inline T from_bits(uint64_t b) {
  T v;
  std::memcpy(static_cast<void*>(&v), &b, sizeof(T));
  return v;
}

// Resolves a shuffle's source lane exactly as PTX shfl.sync does (CUDA passes
// c = ((32 - width) << 8) | 0x1f, or (32 - width) << 8 for .up); an invalid source means
// "keep your own value".
inline unsigned shuffle_source(OpKind kind, unsigned lane, int b, int width, const std::source_location& loc) {
  if (width < 1 || width > 32 || (width & (width - 1)))
    fail("%s at %s:%u: width %d is not a power of two in [1, 32]", op_name(kind), loc.file_name(),
         loc.line(), width);
  const unsigned seg = 32u - unsigned(width);   // segment bits of the lane id
  const unsigned clamp = kind == OpKind::kShflUp ? 0u : 31u;
  const unsigned max_lane = (lane & seg) | (clamp & ~seg & 31u);
  const unsigned min_lane = lane & seg;
  const unsigned bv = unsigned(b) & 31u;
  int j = 0;
  bool ok = false;
  switch (kind) {
    case OpKind::kShflUp: j = int(lane) - int(bv); ok = j >= int(max_lane); break;
    case OpKind::kShflDown: j = int(lane + bv); ok = j <= int(max_lane); break;
    case OpKind::kShflXor: j = int(lane ^ bv); ok = j <= int(max_lane); break;
    default: j = int(min_lane | (bv & ~seg & 31u)); ok = j <= int(max_lane); break;
  }
  return ok ? unsigned(j) : lane;
}

template <class T>
concept WarpValue = (std::is_arithmetic_v<T> || std::is_same_v<T, __half> || std::is_same_v<T, __half2> ||
                     std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __nv_bfloat162>) &&
                    sizeof(T) <= 8;

template <class T>
inline T shuffle(OpKind kind, unsigned mask, T var, int b, int width, const std::source_location& loc) {
  const unsigned src = shuffle_source(kind, ctx(op_name(kind)).lane, b, width, loc);
  return from_bits<T>(collective(kind, mask, to_bits(var), src, sizeof(T), false, loc));
}

// ---- __syncthreads -----------------------------------------------------------------------

inline int syncthreads(SyncKind kind, int pred, const std::source_location& loc) {
  ThreadCtx& c = ctx("__syncthreads");
  Launch& L = *c.launch;
  Warp& w = *c.warp;
  ThreadSlot& ts = L.threads[c.tid];
  ts.sync_file = loc.file_name();
  ts.sync_line = loc.line();
  ts.sync_column = loc.column();
  ts.sync_kind = kind;
  ts.sync_pred = pred != 0;
  set_state(State::kBlockBarrier, "__syncthreads", loc);
  {
    std::lock_guard<SpinLock> lk(w.mu);
    for (uint32_t g = w.waiting; g; g &= g - 1) {
      const unsigned a = std::countr_zero(g);
      if ((w.op[a].mask & w.live) >> c.lane & 1u) fail_warp_vs_barrier(L, w, a, c.lane);
    }
    w.in_barrier |= 1u << c.lane;
  }
  L.block_bar.arrive_and_wait();
  return L.sync_result;
}

// Completion step of __syncthreads, run by the last thread to arrive while all others wait:
// every thread still running must have arrived from the same line.
inline void BlockBarrierDone::operator()() noexcept {
  Launch& L = *launch;
  const uint64_t blk = L.cur_block.load(std::memory_order_relaxed);
  int first = -1, count = 0, live = 0;
  for (unsigned t = 0; t < L.nthreads; ++t) {
    ThreadSlot& ts = L.threads[t];
    if (ts.state.load(std::memory_order_relaxed) == State::kExited) continue;
    ++live;
    count += ts.sync_pred;
    if (first < 0) {
      first = int(t);
      continue;
    }
    const ThreadSlot& f = L.threads[first];
    if (ts.sync_line != f.sync_line || ts.sync_column != f.sync_column ||
        std::strcmp(ts.sync_file, f.sync_file) != 0 || ts.sync_kind != f.sync_kind)
      fail("divergent __syncthreads in block (%u,%u,%u): thread %d at %s:%u:%u, thread %u at %s:%u:%u",
           unsigned(blk % L.grid.x), unsigned(blk / L.grid.x % L.grid.y),
           unsigned(blk / (uint64_t{L.grid.x} * L.grid.y)), first, f.sync_file, f.sync_line, f.sync_column,
           t, ts.sync_file, ts.sync_line, ts.sync_column);
  }
  if (first >= 0) {
    switch (L.threads[first].sync_kind) {
      case SyncKind::kCount: L.sync_result = count; break;
      case SyncKind::kAnd: L.sync_result = count == live; break;
      case SyncKind::kOr: L.sync_result = count != 0; break;
      default: L.sync_result = 0; break;
    }
  }
  for (unsigned i = 0; i < L.nwarps; ++i) {
    std::lock_guard<SpinLock> lk(L.warps[i].mu);
    L.warps[i].in_barrier = 0;
  }
  for (unsigned t = 0; t < L.nthreads; ++t) {
    ThreadSlot& ts = L.threads[t];
    if (ts.state.load(std::memory_order_relaxed) == State::kBlockBarrier)
      ts.state.store(State::kRunning, std::memory_order_relaxed);
  }
  bump_progress(L);
}

// Completion step between blocks: fresh barrier, all lanes live, poisoned dynamic smem.
inline void NextBlock::operator()() noexcept {
  Launch& L = *launch;
  ++L.cur_block;
  L.block_bar.reset(L.nthreads);
  for (unsigned i = 0; i < L.nwarps; ++i) {
    Warp& w = L.warps[i];
    const unsigned n = std::min(32u, L.nthreads - 32 * i);
    w.live = n == 32 ? ~0u : (1u << n) - 1;
    w.waiting = 0;
    w.in_barrier = 0;
    w.first_tid = 32 * i;
  }
  for (unsigned t = 0; t < L.nthreads; ++t) {
    L.threads[t].state.store(State::kRunning, std::memory_order_relaxed);
    L.threads[t].what.store("kernel start", std::memory_order_relaxed);
  }
  if (L.dyn_bytes) std::memset(L.dyn_smem, 0xFF, L.dyn_bytes);
  if (BlockExtension* e = L.ext.load(std::memory_order_relaxed)) e->next_block();
  bump_progress(L);
}

// A thread returned from the kernel: it leaves its warp's groups and the block barrier.
inline void exit_thread() {
  ThreadCtx& c = t_ctx;
  Launch& L = *c.launch;
  Warp& w = *c.warp;
  {
    std::lock_guard<SpinLock> lk(w.mu);
    L.threads[c.tid].state.store(State::kExited, std::memory_order_relaxed);
    w.live &= ~(1u << c.lane);
    // Groups that waited only for this lane can complete now (it reads as poison).
    for (uint32_t g = w.waiting; g; g &= g - 1) {
      const unsigned l = std::countr_zero(g);
      if (w.waiting >> l & 1u) try_complete(L, w, l);
    }
  }
  if (BlockExtension* e = L.ext.load(std::memory_order_acquire)) e->thread_exited();
  L.block_bar.arrive_and_drop();
  bump_progress(L);
}

// ---- "device" memory ---------------------------------------------------------------------

enum class MemKind : uint8_t { kDevice, kHostPinned, kManaged };

struct Region {
  uintptr_t base;
  size_t size;
  MemKind kind;
};

inline std::mutex& regions_mu() {
  static std::mutex mu;
  return mu;
}
inline std::map<uintptr_t, Region>& regions() {
  static std::map<uintptr_t, Region> m;
  return m;
}

// The registered allocation holding [p, p + max(n, 1)), if any. A pointer one past the end
// does not count: it may equally be the start of the next, unrelated, host block.
inline std::optional<Region> find_region(const void* p, size_t n = 0) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  std::lock_guard<std::mutex> lk(regions_mu());
  auto it = regions().upper_bound(a);
  if (it == regions().begin()) return std::nullopt;
  --it;
  const Region& r = it->second;
  if (a >= r.base + r.size || std::max<size_t>(n, 1) > r.base + r.size - a) return std::nullopt;
  return r;
}

inline const char* env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

}  // namespace detail

// Memory that kernels may touch: 256-byte aligned like cudaMalloc, poisoned with 0xFF.
inline void* device_alloc(size_t n, detail::MemKind kind) {
  void* p = ::operator new[](n, std::align_val_t{256}, std::nothrow);
  if (!p) return nullptr;
  std::memset(p, 0xFF, n);
  std::lock_guard<std::mutex> lk(detail::regions_mu());
  detail::regions()[reinterpret_cast<uintptr_t>(p)] = {reinterpret_cast<uintptr_t>(p), n, kind};
  return p;
}

// False when p is not the start of a live allocation of one of the given kinds.
inline bool device_free(void* p, detail::MemKind kind) {
  {
    std::lock_guard<std::mutex> lk(detail::regions_mu());
    auto it = detail::regions().find(reinterpret_cast<uintptr_t>(p));
    if (it == detail::regions().end() || it->second.kind != kind) return false;
    detail::regions().erase(it);
  }
  ::operator delete[](p, std::align_val_t{256});
  return true;
}

inline bool is_device_accessible(const void* p, size_t n = 0) { return detail::find_region(p, n).has_value(); }

// Per-kernel opt-in for more than 48 KiB of dynamic shared memory (cudaFuncSetAttribute).
inline std::mutex& smem_optin_mu() {
  static std::mutex mu;
  return mu;
}
inline std::map<const void*, size_t>& smem_optin() {
  static std::map<const void*, size_t> m;
  return m;
}

// The dynamic shared memory of the running block (LOOM_DYNAMIC_SMEM).
inline unsigned char* dynamic_smem() { return detail::ctx("LOOM_DYNAMIC_SMEM").launch->dyn_smem; }

inline double watchdog_timeout_s() {
  const double v = std::atof(detail::env_or("LOOM_SIMT_TIMEOUT_S", "30"));
  return v > 0 ? v : 30.0;
}

namespace detail {

// Prints where every thread of the stalled block is, runs of identical states folded.
[[noreturn]] inline void report_deadlock(Launch& L, double waited_s) {
  std::fprintf(stderr,
               "loom simt: DEADLOCK: no progress for %.1f s in block %llu of %llu (grid %ux%ux%u, "
               "block %ux%ux%u); where each thread is:\n",
               waited_s, static_cast<unsigned long long>(L.cur_block.load()),
               static_cast<unsigned long long>(L.nblocks), L.grid.x, L.grid.y, L.grid.z, L.block.x,
               L.block.y, L.block.z);
  auto describe = [&](unsigned t, char* buf, size_t n) {
    const ThreadSlot& ts = L.threads[t];
    const State s = ts.state.load(std::memory_order_relaxed);
    const char* what = ts.what.load(std::memory_order_relaxed);
    const char* file = ts.file.load(std::memory_order_relaxed);
    const unsigned line = ts.line.load(std::memory_order_relaxed);
    switch (s) {
      case State::kExited: std::snprintf(buf, n, "exited"); break;
      case State::kBlockBarrier: std::snprintf(buf, n, "waiting in __syncthreads at %s:%u", file, line); break;
      case State::kAsyncWait: std::snprintf(buf, n, "waiting in %s at %s:%u", what, file, line); break;
      case State::kWarpOp:
        std::snprintf(buf, n, "waiting in %s (mask 0x%08x) at %s:%u", what, ts.mask.load(std::memory_order_relaxed),
                      file, line);
        break;
      default:
        if (*file) std::snprintf(buf, n, "running; last seen in %s at %s:%u", what, file, line);
        else std::snprintf(buf, n, "running; no emulator call since the kernel started");
        break;
    }
  };
  char cur[1024], next[1024];
  unsigned t = 0;
  while (t < L.nthreads) {
    describe(t, cur, sizeof cur);
    unsigned u = t + 1;
    for (; u < L.nthreads; ++u) {
      describe(u, next, sizeof next);
      if (std::strcmp(cur, next) != 0) break;
    }
    if (u == t + 1) std::fprintf(stderr, "  thread %u: %s\n", t, cur);
    else std::fprintf(stderr, "  threads %u..%u: %s\n", t, u - 1, cur);
    t = u;
  }
  if (BlockExtension* e = L.ext.load(std::memory_order_acquire)) e->describe(stderr);
  std::fflush(stderr);
  std::abort();
}

inline std::mutex& launch_mu() {
  static std::mutex mu;
  return mu;
}

template <class T>
inline constexpr bool kDataPointer = std::is_pointer_v<T> && !std::is_function_v<std::remove_pointer_t<T>>;

// A host pointer passed to a kernel faults on the GPU; here it would silently work. Pointers
// inside argument structs are not seen.
template <class Tuple, size_t... I>
inline void check_pointer_args(const Tuple& params, std::index_sequence<I...>) {
  static const bool allow = std::atoi(env_or("LOOM_SIMT_ALLOW_HOST_POINTERS", "0")) != 0;
  if (allow) return;
  auto check = [](size_t index, const auto& p) {
    using P = std::decay_t<decltype(p)>;
    if constexpr (kDataPointer<P>) {
      if (p && !is_device_accessible(p))
        fail("kernel argument %zu (%p) is not device memory: pass memory from cudaMalloc (or set "
             "LOOM_SIMT_ALLOW_HOST_POINTERS=1)",
             index, static_cast<const void*>(p));
    }
  };
  (check(I, std::get<I>(params)), ...);
  (void)check;  // a kernel without parameters
}

}  // namespace detail

namespace detail {

// The OS threads that run CUDA threads, kept between launches. Starting blockDim threads for
// every launch cost about 14 ms a launch, and 300 ms under ThreadSanitizer (whose per-thread
// state is large): most of what an emulated test spent. Worker t runs CUDA thread t of every
// launch; a launch hands its body to workers 0..n-1 (creating any that do not exist yet) and
// waits for them itself, with its watchdog. The hand-over is a semaphore (release, then
// acquire), so TSan sees the launcher's set-up happen before the kernel, and the body ends
// under the launch's mutex, so it sees the kernel happen before the launcher goes on: the
// same edges as creating and joining threads. Workers park on their semaphore; at exit they
// are woken to stop and joined (a process exit that leaves hundreds of parked threads behind
// costs TSan about a second). A forked child (a death test) starts a pool of its own and
// leaves its parent's alone. Launches are serialised (launch_mu), so the pool needs no lock
// of its own.
class WorkerPool {
 public:
  using Body = std::function<void(unsigned)>;
  static void run(unsigned n, const Body* body) {
    WorkerPool& pool = instance();
    if (pool.stopped_) fail("launch during process exit, after the emulator's worker threads stopped");
    for (unsigned t = 0; t < n; ++t) {
      if (t == pool.workers_.size()) pool.add();
      pool.workers_[t]->body = body;
      pool.workers_[t]->go.release();
    }
  }

 private:
  struct Worker {
    std::binary_semaphore go{0};
    const Body* body = nullptr;  // nullptr: stop
    std::thread thread;
  };
  struct Current {
    WorkerPool* pool = nullptr;  // never freed: a forked child's copy names threads it lacks
    pid_t owner = 0;
    ~Current() {
      if (pool && owner == getpid()) pool->stop();
    }
  };
  static WorkerPool& instance() {
    static Current current;
    if (!current.pool || current.owner != getpid()) {
      current.pool = new WorkerPool;
      current.owner = getpid();
    }
    return *current.pool;
  }
  void add() {
    Worker* w = new Worker;
    const unsigned id = unsigned(workers_.size());
    try {
      w->thread = std::thread([w, id] {
        for (;;) {
          w->go.acquire();
          if (!w->body) return;
          (*w->body)(id);
        }
      });
    } catch (const std::system_error& e) {
      fail("launch: could not start worker thread %u: %s", id, e.what());
    }
    workers_.push_back(w);
  }
  void stop() {
    stopped_ = true;
    for (Worker* w : workers_) {
      w->body = nullptr;
      w->go.release();
    }
    for (Worker* w : workers_) w->thread.join();
  }
  std::vector<Worker*> workers_;
  bool stopped_ = false;
};

// The launch proper; see launch() below.
template <class... Params, class... Args>
void run_launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, Args&&... args) {
  if (t_ctx.launch) fail("launch from inside a kernel (dynamic parallelism) is not emulated");
  if (block.x == 0 || block.y == 0 || block.z == 0 || block.x > 1024 || block.y > 1024 || block.z > 64 ||
      uint64_t{block.x} * block.y * block.z > kMaxThreadsPerBlock)
    fail("launch: invalid block %ux%ux%u (at most 1024 threads, z <= 64)", block.x, block.y, block.z);
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535)
    fail("launch: invalid grid %ux%ux%u", grid.x, grid.y, grid.z);
  if (smem > kDefaultDynamicSmem) {
    size_t allowed = kDefaultDynamicSmem;
    {
      std::lock_guard<std::mutex> lk(smem_optin_mu());
      auto it = smem_optin().find(reinterpret_cast<const void*>(kernel));
      if (it != smem_optin().end()) allowed = it->second;
    }
    if (smem > allowed || smem > kMaxDynamicSmem)
      fail("launch: %zu bytes of dynamic shared memory need cudaFuncSetAttribute(kernel, "
           "cudaFuncAttributeMaxDynamicSharedMemorySize, >= %zu) first (allowed now: %zu; device max %zu)",
           smem, smem, allowed, kMaxDynamicSmem);
  }
  std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
  check_pointer_args(params, std::index_sequence_for<Params...>{});

  std::lock_guard<std::mutex> serial(launch_mu());
  Launch L(grid, block, smem);
  std::mutex done_mu;
  std::condition_variable done_cv;
  unsigned finished = 0;
  const WorkerPool::Body body = [&](unsigned t) {
    t_ctx = ThreadCtx{&L, t, t & 31u, &L.warps[t / 32]};
    threadIdx = uint3{t % block.x, t / block.x % block.y, t / (block.x * block.y)};
    blockDim = block;
    gridDim = grid;
    for (uint64_t b = 0; b < L.nblocks; ++b) {
      L.all.arrive_and_wait();  // the previous block is done; this one is set up
      blockIdx = uint3{unsigned(b % grid.x), unsigned(b / grid.x % grid.y), unsigned(b / (uint64_t{grid.x} * grid.y))};
      std::apply(kernel, params);
      exit_thread();
    }
    t_ctx = ThreadCtx{};
    // Notified under the lock: once the launcher sees the count, nothing here touches the
    // launch's (stack) state again.
    std::lock_guard<std::mutex> lk(done_mu);
    ++finished;
    done_cv.notify_one();
  };
  WorkerPool::run(L.nthreads, &body);
  // Watchdog: the launching thread waits, and aborts with a dump when nothing moves.
  const double limit = watchdog_timeout_s();
  uint64_t last = L.progress.load(std::memory_order_relaxed);
  auto since = std::chrono::steady_clock::now();
  {
    std::unique_lock<std::mutex> lk(done_mu);
    while (!done_cv.wait_for(lk, std::chrono::milliseconds(100), [&] { return finished == L.nthreads; })) {
      const uint64_t p = L.progress.load(std::memory_order_relaxed);
      const auto now = std::chrono::steady_clock::now();
      if (p != last) {
        last = p;
        since = now;
      } else if (std::chrono::duration<double>(now - since).count() > limit) {
        report_deadlock(L, std::chrono::duration<double>(now - since).count());
      }
    }
  }
}
}  // namespace detail

// Runs kernel<<<grid, block, smem>>>(args...) to completion. The stream is ignored: every
// launch is synchronous. Arguments are converted to the kernel's parameter types once, as
// CUDA does, and each thread gets its own copy of them. A wrong argument list stops at the
// static_asserts here instead of deep inside std::tuple.
template <class... Params, class... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Args&&... args) {
  (void)stream;
  static_assert((!std::is_reference_v<Params> && ...), "kernel parameters must be passed by value");
  if constexpr (sizeof...(Params) != sizeof...(Args)) {
    static_assert(sizeof...(Params) == sizeof...(Args), "LOOM_LAUNCH: wrong number of kernel arguments");
  } else if constexpr (!(std::is_convertible_v<Args, Params> && ...)) {
    static_assert((std::is_convertible_v<Args, Params> && ...),
                  "LOOM_LAUNCH: an argument does not convert to the kernel's parameter type");
  } else {
    detail::run_launch(kernel, grid, block, smem, std::forward<Args>(args)...);
  }
}

}  // namespace loom::simt

// ---- device-side API ---------------------------------------------------------------------
// Each takes the caller's source_location as a defaulted last parameter, so diagnostics name
// the kernel's line.

inline void __syncthreads(std::source_location loc = std::source_location::current()) {
  ::loom::simt::detail::syncthreads(::loom::simt::detail::SyncKind::kPlain, 0, loc);
}
inline int __syncthreads_count(int pred, std::source_location loc = std::source_location::current()) {
  return ::loom::simt::detail::syncthreads(::loom::simt::detail::SyncKind::kCount, pred, loc);
}
inline int __syncthreads_and(int pred, std::source_location loc = std::source_location::current()) {
  return ::loom::simt::detail::syncthreads(::loom::simt::detail::SyncKind::kAnd, pred, loc);
}
inline int __syncthreads_or(int pred, std::source_location loc = std::source_location::current()) {
  return ::loom::simt::detail::syncthreads(::loom::simt::detail::SyncKind::kOr, pred, loc);
}

inline void __syncwarp(unsigned mask = 0xffffffffu, std::source_location loc = std::source_location::current()) {
  using namespace ::loom::simt::detail;
  collective(OpKind::kSyncWarp, mask, 0, 0, 0, false, loc);
}

template <::loom::simt::detail::WarpValue T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize,
                     std::source_location loc = std::source_location::current()) {
  return ::loom::simt::detail::shuffle(::loom::simt::detail::OpKind::kShflIdx, mask, var, src_lane, width, loc);
}
template <::loom::simt::detail::WarpValue T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                        std::source_location loc = std::source_location::current()) {
  return ::loom::simt::detail::shuffle(::loom::simt::detail::OpKind::kShflUp, mask, var, int(delta), width, loc);
}
template <::loom::simt::detail::WarpValue T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                          std::source_location loc = std::source_location::current()) {
  return ::loom::simt::detail::shuffle(::loom::simt::detail::OpKind::kShflDown, mask, var, int(delta), width, loc);
}
template <::loom::simt::detail::WarpValue T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize,
                         std::source_location loc = std::source_location::current()) {
  return ::loom::simt::detail::shuffle(::loom::simt::detail::OpKind::kShflXor, mask, var, lane_mask, width, loc);
}

inline unsigned __ballot_sync(unsigned mask, int pred, std::source_location loc = std::source_location::current()) {
  using namespace ::loom::simt::detail;
  return unsigned(collective(OpKind::kBallot, mask, pred != 0, 0, 4, false, loc));
}
inline int __any_sync(unsigned mask, int pred, std::source_location loc = std::source_location::current()) {
  using namespace ::loom::simt::detail;
  return int(collective(OpKind::kAny, mask, pred != 0, 0, 4, false, loc));
}
inline int __all_sync(unsigned mask, int pred, std::source_location loc = std::source_location::current()) {
  using namespace ::loom::simt::detail;
  return int(collective(OpKind::kAll, mask, pred != 0, 0, 4, false, loc));
}
// Lanes are not lock-step here, so "currently converged" has no meaning: this returns the
// lanes that have not exited. Use explicit masks in new code.
inline unsigned __activemask() {
  auto& c = ::loom::simt::detail::ctx("__activemask");
  ::loom::simt::detail::TsanHidden hidden;  // reading the mask orders no memory
  std::lock_guard<::loom::simt::detail::SpinLock> lk(c.warp->mu);
  return c.warp->live;
}

template <class T>
  requires(std::is_integral_v<T> || std::is_floating_point_v<T>) && (sizeof(T) == 4 || sizeof(T) == 8)
inline unsigned __match_any_sync(unsigned mask, T value, std::source_location loc = std::source_location::current()) {
  using namespace ::loom::simt::detail;
  return unsigned(collective(OpKind::kMatchAny, mask, to_bits(value), 0, sizeof(T), false, loc));
}
template <class T>
  requires(std::is_integral_v<T> || std::is_floating_point_v<T>) && (sizeof(T) == 4 || sizeof(T) == 8)
inline unsigned __match_all_sync(unsigned mask, T value, int* pred,
                                 std::source_location loc = std::source_location::current()) {
  using namespace ::loom::simt::detail;
  const unsigned r = unsigned(collective(OpKind::kMatchAll, mask, to_bits(value), 0, sizeof(T), false, loc));
  *pred = r != 0;
  return r;
}

#define LOOM_SIMT_REDUCE(name, kind)                                                                      \
  inline unsigned name(unsigned mask, unsigned v, std::source_location loc = std::source_location::current()) { \
    using namespace ::loom::simt::detail;                                                                 \
    return unsigned(collective(OpKind::kind, mask, v, 0, 4, false, loc));                                 \
  }
LOOM_SIMT_REDUCE(__reduce_add_sync, kReduceAdd)
LOOM_SIMT_REDUCE(__reduce_min_sync, kReduceMin)
LOOM_SIMT_REDUCE(__reduce_max_sync, kReduceMax)
LOOM_SIMT_REDUCE(__reduce_and_sync, kReduceAnd)
LOOM_SIMT_REDUCE(__reduce_or_sync, kReduceOr)
LOOM_SIMT_REDUCE(__reduce_xor_sync, kReduceXor)
#undef LOOM_SIMT_REDUCE
#define LOOM_SIMT_REDUCE_INT(name, kind)                                                                \
  inline int name(unsigned mask, int v, std::source_location loc = std::source_location::current()) {  \
    using namespace ::loom::simt::detail;                                                               \
    return int(uint32_t(collective(OpKind::kind, mask, uint32_t(v), 0, 4, true, loc)));                 \
  }
LOOM_SIMT_REDUCE_INT(__reduce_add_sync, kReduceAdd)
LOOM_SIMT_REDUCE_INT(__reduce_min_sync, kReduceMin)
LOOM_SIMT_REDUCE_INT(__reduce_max_sync, kReduceMax)
#undef LOOM_SIMT_REDUCE_INT

// A spin loop that sleeps is still waiting: the watchdog shows it at this line. Sleeping is
// not progress.
inline void __nanosleep(unsigned ns, std::source_location loc = std::source_location::current()) {
  ::loom::simt::detail::ctx("__nanosleep");
  ::loom::simt::detail::set_state(::loom::simt::detail::State::kRunning, "__nanosleep", loc);
  std::this_thread::sleep_for(std::chrono::nanoseconds(std::max(ns, 1000u)));
}
[[noreturn]] inline void __trap(std::source_location loc = std::source_location::current()) {
  ::loom::simt::detail::fail("__trap() at %s:%u", loc.file_name(), loc.line());
}
inline long long clock64() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_system() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// ---- atomics: CUDA's overload set exactly (a float atomicMax here would compile here and
// fail under nvcc), through std::atomic_ref so TSan sees them as atomic.

#define LOOM_SIMT_ATOMIC(T, name, body)                  \
  inline T name(T* address, T val) {                     \
    std::atomic_ref<T> a(*address);                      \
    body                                                 \
  }
#define LOOM_SIMT_FETCH(T, name, op) LOOM_SIMT_ATOMIC(T, name, return a.op(val);)
#define LOOM_SIMT_CAS_LOOP(T, name, expr)                           \
  LOOM_SIMT_ATOMIC(T, name, T old = a.load();                       \
                   while (!a.compare_exchange_weak(old, (expr))) {} \
                   return old;)

LOOM_SIMT_FETCH(int, atomicAdd, fetch_add)
LOOM_SIMT_FETCH(unsigned, atomicAdd, fetch_add)
LOOM_SIMT_FETCH(unsigned long long, atomicAdd, fetch_add)
LOOM_SIMT_FETCH(float, atomicAdd, fetch_add)
LOOM_SIMT_FETCH(double, atomicAdd, fetch_add)
LOOM_SIMT_FETCH(int, atomicSub, fetch_sub)
LOOM_SIMT_FETCH(unsigned, atomicSub, fetch_sub)
LOOM_SIMT_FETCH(int, atomicExch, exchange)
LOOM_SIMT_FETCH(unsigned, atomicExch, exchange)
LOOM_SIMT_FETCH(unsigned long long, atomicExch, exchange)
LOOM_SIMT_FETCH(float, atomicExch, exchange)
LOOM_SIMT_FETCH(int, atomicAnd, fetch_and)
LOOM_SIMT_FETCH(unsigned, atomicAnd, fetch_and)
LOOM_SIMT_FETCH(unsigned long long, atomicAnd, fetch_and)
LOOM_SIMT_FETCH(int, atomicOr, fetch_or)
LOOM_SIMT_FETCH(unsigned, atomicOr, fetch_or)
LOOM_SIMT_FETCH(unsigned long long, atomicOr, fetch_or)
LOOM_SIMT_FETCH(int, atomicXor, fetch_xor)
LOOM_SIMT_FETCH(unsigned, atomicXor, fetch_xor)
LOOM_SIMT_FETCH(unsigned long long, atomicXor, fetch_xor)
LOOM_SIMT_CAS_LOOP(int, atomicMax, std::max(old, val))
LOOM_SIMT_CAS_LOOP(unsigned, atomicMax, std::max(old, val))
LOOM_SIMT_CAS_LOOP(long long, atomicMax, std::max(old, val))
LOOM_SIMT_CAS_LOOP(unsigned long long, atomicMax, std::max(old, val))
LOOM_SIMT_CAS_LOOP(int, atomicMin, std::min(old, val))
LOOM_SIMT_CAS_LOOP(unsigned, atomicMin, std::min(old, val))
LOOM_SIMT_CAS_LOOP(long long, atomicMin, std::min(old, val))
LOOM_SIMT_CAS_LOOP(unsigned long long, atomicMin, std::min(old, val))
LOOM_SIMT_CAS_LOOP(unsigned, atomicInc, old >= val ? 0u : old + 1)
LOOM_SIMT_CAS_LOOP(unsigned, atomicDec, (old == 0 || old > val) ? val : old - 1)
#undef LOOM_SIMT_CAS_LOOP
#undef LOOM_SIMT_FETCH
#undef LOOM_SIMT_ATOMIC

#define LOOM_SIMT_CAS(T)                                         \
  inline T atomicCAS(T* address, T compare, T val) {             \
    std::atomic_ref<T>(*address).compare_exchange_strong(compare, val); \
    return compare;                                              \
  }
LOOM_SIMT_CAS(int)
LOOM_SIMT_CAS(unsigned)
LOOM_SIMT_CAS(unsigned long long)
LOOM_SIMT_CAS(unsigned short)
#undef LOOM_SIMT_CAS

namespace loom::simt::detail {
// 16-bit float atomics: a CAS loop on the raw bits, adding in float like the hardware does.
template <class H>
inline H atomic_add_16(H* address, H val) {
  static_assert(sizeof(H) == 2);
  std::atomic_ref<uint16_t> a(*reinterpret_cast<uint16_t*>(address));
  uint16_t old = a.load();
  for (;;) {
    const H sum = H(float(from_bits<H>(old)) + float(val));
    if (a.compare_exchange_weak(old, static_cast<uint16_t>(to_bits(sum)))) return from_bits<H>(old);
  }
}
}  // namespace loom::simt::detail

inline __half atomicAdd(__half* address, __half val) { return ::loom::simt::detail::atomic_add_16(address, val); }
inline __nv_bfloat16 atomicAdd(__nv_bfloat16* address, __nv_bfloat16 val) {
  return ::loom::simt::detail::atomic_add_16(address, val);
}
// Like the hardware, each half of a pair is atomic on its own, not the pair as a whole.
inline __half2 atomicAdd(__half2* address, __half2 val) {
  __half* p = reinterpret_cast<__half*>(address);
  return __halves2half2(atomicAdd(p, val.x), atomicAdd(p + 1, val.y));
}
inline __nv_bfloat162 atomicAdd(__nv_bfloat162* address, __nv_bfloat162 val) {
  __nv_bfloat16* p = reinterpret_cast<__nv_bfloat16*>(address);
  return __halves2bfloat162(atomicAdd(p, val.x), atomicAdd(p + 1, val.y));
}
inline float2 atomicAdd(float2* address, float2 val) {
  return make_float2(atomicAdd(&address->x, val.x), atomicAdd(&address->y, val.y));
}
inline float4 atomicAdd(float4* address, float4 val) {
  return make_float4(atomicAdd(&address->x, val.x), atomicAdd(&address->y, val.y), atomicAdd(&address->z, val.z),
                     atomicAdd(&address->w, val.w));
}
// Scoped variants: with one block at a time every scope is the same.
#define atomicAdd_block atomicAdd
#define atomicAdd_system atomicAdd
#define atomicMax_block atomicMax
#define atomicMax_system atomicMax
#define atomicMin_block atomicMin
#define atomicMin_system atomicMin
#define atomicExch_block atomicExch
#define atomicExch_system atomicExch
#define atomicCAS_block atomicCAS
#define atomicCAS_system atomicCAS

// ---- loads and stores with cache hints: plain accesses here --------------------------------
template <class T> inline T __ldg(const T* p) { return *p; }
template <class T> inline T __ldca(const T* p) { return *p; }
template <class T> inline T __ldcg(const T* p) { return *p; }
template <class T> inline T __ldcs(const T* p) { return *p; }
template <class T> inline T __ldlu(const T* p) { return *p; }
template <class T> inline T __ldcv(const T* p) { return *p; }
template <class T> inline void __stwb(T* p, T v) { *p = v; }
template <class T> inline void __stcg(T* p, T v) { *p = v; }
template <class T> inline void __stcs(T* p, T v) { *p = v; }
template <class T> inline void __stwt(T* p, T v) { *p = v; }

// ---- math intrinsics the C library lacks. Results may differ from the GPU's approximate
// versions in the last bits: compare with tolerances, never bitwise.
inline float __expf(float x) { return std::exp(x); }
inline float __exp10f(float x) { return std::pow(10.0f, x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __log10f(float x) { return std::log10(x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanf(float x) { return std::tan(x); }
inline void __sincosf(float x, float* s, float* c) { *s = std::sin(x); *c = std::cos(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float rcbrtf(float x) { return 1.0f / std::cbrt(x); }
inline float normcdff(float x) { return 0.5f * std::erfc(-x * 0.70710678118654752f); }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __frsqrt_rn(float x) { return 1.0f / std::sqrt(x); }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __saturatef(float x) { return std::isnan(x) ? 0.0f : std::fmin(std::fmax(x, 0.0f), 1.0f); }
inline int __float2int_rn(float x) { return int(std::nearbyint(x)); }
inline int __float2int_rz(float x) { return int(x); }
inline int __float2int_rd(float x) { return int(std::floor(x)); }
inline int __float2int_ru(float x) { return int(std::ceil(x)); }
inline unsigned __float2uint_rn(float x) { return unsigned(std::nearbyint(x)); }
inline float __int2float_rn(int x) { return float(x); }
inline int __float_as_int(float x) { return std::bit_cast<int>(x); }
inline unsigned __float_as_uint(float x) { return std::bit_cast<unsigned>(x); }
inline float __int_as_float(int x) { return std::bit_cast<float>(x); }
inline float __uint_as_float(unsigned x) { return std::bit_cast<float>(x); }
inline long long __double_as_longlong(double x) { return std::bit_cast<long long>(x); }
inline double __longlong_as_double(long long x) { return std::bit_cast<double>(x); }
inline __half __hfma(__half a, __half b, __half c) { return __float2half(std::fma(float(a), float(b), float(c))); }
inline __nv_bfloat16 __hfma(__nv_bfloat16 a, __nv_bfloat16 b, __nv_bfloat16 c) {
  return __float2bfloat16(std::fma(float(a), float(b), float(c)));
}

// ---- integer intrinsics
inline int __popc(unsigned x) { return std::popcount(x); }
inline int __popcll(unsigned long long x) { return std::popcount(x); }
inline int __clz(int x) { return std::countl_zero(unsigned(x)); }
inline int __clzll(long long x) { return std::countl_zero(static_cast<unsigned long long>(x)); }
inline int __ffs(int x) { return x ? std::countr_zero(unsigned(x)) + 1 : 0; }
inline int __ffsll(long long x) { return x ? std::countr_zero(static_cast<unsigned long long>(x)) + 1 : 0; }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
inline unsigned long long __brevll(unsigned long long x) {
  return (static_cast<unsigned long long>(__brev(unsigned(x))) << 32) | __brev(unsigned(x >> 32));
}
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  const uint64_t v = (uint64_t{y} << 32) | x;
  unsigned r = 0;
  for (int i = 0; i < 4; ++i) r |= unsigned((v >> (8 * ((s >> (4 * i)) & 7u))) & 0xFFu) << (8 * i);
  return r;
}
inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned shift) {
  return unsigned((((uint64_t{hi} << 32) | lo) << (shift & 31u)) >> 32);
}
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned shift) {
  return unsigned(((uint64_t{hi} << 32) | lo) >> (shift & 31u));
}
inline int __mulhi(int a, int b) { return int((int64_t{a} * b) >> 32); }
inline unsigned __umulhi(unsigned a, unsigned b) { return unsigned((uint64_t{a} * b) >> 32); }
inline long long __mul64hi(long long a, long long b) { return static_cast<long long>((__int128{a} * b) >> 64); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return static_cast<unsigned long long>((static_cast<unsigned __int128>(a) * b) >> 64);
}
inline int __mul24(int a, int b) { return (a << 8 >> 8) * (b << 8 >> 8); }
inline unsigned __umul24(unsigned a, unsigned b) { return (a & 0xFFFFFFu) * (b & 0xFFFFFFu); }

// CUDA's device-side min/max overload set (crt/math_functions.h), mixed signedness included,
// so that a call that resolves under nvcc resolves the same way here.
#define LOOM_SIMT_MINMAX(R, A, B)                                                    \
  inline R min(A a, B b) { return static_cast<R>(a) < static_cast<R>(b) ? static_cast<R>(a) : static_cast<R>(b); } \
  inline R max(A a, B b) { return static_cast<R>(a) > static_cast<R>(b) ? static_cast<R>(a) : static_cast<R>(b); }
LOOM_SIMT_MINMAX(int, int, int)
LOOM_SIMT_MINMAX(unsigned, unsigned, unsigned)
LOOM_SIMT_MINMAX(unsigned, int, unsigned)
LOOM_SIMT_MINMAX(unsigned, unsigned, int)
LOOM_SIMT_MINMAX(long, long, long)
LOOM_SIMT_MINMAX(unsigned long, unsigned long, unsigned long)
LOOM_SIMT_MINMAX(unsigned long, long, unsigned long)
LOOM_SIMT_MINMAX(unsigned long, unsigned long, long)
LOOM_SIMT_MINMAX(long long, long long, long long)
LOOM_SIMT_MINMAX(unsigned long long, unsigned long long, unsigned long long)
LOOM_SIMT_MINMAX(unsigned long long, long long, unsigned long long)
LOOM_SIMT_MINMAX(unsigned long long, unsigned long long, long long)
#undef LOOM_SIMT_MINMAX
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }
inline double min(float a, double b) { return std::fmin(double(a), b); }
inline double max(float a, double b) { return std::fmax(double(a), b); }
inline double min(double a, float b) { return std::fmin(a, double(b)); }
inline double max(double a, float b) { return std::fmax(a, double(b)); }
inline unsigned umin(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned umax(unsigned a, unsigned b) { return a > b ? a : b; }
