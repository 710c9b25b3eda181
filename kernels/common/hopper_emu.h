// hopper_emu.h: the SIMT emulator's models of the sm_90 (Hopper) asynchronous instructions:
// mbarrier, named barriers, setmaxnreg, fence.proxy.async, TMA (cuTensorMapEncodeTiled,
// cp.async.bulk.tensor, cp.async.bulk) and wgmma. Kernels never include it: they include
// kernels/common/hopper.cuh, whose functions are these under g++ and inline PTX under nvcc.
//
// Each model follows the PTX ISA section named beside it, by its title in the PTX ISA document
// (version 9.0, the CUDA 13 toolkit's; titles rather than numbers, which move between versions);
// docs/emulator.md "Hopper instructions" lists them with what each negative test proves.
// The models in brief:
//  - Asynchronous work completes when it is issued: a TMA copy is done, and its bytes are
//    counted on the mbarrier, before the call returns. What the GPU leaves undefined until a
//    wait is made visible instead: wgmma accumulators read NaN from issue until the
//    wgmma.wait_group that covers them.
//  - Operands in shared memory (TMA boxes, wgmma matrices) must lie in the block's dynamic
//    shared memory (LOOM_DYNAMIC_SMEM). Their shared-window address, from which alignment and
//    swizzle patterns are computed as the hardware does, is their offset in it plus
//    kDynamicWindowBase: on the GPU the dynamic region follows 1 KiB reserved by the system and
//    the kernel's static shared memory, so its start is only as aligned as LOOM_DYNAMIC_SMEM
//    declares (16 bytes). Kernels align their buffers themselves (loom::hopper::align_smem);
//    one that assumes more is caught here. mbarriers may be static __shared__ too.
//  - Per-block state (the BlockExtension of simt_emu.h) exists only in launches that use
//    these instructions, and is cleared between blocks like shared memory.
//  - Waits that never end are the watchdog's (every thread's line, then every mbarrier's
//    phase, pending arrivals and tx-count); misuse that is certain at once is reported at
//    once with the thread's line.
#pragma once
#if !defined(LOOM_SIMT_EMULATION) || !LOOM_SIMT_EMULATION
#error "hopper_emu.h is the emulator's side of kernels/common/hopper.cuh; include that"
#endif

#include <cuda.h>  // CUtensorMap and its enums (types only: nothing of the driver is called)

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <source_location>
#include <unordered_map>
#include <vector>

namespace loom::simt::hopper_detail {

using ::loom::simt::detail::fail;
using ::loom::simt::detail::Gate;
using ::loom::simt::detail::Launch;
using ::loom::simt::detail::SpinLock;
using ::loom::simt::detail::State;
using ::loom::simt::detail::TsanHidden;
using Loc = std::source_location;

// PTX ISA "Size and alignment of mbarrier object": 8 bytes, 8-aligned. The state
// lives here, keyed by the object's address; the 8 bytes themselves are never written.
struct Mbarrier {
  uint32_t expected = 0;  // arrivals per phase (mbarrier.init's count)
  uint32_t pending = 0;   // arrivals still missing in the current phase
  uint32_t phase = 0;     // completed phases; the current phase's parity is phase & 1
  int64_t tx = 0;         // tx-count: bytes announced by expect_tx and not yet completed
  bool valid = false;     // false after mbarrier.inval
  const char* file = "";  // where it was initialised, for reports
  unsigned line = 0;
};

// PTX ISA "Parallel Synchronization and Communication Instructions: bar, barrier": 16
// barriers per CTA, each counting threads to a phase end.
struct NamedBarrier {
  unsigned arrived = 0, count = 0, phase = 0;
  const char* file = "";
  unsigned line = 0;
  char order_token = 0;  // TSan sync address
};

// A .sync.aligned instruction met by the 128 threads of a warpgroup (setmaxnreg, wgmma).
struct WarpgroupMeet {
  unsigned arrived = 0;
  uint32_t generation = 0;
  const char* what = nullptr;
  const char* file = "";
  unsigned line = 0, column = 0, first_tid = 0;
  uint64_t key = 0;              // the instruction's uniform operands
  std::vector<float> values;     // wgmma: per thread 128 accumulator inputs, then results
  std::vector<uint32_t> a_regs;  // wgmma: per thread 4 A-fragment registers
};

struct ThreadWgmma {
  using Writes = std::vector<std::pair<float*, float>>;
  bool fenced = false;            // a wgmma.fence since the last wgmma.wait_group
  Writes open;                    // issued, not yet committed
  std::vector<Writes> committed;  // oldest first
};

// Tags of 16-byte chunks of dynamic shared memory, by who wrote them last through the async
// proxy: 0 nobody (threads' own stores are not seen), else 1 + CUtensorMapSwizzle.
constexpr uint8_t kUntagged = 0;

struct BlockState final : ::loom::simt::detail::BlockExtension {
  explicit BlockState(Launch& l) : L(l), meets((l.nthreads + 127) / 128), wgmma(l.nthreads) {}
  Launch& L;
  SpinLock mu;  // guards everything below except wgmma[t], which only thread t touches
  Gate gate;    // opened at every phase end and every meeting
  std::unordered_map<const void*, Mbarrier> bars;
  NamedBarrier named[16];
  std::vector<WarpgroupMeet> meets;
  std::vector<uint8_t> tags;
  std::vector<ThreadWgmma> wgmma;

  void next_block() override {
    bars.clear();
    for (NamedBarrier& n : named) n = NamedBarrier{};
    for (WarpgroupMeet& m : meets) m.arrived = 0;
    std::fill(tags.begin(), tags.end(), kUntagged);
    for (ThreadWgmma& w : wgmma) w = ThreadWgmma{};
  }
  void thread_exited() override { gate.open(); }  // warpgroup meetings check for exits
  // Called by the watchdog: the lock is never held across a wait.
  void describe(FILE* out) override {
    TsanHidden hidden;
    std::lock_guard<SpinLock> lk(mu);
    for (const auto& [addr, b] : bars)
      std::fprintf(out,
                   "  mbarrier %p (init at %s:%u, count %u)%s: phase %u (parity %u) waits for %u of %u "
                   "arrivals and %lld tx bytes\n",
                   addr, b.file, b.line, b.expected, b.valid ? "" : " [invalidated]", b.phase, b.phase & 1u, b.pending,
                   b.expected, static_cast<long long>(b.tx));
    for (unsigned i = 0; i < 16; ++i)
      if (named[i].arrived)
        std::fprintf(out, "  named barrier %u: %u of %u threads arrived (phase begun at %s:%u)\n", i, named[i].arrived,
                     named[i].count, named[i].file, named[i].line);
  }
};

inline BlockState& state(const char* what) { return ::loom::simt::detail::extension<BlockState>(what); }

inline unsigned tid() { return ::loom::simt::detail::t_ctx.tid; }

// The shared-window address of the dynamic shared memory's first byte: 1 KiB reserved, then
// 16 bytes as if of static shared memory, so that it is 16-byte aligned and no more.
constexpr uint32_t kDynamicWindowBase = 0x410;

// The byte of dynamic shared memory at a shared-window address.
inline unsigned char* smem_at(const Launch& L, uint32_t window) { return L.dyn_smem + (window - kDynamicWindowBase); }

// Marks the thread as waiting (for the watchdog) and blocks until ready() holds.
template <class Ready>
inline void wait_for(BlockState& S, const char* what, const Loc& loc, Ready ready) {
  ::loom::simt::detail::set_state(State::kAsyncWait, what, loc);
  {
    TsanHidden hidden;
    S.gate.wait_until(
        [&] {
          std::lock_guard<SpinLock> lk(S.mu);
          return ready();
        },
        ::loom::simt::detail::kBarrierYields);
  }
  ::loom::simt::detail::set_state(State::kRunning, what, loc);
}

inline void progress(BlockState& S) {
  S.gate.open();
  ::loom::simt::detail::bump_progress(S.L);
}

// The shared-window address of [p, p + n), which must lie in the dynamic shared memory.
inline uint32_t smem_address(const void* p, size_t n, const char* what, const Loc& loc) {
  Launch& L = *::loom::simt::detail::ctx(what).launch;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p), base = reinterpret_cast<uintptr_t>(L.dyn_smem);
  if (a < base || a - base + n > L.dyn_bytes)
    fail(
        "%s at %s:%u: [%p, +%zu) is not inside the block's dynamic shared memory (%zu bytes): the "
        "emulator needs asynchronous operands in LOOM_DYNAMIC_SMEM",
        what, loc.file_name(), loc.line(), p, n, L.dyn_bytes);
  return uint32_t(a - base) + kDynamicWindowBase;
}

// ---- mbarrier: PTX ISA "Parallel Synchronization and Communication Instructions:
// mbarrier". A phase ends when its pending arrival count and its tx-count are both zero
// ("Phase Completion of the mbarrier object"); the count then resets to the expected count.
// The helpers below are called with S.mu held.

inline Mbarrier& find_barrier(BlockState& S, const void* bar, const char* what, const Loc& loc) {
  auto it = S.bars.find(bar);
  if (it == S.bars.end())
    fail("%s at %s:%u: thread %u uses %p, which is not an initialised mbarrier (mbarrier.init first)", what,
         loc.file_name(), loc.line(), tid(), bar);
  if (!it->second.valid)
    fail("%s at %s:%u: thread %u uses mbarrier %p after mbarrier.inval", what, loc.file_name(), loc.line(), tid(), bar);
  return it->second;
}

inline void end_phase_if_done(BlockState& S, Mbarrier& b, const char* what, const Loc& loc) {
  if (b.pending != 0) return;
  if (b.tx < 0)
    fail(
        "%s at %s:%u: thread %u: mbarrier (init at %s:%u) phase %u received %lld bytes more than its "
        "expect_tx announced (tx-count underflow at the phase's end)",
        what, loc.file_name(), loc.line(), tid(), b.file, b.line, b.phase, static_cast<long long>(-b.tx));
  if (b.tx != 0) return;  // bytes still on their way
  ++b.phase;
  b.pending = b.expected;
  progress(S);
}

// "mbarrier.expect_tx" / "mbarrier.complete_tx" ("Tracking asynchronous operations by the
// mbarrier object"): the tx-count stays in [-(2^20 - 1), 2^20 - 1].
inline void add_tx(Mbarrier& b, int64_t bytes, const char* what, const Loc& loc) {
  b.tx += bytes;
  if (b.tx > (int64_t{1} << 20) - 1 || b.tx < -((int64_t{1} << 20) - 1))
    fail("%s at %s:%u: mbarrier (init at %s:%u) tx-count %lld outside [-(2^20-1), 2^20-1]", what, loc.file_name(),
         loc.line(), b.file, b.line, static_cast<long long>(b.tx));
}

inline uint64_t arrive(void* bar, uint32_t count, int64_t tx, const char* what, const Loc& loc) {
  BlockState& S = state(what);
  ::loom::simt::detail::tsan_release(bar);  // mbarrier.arrive has release semantics
  TsanHidden hidden;
  std::lock_guard<SpinLock> lk(S.mu);
  Mbarrier& b = find_barrier(S, bar, what, loc);
  if (tx) add_tx(b, tx, what, loc);
  if (count == 0 || count > b.pending)
    fail(
        "%s at %s:%u: thread %u arrives %u times on an mbarrier (init at %s:%u, count %u) whose phase %u "
        "waits for only %u more arrivals (arrive count overflow)",
        what, loc.file_name(), loc.line(), tid(), count, b.file, b.line, b.expected, b.phase, b.pending);
  const uint64_t token = b.phase;
  b.pending -= count;
  end_phase_if_done(S, b, what, loc);
  return token;
}

// The wait condition of PTX ISA "mbarrier.test_wait / mbarrier.try_wait" with .parity:
// true once the phase of that parity is complete, i.e. the current phase has the other one.
inline bool parity_done(BlockState& S, const void* bar, uint32_t parity, const char* what, const Loc& loc) {
  const Mbarrier& b = find_barrier(S, bar, what, loc);
  return (b.phase & 1u) != (parity & 1u);
}

// Bytes a TMA or bulk copy completes on its mbarrier (mbarrier::complete_tx::bytes).
inline void complete_tx(void* bar, uint32_t bytes, const char* what, const Loc& loc) {
  BlockState& S = state(what);
  ::loom::simt::detail::tsan_release(bar);  // the copy's writes happen before the waiters go on
  TsanHidden hidden;
  std::lock_guard<SpinLock> lk(S.mu);
  Mbarrier& b = find_barrier(S, bar, what, loc);
  add_tx(b, -int64_t(bytes), what, loc);
  end_phase_if_done(S, b, what, loc);
}

// A .sync.aligned warpgroup instruction waits for all 128 threads: one that returned instead
// means a warp skipped it.
inline void check_warpgroup_live(const Launch& L, unsigned g, const char* what, const Loc& loc) {
  for (unsigned u = 128 * g; u < 128 * (g + 1); ++u)
    if (L.threads[u].state.load(std::memory_order_relaxed) == State::kExited)
      fail("%s at %s:%u: thread %u of warpgroup %u returned without executing it; all 128 threads must", what,
           loc.file_name(), loc.line(), u, g);
}

// ---- warpgroup meetings (the .sync.aligned rule of setmaxnreg and wgmma: every thread of the
// warpgroup executes the same instruction). Each thread deposits its operands; `last` runs
// once, in the thread that completes the meeting, before anyone leaves.
template <class Deposit, class Last>
inline void meet(BlockState& S, const char* what, uint64_t key, const Loc& loc, Deposit deposit, Last last) {
  Launch& L = S.L;
  const unsigned t = tid(), g = t / 128;
  if (L.nthreads < 128 * (g + 1))
    fail("%s at %s:%u: thread %u is in warpgroup %u, which has only %u of its 128 threads (blockDim %u)", what,
         loc.file_name(), loc.line(), t, g, L.nthreads - 128 * g, L.nthreads);
  WarpgroupMeet& m = S.meets[g];
  uint32_t gen;
  bool is_last;
  {
    TsanHidden hidden;
    std::lock_guard<SpinLock> lk(S.mu);
    check_warpgroup_live(L, g, what, loc);
    if (m.arrived == 0) {
      m.what = what;
      m.file = loc.file_name();
      m.line = loc.line();
      m.column = loc.column();
      m.first_tid = t;
      m.key = key;
    } else if (m.what != what || m.line != loc.line() || m.column != loc.column() ||
               std::strcmp(m.file, loc.file_name()) != 0 || m.key != key) {
      fail(
          "non-uniform %s in warpgroup %u: thread %u at %s:%u (%s, operands 0x%llx), thread %u at %s:%u (%s, "
          "operands 0x%llx); all 128 threads must execute the same instruction together",
          what, g, m.first_tid, m.file, m.line, m.what, static_cast<unsigned long long>(m.key), t, loc.file_name(),
          loc.line(), what, static_cast<unsigned long long>(key));
    }
    deposit(m, t % 128);
    gen = m.generation;
    is_last = ++m.arrived == 128;
  }
  if (is_last) {
    last(m);
    TsanHidden hidden;
    std::lock_guard<SpinLock> lk(S.mu);
    m.arrived = 0;
    ++m.generation;
    progress(S);
  } else {
    wait_for(S, what, loc, [&] {
      if (m.generation != gen) return true;
      check_warpgroup_live(L, g, what, loc);  // woken by every exit
      return false;
    });
  }
}

// ---- swizzling: PTX ISA "Tensor Memory Accelerator: Tensor-map swizzling modes" and
// "Asynchronous Warpgroup Level Matrix Shared Memory Layout": the 16-byte chunk index (address
// bits 4..6) is XORed with address bits 7..9, all three bits for 128B (the pattern repeats
// every 1024 bytes), two for 64B (512), one for 32B (256). `mode` is CUtensorMapSwizzle's
// numbering.
inline uint32_t swizzle(uint32_t addr, unsigned mode) {
  const uint32_t mask = mode == CU_TENSOR_MAP_SWIZZLE_128B  ? 7u
                        : mode == CU_TENSOR_MAP_SWIZZLE_64B ? 3u
                        : mode == CU_TENSOR_MAP_SWIZZLE_32B ? 1u
                                                            : 0u;
  return addr ^ (((addr >> 7) & mask) << 4);
}
inline unsigned swizzle_bytes(unsigned mode) { return mode == 0 ? 0u : 16u << mode; }

}  // namespace loom::simt::hopper_detail

namespace loom::hopper {

namespace hd = ::loom::simt::hopper_detail;

// ---- mbarrier ---------------------------------------------------------------------------

// PTX ISA "mbarrier.init": count in [1, 2^20 - 1]; phase 0, tx-count 0.
inline void mbarrier_init(uint64_t* bar, uint32_t count, std::source_location loc = std::source_location::current()) {
  const char* what = "mbarrier.init";
  hd::BlockState& S = hd::state(what);
  if (reinterpret_cast<uintptr_t>(bar) % 8)
    hd::fail("%s at %s:%u: %p is not 8-byte aligned", what, loc.file_name(), loc.line(), static_cast<void*>(bar));
  if (count == 0 || count >= (1u << 20))
    hd::fail("%s at %s:%u: count %u outside [1, 2^20 - 1]", what, loc.file_name(), loc.line(), count);
  hd::TsanHidden hidden;
  std::lock_guard<hd::SpinLock> lk(S.mu);
  hd::Mbarrier& b = S.bars[bar];
  b = hd::Mbarrier{count, count, 0, 0, true, loc.file_name(), loc.line()};
}

// PTX ISA "mbarrier.inval": later use is undefined; here it is reported.
inline void mbarrier_inval(uint64_t* bar, std::source_location loc = std::source_location::current()) {
  const char* what = "mbarrier.inval";
  hd::BlockState& S = hd::state(what);
  hd::TsanHidden hidden;
  std::lock_guard<hd::SpinLock> lk(S.mu);
  hd::find_barrier(S, bar, what, loc).valid = false;
}

// PTX ISA "mbarrier.arrive": returns the phase token (here: the phase number).
inline uint64_t mbarrier_arrive(uint64_t* bar, uint32_t count = 1,
                                std::source_location loc = std::source_location::current()) {
  return hd::arrive(bar, count, 0, "mbarrier.arrive", loc);
}
// mbarrier.arrive.expect_tx: expect-tx(bytes), then arrive-on (PTX ISA "mbarrier.arrive").
inline uint64_t mbarrier_arrive_expect_tx(uint64_t* bar, uint32_t bytes,
                                          std::source_location loc = std::source_location::current()) {
  return hd::arrive(bar, 1, bytes, "mbarrier.arrive.expect_tx", loc);
}
// PTX ISA "mbarrier.expect_tx": raises the tx-count without arriving.
inline void mbarrier_expect_tx(uint64_t* bar, uint32_t bytes,
                               std::source_location loc = std::source_location::current()) {
  const char* what = "mbarrier.expect_tx";
  hd::BlockState& S = hd::state(what);
  hd::TsanHidden hidden;
  std::lock_guard<hd::SpinLock> lk(S.mu);
  hd::add_tx(hd::find_barrier(S, bar, what, loc), bytes, what, loc);
}

// PTX ISA "mbarrier.test_wait / mbarrier.try_wait" .parity: test_wait never blocks;
// try_wait may block for a while and then return false (here: it yields once); wait_parity is
// the usual try_wait loop, blocking until the phase of `parity` has completed.
inline bool mbarrier_test_wait_parity(uint64_t* bar, uint32_t parity,
                                      std::source_location loc = std::source_location::current()) {
  const char* what = "mbarrier.test_wait.parity";
  hd::BlockState& S = hd::state(what);
  bool done;
  {
    hd::TsanHidden hidden;
    std::lock_guard<hd::SpinLock> lk(S.mu);
    done = hd::parity_done(S, bar, parity, what, loc);
  }
  if (done) ::loom::simt::detail::tsan_acquire(bar);
  return done;
}
inline bool mbarrier_try_wait_parity(uint64_t* bar, uint32_t parity,
                                     std::source_location loc = std::source_location::current()) {
  if (mbarrier_test_wait_parity(bar, parity, loc)) return true;
  ::loom::simt::detail::set_state(hd::State::kAsyncWait, "mbarrier.try_wait.parity", loc);
  sched_yield();
  const bool done = mbarrier_test_wait_parity(bar, parity, loc);
  // Still waiting (for the watchdog) while the caller loops on false.
  if (done) ::loom::simt::detail::set_state(hd::State::kRunning, "mbarrier.try_wait.parity", loc);
  return done;
}
inline void mbarrier_wait_parity(uint64_t* bar, uint32_t parity,
                                 std::source_location loc = std::source_location::current()) {
  const char* what = "mbarrier.try_wait.parity";
  hd::BlockState& S = hd::state(what);
  hd::wait_for(S, what, loc, [&] { return hd::parity_done(S, bar, parity, what, loc); });
  ::loom::simt::detail::tsan_acquire(bar);
}

// ---- named barriers: PTX ISA "bar, barrier" with an id and a thread count ---------------
// Barrier 0 is __syncthreads's; ids 1..15 are for warp-specialised producer/consumer hand-offs.
// count is in threads, a multiple of the warp size; every arrival of one phase must name the
// same count. bar.sync waits for the phase to end, bar.arrive does not.

namespace detail {
inline void named_barrier(unsigned id, unsigned count, bool wait, const std::source_location& loc) {
  const char* what = wait ? "bar.sync" : "bar.arrive";
  hd::BlockState& S = hd::state(what);
  const unsigned threads = 32 * S.L.nwarps;
  if (id == 0 || id > 15)
    hd::fail("%s at %s:%u: barrier id %u outside 1..15 (0 is __syncthreads's)", what, loc.file_name(), loc.line(), id);
  if (count == 0 || count % 32 || count > threads)
    hd::fail("%s at %s:%u: thread count %u must be a multiple of 32 in [32, %u] (the block's warps)", what,
             loc.file_name(), loc.line(), count, threads);
  hd::NamedBarrier& nb = S.named[id];
  ::loom::simt::detail::tsan_release(&nb.order_token);
  unsigned phase;
  {
    hd::TsanHidden hidden;
    std::lock_guard<hd::SpinLock> lk(S.mu);
    if (nb.arrived == 0) {
      nb.count = count;
      nb.file = loc.file_name();
      nb.line = loc.line();
    } else if (nb.count != count) {
      hd::fail(
          "named barrier %u: thread %u at %s:%u (%s) counts %u threads, but this phase began with %u at "
          "%s:%u (count mismatch)",
          id, hd::tid(), loc.file_name(), loc.line(), what, count, nb.count, nb.file, nb.line);
    }
    phase = nb.phase;
    if (++nb.arrived == nb.count) {
      nb.arrived = 0;
      ++nb.phase;
      hd::progress(S);
    }
  }
  if (!wait) return;
  hd::wait_for(S, what, loc, [&] { return nb.phase != phase; });
  ::loom::simt::detail::tsan_acquire(&nb.order_token);
}
}  // namespace detail

inline void named_barrier_sync(unsigned id, unsigned count,
                               std::source_location loc = std::source_location::current()) {
  detail::named_barrier(id, count, true, loc);
}
inline void named_barrier_arrive(unsigned id, unsigned count,
                                 std::source_location loc = std::source_location::current()) {
  detail::named_barrier(id, count, false, loc);
}

// ---- PTX ISA "Miscellaneous Instructions: setmaxnreg": .inc/.dec to a count in [24, 256], a multiple of 8,
// executed by all threads of the warpgroup alike (.sync.aligned). Registers are not modelled:
// the check is the whole model.
namespace detail {
inline void setmaxnreg(bool inc, unsigned n, const std::source_location& loc) {
  const char* what = "setmaxnreg";
  if (n < 24 || n > 256 || n % 8)
    hd::fail("%s at %s:%u: register count %u is not a multiple of 8 in [24, 256]", what, loc.file_name(), loc.line(),
             n);
  hd::meet(
      hd::state(what), what, uint64_t{n} << 1 | inc, loc, [](hd::WarpgroupMeet&, unsigned) {},
      [](hd::WarpgroupMeet&) {});
}
}  // namespace detail
template <unsigned N>
inline void setmaxnreg_inc(std::source_location loc = std::source_location::current()) {
  detail::setmaxnreg(true, N, loc);
}
template <unsigned N>
inline void setmaxnreg_dec(std::source_location loc = std::source_location::current()) {
  detail::setmaxnreg(false, N, loc);
}

// PTX ISA "membar / fence" (fence.proxy.async): orders the threads' generic-proxy
// shared-memory writes before later async-proxy (TMA, wgmma) reads. The emulator's async
// operations run in the issuing thread, so this orders nothing more than the compiler here.
inline void fence_proxy_async_shared() { std::atomic_signal_fence(std::memory_order_seq_cst); }
// mbarrier.init's visibility to the async proxy (fence.mbarrier_init.release.cluster).
inline void fence_barrier_init() { std::atomic_signal_fence(std::memory_order_seq_cst); }

}  // namespace loom::hopper

// ---- TMA: tensor maps (CUDA driver API, cuTensorMapEncodeTiled) --------------------------

namespace loom::simt::hopper_detail {

// What the emulated cuTensorMapEncodeTiled stores in CUtensorMap's 128 opaque bytes.
struct TensorMap {
  static constexpr uint32_t kMagic = 0x4c4d544du;  // "LMTM"
  uint32_t magic;
  uint8_t dtype, rank, swizzle, oob_nan, elem_bytes, pad[3];
  uint64_t address;
  uint64_t dims[5];
  uint64_t strides[5];  // bytes; strides[0] is the element size
  uint16_t box[5];
  uint8_t elem_strides[5];
};
static_assert(sizeof(TensorMap) <= sizeof(CUtensorMap));

inline unsigned dtype_bytes(unsigned t) {
  switch (t) {
    case CU_TENSOR_MAP_DATA_TYPE_UINT8:
      return 1;
    case CU_TENSOR_MAP_DATA_TYPE_UINT16:
    case CU_TENSOR_MAP_DATA_TYPE_FLOAT16:
    case CU_TENSOR_MAP_DATA_TYPE_BFLOAT16:
      return 2;
    case CU_TENSOR_MAP_DATA_TYPE_UINT32:
    case CU_TENSOR_MAP_DATA_TYPE_INT32:
    case CU_TENSOR_MAP_DATA_TYPE_FLOAT32:
    case CU_TENSOR_MAP_DATA_TYPE_FLOAT32_FTZ:
    case CU_TENSOR_MAP_DATA_TYPE_TFLOAT32:
    case CU_TENSOR_MAP_DATA_TYPE_TFLOAT32_FTZ:
      return 4;
    case CU_TENSOR_MAP_DATA_TYPE_UINT64:
    case CU_TENSOR_MAP_DATA_TYPE_INT64:
    case CU_TENSOR_MAP_DATA_TYPE_FLOAT64:
      return 8;
    default:
      return 0;  // the packed 4- and 6-bit types are not modelled
  }
}
inline bool dtype_is_float(unsigned t) {
  return t >= CU_TENSOR_MAP_DATA_TYPE_FLOAT16 && t <= CU_TENSOR_MAP_DATA_TYPE_TFLOAT32_FTZ;
}

// The fill of an out-of-bounds element: zero, or with NAN_REQUEST_ZERO_FMA the canonical NaN
// of the type.
inline void oob_fill(unsigned char* dst, const TensorMap& m) {
  std::memset(dst, 0, m.elem_bytes);
  if (!m.oob_nan) return;
  // All exponent and mantissa bits set: a NaN in f16, bf16, f32/tf32 and f64 alike.
  const uint64_t nan = m.elem_bytes == 2 ? 0x7fffu : m.elem_bytes == 4 ? 0x7fffffffu : 0x7fffffffffffffffull;
  std::memcpy(dst, &nan, m.elem_bytes);
}

inline const TensorMap& tensor_map(const CUtensorMap* map, const char* what, const Loc& loc) {
  const TensorMap* m = reinterpret_cast<const TensorMap*>(map);
  if (!map || m->magic != TensorMap::kMagic)
    fail("%s at %s:%u: %p is not a tensor map made by cuTensorMapEncodeTiled", what, loc.file_name(), loc.line(),
         static_cast<const void*>(map));
  return *m;
}

// Walks the box of a cp.async.bulk.tensor (PTX ISA "cp.async.bulk.tensor", tile mode, and
// "Tensor Access Modes: Tiled mode"): element e of the box, in order with dimension 0
// innermost, sits at byte e * elem_bytes of the box in shared memory before swizzling; along
// dimension i it reads every elem_strides[i]-th element, ceil(box[i] / elem_strides[i]) of
// them (the stride of dimension 0 is ignored without interleave). f(global element or null
// when out of bounds, shared byte offset before swizzle).
template <class F>
inline uint32_t walk_box(const TensorMap& m, const int32_t* coords, F f) {
  uint32_t count[5] = {1, 1, 1, 1, 1};
  for (unsigned i = 0; i < m.rank; ++i) {
    const unsigned es = i == 0 ? 1u : m.elem_strides[i];
    count[i] = (m.box[i] + es - 1) / es;
  }
  uint32_t idx[5] = {0, 0, 0, 0, 0};
  uint32_t off = 0;
  const uint32_t total = count[0] * count[1] * count[2] * count[3] * count[4];
  for (uint32_t e = 0; e < total; ++e, off += m.elem_bytes) {
    bool in = true;
    uint64_t g = m.address;
    for (unsigned i = 0; i < m.rank; ++i) {
      const int64_t c = int64_t(coords[i]) + int64_t(idx[i]) * (i == 0 ? 1 : m.elem_strides[i]);
      if (c < 0 || uint64_t(c) >= m.dims[i])
        in = false;
      else
        g += uint64_t(c) * m.strides[i];
    }
    f(in ? reinterpret_cast<unsigned char*>(g) : nullptr, off);
    for (unsigned i = 0; i < 5 && ++idx[i] == count[i]; ++i) idx[i] = 0;
  }
  return total * m.elem_bytes;
}

inline void check_box_destination(const TensorMap& m, uint32_t saddr, const void* p, const char* what, const Loc& loc) {
  const unsigned align = m.swizzle ? 128u : 16u;
  if (saddr % align)
    fail("%s at %s:%u: %p (shared address 0x%x) is not %u-byte aligned (%s box; align_smem)", what, loc.file_name(),
         loc.line(), p, saddr, align, m.swizzle ? "swizzled" : "unswizzled");
}

inline void tag_chunks(BlockState& S, uint32_t saddr, uint32_t bytes, uint8_t tag) {
  TsanHidden hidden;
  std::lock_guard<SpinLock> lk(S.mu);
  if (S.tags.empty()) S.tags.assign((kDynamicWindowBase + S.L.dyn_bytes) / 16 + 1, kUntagged);
  for (uint32_t c = saddr / 16; c <= (saddr + bytes - 1) / 16 && c < S.tags.size(); ++c) S.tags[c] = tag;
}

// The box of a copy of `rank` dimensions through map, placed at p in shared memory: checked,
// with its shared address and size.
struct Box {
  const TensorMap& m;
  uint32_t base, bytes;
};
inline Box shared_box(const CUtensorMap* map, unsigned rank, const void* p, const char* what, const Loc& loc) {
  const TensorMap& m = tensor_map(map, what, loc);
  if (rank != m.rank)
    fail("%s at %s:%u: a %uD copy through a tensor map of rank %u", what, loc.file_name(), loc.line(), rank, m.rank);
  uint32_t bytes = m.elem_bytes;
  for (unsigned i = 0; i < m.rank; ++i)
    bytes *= i == 0 ? m.box[0] : (m.box[i] + m.elem_strides[i] - 1) / m.elem_strides[i];
  const uint32_t base = smem_address(p, bytes, what, loc);
  check_box_destination(m, base, p, what, loc);
  return {m, base, bytes};
}

inline void tma_load(void* dst, const CUtensorMap* map, const int32_t* coords, unsigned rank, uint64_t* bar,
                     const Loc& loc) {
  const char* what = "cp.async.bulk.tensor (global to shared)";
  BlockState& S = state(what);
  const auto [m, base, bytes] = shared_box(map, rank, dst, what, loc);
  const Launch& launch = S.L;
  walk_box(m, coords, [&](const unsigned char* g, uint32_t off) {
    unsigned char* d = smem_at(launch, swizzle(base + off, m.swizzle));
    if (g)
      std::memcpy(d, g, m.elem_bytes);
    else
      oob_fill(d, m);
  });
  // Swizzling permutes 16-byte chunks inside their own 128-byte row, so the box's chunks are
  // still the ones it covers.
  tag_chunks(S, base, bytes, uint8_t(1 + m.swizzle));
  complete_tx(bar, bytes, what, loc);
}

inline void tma_store(const CUtensorMap* map, const int32_t* coords, unsigned rank, const void* src, const Loc& loc) {
  const char* what = "cp.async.bulk.tensor (shared to global)";
  state(what);
  const auto [m, base, bytes] = shared_box(map, rank, src, what, loc);
  const Launch& launch = *::loom::simt::detail::t_ctx.launch;
  // Out-of-bounds elements are not written (PTX ISA "cp.async.bulk.tensor": bounds).
  walk_box(m, coords, [&](unsigned char* g, uint32_t off) {
    if (g) std::memcpy(g, smem_at(launch, swizzle(base + off, m.swizzle)), m.elem_bytes);
  });
}

// PTX ISA "cp.async.bulk": a linear copy of a multiple of 16 bytes between 16-byte aligned
// addresses.
inline void check_bulk(const void* dst, const void* src, uint32_t bytes, const char* what, const Loc& loc) {
  if (bytes == 0 || bytes % 16 || reinterpret_cast<uintptr_t>(dst) % 16 || reinterpret_cast<uintptr_t>(src) % 16)
    fail("%s at %s:%u: %u bytes from %p to %p: size and both addresses must be multiples of 16", what, loc.file_name(),
         loc.line(), bytes, src, dst);
}

}  // namespace loom::simt::hopper_detail

namespace loom::hopper {

// cuTensorMapEncodeTiled (CUDA driver API, "Tensor Map Object Management"), with the checks
// its documentation lists for the tiled, non-interleaved maps modelled here. A failure prints
// why (the driver only returns CUDA_ERROR_INVALID_VALUE) and returns that code.
inline CUresult encode_tensor_map_tiled(CUtensorMap* map, CUtensorMapDataType dtype, cuuint32_t rank, void* address,
                                        const cuuint64_t* dims, const cuuint64_t* strides, const cuuint32_t* box,
                                        const cuuint32_t* elem_strides, CUtensorMapInterleave interleave,
                                        CUtensorMapSwizzle swizzle, CUtensorMapL2promotion l2,
                                        CUtensorMapFloatOOBfill oob) {
  namespace hd = ::loom::simt::hopper_detail;
  const auto bad = [](const char* fmt, auto... args) {
    std::fputs("loom simt: cuTensorMapEncodeTiled: ", stderr);
    std::fprintf(stderr, fmt, args...);
    std::fputc('\n', stderr);
    return CUDA_ERROR_INVALID_VALUE;
  };
  if (!map || reinterpret_cast<uintptr_t>(map) % 64)
    return bad("tensorMap %p is not 64-byte aligned", static_cast<void*>(map));
  const unsigned eb = hd::dtype_bytes(dtype);
  if (eb == 0) return bad("data type %d is not modelled (the packed 4/6-bit types) or invalid", int(dtype));
  if (rank < 1 || rank > 5) return bad("tensorRank %u outside 1..5", rank);
  if (interleave != CU_TENSOR_MAP_INTERLEAVE_NONE)
    return bad("interleave %d: only INTERLEAVE_NONE is modelled", int(interleave));
  if (swizzle > CU_TENSOR_MAP_SWIZZLE_128B)
    return bad("swizzle %d: only NONE, 32B, 64B and 128B are modelled", int(swizzle));
  if (int(l2) < 0 || l2 > CU_TENSOR_MAP_L2_PROMOTION_L2_256B) return bad("l2Promotion %d invalid", int(l2));
  if (oob != CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE &&
      (oob != CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA || !hd::dtype_is_float(dtype)))
    return bad("oobFill %d: NaN fill needs a floating-point type", int(oob));
  if (reinterpret_cast<uintptr_t>(address) % 16) return bad("globalAddress %p is not 16-byte aligned", address);
  hd::TensorMap m{};
  m.magic = hd::TensorMap::kMagic;
  m.dtype = uint8_t(dtype);
  m.rank = uint8_t(rank);
  m.swizzle = uint8_t(swizzle);
  m.oob_nan = oob != CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE;
  m.elem_bytes = uint8_t(eb);
  m.address = reinterpret_cast<uint64_t>(address);
  m.strides[0] = eb;
  uint64_t extent = 0;  // bytes spanned by dimensions below i
  for (unsigned i = 0; i < rank; ++i) {
    if (dims[i] == 0 || dims[i] > (uint64_t{1} << 32))
      return bad("globalDim[%u] = %llu outside 1..2^32", i, static_cast<unsigned long long>(dims[i]));
    m.dims[i] = dims[i];
    if (i > 0) {
      const uint64_t s = strides[i - 1];
      if (s % 16 || s >= (uint64_t{1} << 40))
        return bad("globalStrides[%u] = %llu is not a multiple of 16 below 2^40", i - 1,
                   static_cast<unsigned long long>(s));
      if (s < extent)
        return bad("globalStrides[%u] = %llu is smaller than the %llu bytes of the dimensions below it", i - 1,
                   static_cast<unsigned long long>(s), static_cast<unsigned long long>(extent));
      m.strides[i] = s;
    }
    extent = m.strides[i] * dims[i];
    if (box[i] == 0 || box[i] > 256) return bad("boxDim[%u] = %u outside 1..256", i, box[i]);
    m.box[i] = uint16_t(box[i]);
    if (elem_strides[i] == 0 || elem_strides[i] > 8)
      return bad("elementStrides[%u] = %u outside 1..8", i, elem_strides[i]);
    m.elem_strides[i] = uint8_t(elem_strides[i]);
  }
  const unsigned inner = box[0] * eb;
  if (inner % 16) return bad("boxDim[0] * element size = %u bytes is not a multiple of 16", inner);
  if (swizzle != CU_TENSOR_MAP_SWIZZLE_NONE && inner > hd::swizzle_bytes(swizzle))
    return bad("the box's inner dimension (%u bytes) exceeds the %u-byte swizzle span", inner,
               hd::swizzle_bytes(swizzle));
  std::memset(static_cast<void*>(map), 0, sizeof(CUtensorMap));
  std::memcpy(static_cast<void*>(map), &m, sizeof m);
  return CUDA_SUCCESS;
}

// cp.async.bulk.tensor.{1..5}d.shared::cluster.global.tile.mbarrier::complete_tx::bytes: the
// box at coords into shared memory at dst, its bytes completed on bar.
template <int R>
inline void tma_load(void* dst, const CUtensorMap* map, uint64_t* bar, const int32_t (&coords)[R],
                     std::source_location loc = std::source_location::current()) {
  static_assert(R >= 1 && R <= 5);
  ::loom::simt::hopper_detail::tma_load(dst, map, coords, R, bar, loc);
}
// cp.async.bulk.tensor.{1..5}d.global.shared::cta.tile.bulk_group: the box at coords from
// shared memory at src; out-of-bounds elements are dropped.
template <int R>
inline void tma_store(const CUtensorMap* map, const void* src, const int32_t (&coords)[R],
                      std::source_location loc = std::source_location::current()) {
  static_assert(R >= 1 && R <= 5);
  ::loom::simt::hopper_detail::tma_store(map, coords, R, src, loc);
}
// cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes
inline void bulk_copy_g2s(void* dst, const void* src, uint32_t bytes, uint64_t* bar,
                          std::source_location loc = std::source_location::current()) {
  namespace hd = ::loom::simt::hopper_detail;
  const char* what = "cp.async.bulk (global to shared)";
  hd::BlockState& S = hd::state(what);
  hd::check_bulk(dst, src, bytes, what, loc);
  const uint32_t saddr = hd::smem_address(dst, bytes, what, loc);
  std::memcpy(dst, src, bytes);
  hd::tag_chunks(S, saddr, bytes, uint8_t(1 + CU_TENSOR_MAP_SWIZZLE_NONE));
  hd::complete_tx(bar, bytes, what, loc);
}
// cp.async.bulk.global.shared::cta.bulk_group
inline void bulk_copy_s2g(void* dst, const void* src, uint32_t bytes,
                          std::source_location loc = std::source_location::current()) {
  namespace hd = ::loom::simt::hopper_detail;
  const char* what = "cp.async.bulk (shared to global)";
  hd::check_bulk(dst, src, bytes, what, loc);
  hd::smem_address(src, bytes, what, loc);
  std::memcpy(dst, src, bytes);
}
// cp.async.bulk.commit_group / cp.async.bulk.wait_group.read N: stores complete at issue here,
// so these order nothing (a missing wait before reusing the source is not caught).
inline void bulk_commit_group() {}
template <int N>
inline void bulk_wait_group_read() {}

}  // namespace loom::hopper

// ---- wgmma: PTX ISA "Asynchronous Warpgroup Level Matrix Multiply-Accumulate Instructions" --

namespace loom::simt::hopper_detail {

// A decoded matrix descriptor (PTX ISA "Asynchronous Warpgroup Level Matrix Shared Memory
// Layout: Matrix Descriptor"): bits 0-13 start address >> 4, 16-29 leading dimension byte
// offset >> 4, 32-45 stride dimension byte offset >> 4, 49-51 matrix base offset, 62-63
// swizzle (0 none, 1 128B, 2 64B, 3 32B).
struct Descriptor {
  uint32_t start, lbo, sbo, base_offset;
  unsigned mode;  // as CUtensorMapSwizzle
};
inline Descriptor decode(uint64_t d) {
  static constexpr unsigned kMode[4] = {CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                        CU_TENSOR_MAP_SWIZZLE_64B, CU_TENSOR_MAP_SWIZZLE_32B};
  return {uint32_t(d & 0x3FFF) << 4, uint32_t(d >> 16 & 0x3FFF) << 4, uint32_t(d >> 32 & 0x3FFF) << 4,
          uint32_t(d >> 49 & 7), kMode[d >> 62]};
}
inline const char* mode_name(unsigned mode) {
  static const char* const names[] = {"no swizzle", "32B swizzle", "64B swizzle", "128B swizzle"};
  return names[mode & 3];
}

// Reads a K-major rows x 16 operand of 16-bit elements through a descriptor, as the canonical
// layouts of PTX ISA "Shared Memory Matrix Layout" place it (CUTLASS names them
// Layout_K_{INTER,SW32,SW64,SW128}_Atom):
//  - no swizzle: 8x16-byte core matrices; element (r, k) at start + (r/8)*SBO + (k/8)*LBO +
//    (r%8)*16 + (k%8)*2;
//  - swizzle of W = 32/64/128 bytes: rows of W bytes, 8-row groups SBO apart, element (r, k) at
//    start + (r/8)*SBO + (r%8)*W + 2k, then the swizzle of that address (LBO unused).
// The start must sit in the first row of its swizzle pattern (8*W bytes), a k-step of 32 bytes
// inside it: the base offset field, which would say otherwise, is not modelled.
template <class T>
inline void read_operand(uint64_t desc, unsigned rows, float* out, const char* what, const char* which,
                         const Loc& loc) {
  BlockState& S = *static_cast<BlockState*>(::loom::simt::detail::t_ctx.launch->ext.load());
  const Descriptor d = decode(desc);
  const unsigned W = swizzle_bytes(d.mode);
  if (d.base_offset)
    fail(
        "%s at %s:%u: %s descriptor has matrix base offset %u: not modelled (start the operand at its "
        "swizzle pattern's first row)",
        what, loc.file_name(), loc.line(), which, d.base_offset);
  if (W && (d.start % (8 * W) >= W || d.start % W + 32 > W))
    fail(
        "%s at %s:%u: %s descriptor start 0x%x is misaligned for %s: it must lie in the first %u-byte row of "
        "its %u-byte pattern, with the 32-byte k-step inside that row",
        what, loc.file_name(), loc.line(), which, d.start, mode_name(d.mode), W, 8 * W);
  for (unsigned r = 0; r < rows; ++r)
    for (unsigned k = 0; k < 16; ++k) {
      const uint32_t a = W ? d.start + (r / 8) * d.sbo + (r % 8) * W + 2 * k
                           : d.start + (r / 8) * d.sbo + (k / 8) * d.lbo + (r % 8) * 16 + (k % 8) * 2;
      const uint32_t phys = swizzle(a, d.mode);
      if (phys < kDynamicWindowBase || phys + 2 > kDynamicWindowBase + S.L.dyn_bytes)
        fail(
            "%s at %s:%u: %s element (%u, %u) at shared address 0x%x is outside the dynamic shared memory "
            "(0x%x, %zu bytes)",
            what, loc.file_name(), loc.line(), which, r, k, phys, kDynamicWindowBase, S.L.dyn_bytes);
      uint8_t tag;
      {
        TsanHidden hidden;
        std::lock_guard<SpinLock> lk(S.mu);
        tag = S.tags.empty() ? kUntagged : S.tags[phys / 16];
      }
      if (tag != kUntagged && tag != 1 + d.mode)
        fail(
            "%s at %s:%u: %s descriptor reads shared address 0x%x with %s, but TMA wrote it with %s "
            "(swizzle mismatch)",
            what, loc.file_name(), loc.line(), which, phys, mode_name(d.mode), mode_name(tag - 1));
      T v;
      std::memcpy(static_cast<void*>(&v), smem_at(S.L, phys), 2);
      out[r * 16 + k] = float(v);
    }
}

// The value of one of the thread's accumulator registers as the next wgmma sees it: its
// pending result if an earlier wgmma has one in flight (chained accumulation needs no wait),
// else the register itself.
inline float accumulator_input(const ThreadWgmma& w, const float* p) {
  for (auto it = w.open.rbegin(); it != w.open.rend(); ++it)
    if (it->first == p) return it->second;
  for (auto g = w.committed.rbegin(); g != w.committed.rend(); ++g)
    for (auto it = g->rbegin(); it != g->rend(); ++it)
      if (it->first == p) return it->second;
  return *p;
}

// wgmma.mma_async.sync.aligned.m64nNk16.f32.{bf16,f16}: D (64 x N, f32) = A (64 x 16) * B
// (16 x N) + (scale_d ? D : 0), A and B K-major. Register fragments (PTX ISA "Register
// Fragments and Shared Memory Matrix Layouts", wgmma .m64nNk16): warp w of the warpgroup owns
// rows 16w..16w+15; lane = 4*g + c.
//  - A (4 x .b32, two 16-bit values each, low half first): register j holds row
//    16w + g + 8*(j%2), columns 2c + 8*(j/2) + {0, 1}.
//  - D (N/2 x f32): d[i] is row 16w + g + 8*((i/2)%2), column 8*(i/4) + 2c + i%2.
template <class T>
inline void wgmma(float* d, unsigned n, const uint32_t* a_regs, uint64_t desc_a, uint64_t desc_b, int scale_d,
                  const Loc& loc) {
  const char* what = "wgmma.mma_async";
  BlockState& S = state(what);
  ThreadWgmma& self = S.wgmma[tid()];
  if (!self.fenced)
    fail(
        "%s at %s:%u: thread %u issues without a wgmma.fence since its last wgmma.wait_group (or ever): the "
        "warpgroup's register accesses must be fenced first",
        what, loc.file_name(), loc.line(), tid());
  const uint64_t key =
      desc_b * 0x9E3779B97F4A7C15ull ^ (a_regs ? 0 : desc_a) ^ uint64_t(n) << 1 ^ uint64_t(scale_d != 0);
  const unsigned half = n / 2;
  meet(
      S, what, key, loc,
      [&](WarpgroupMeet& m, unsigned i) {
        if (m.values.empty()) {
          m.values.resize(128 * 128);
          m.a_regs.resize(128 * 4);
        }
        for (unsigned j = 0; j < half; ++j) m.values[i * 128 + j] = accumulator_input(self, d + j);
        if (a_regs) std::copy(a_regs, a_regs + 4, m.a_regs.begin() + i * 4);
      },
      [&](WarpgroupMeet& m) {
        std::vector<float> A(64 * 16), B(size_t(n) * 16);
        if (!a_regs) read_operand<T>(desc_a, 64, A.data(), what, "A", loc);
        read_operand<T>(desc_b, n, B.data(), what, "B", loc);
        TsanHidden hidden;
        if (a_regs) {
          for (unsigned t = 0; t < 128; ++t) {
            const unsigned w = t / 32, g = t % 32 / 4, c = t % 4;
            for (unsigned j = 0; j < 4; ++j)
              for (unsigned h = 0; h < 2; ++h) {
                const uint16_t bits = uint16_t(m.a_regs[t * 4 + j] >> (16 * h));
                T v;
                std::memcpy(static_cast<void*>(&v), &bits, 2);
                A[(16 * w + g + 8 * (j % 2)) * 16 + 2 * c + 8 * (j / 2) + h] = float(v);
              }
          }
        }
        for (unsigned t = 0; t < 128; ++t) {
          const unsigned w = t / 32, g = t % 32 / 4, c = t % 4;
          for (unsigned i = 0; i < half; ++i) {
            const unsigned row = 16 * w + g + 8 * ((i / 2) % 2), col = 8 * (i / 4) + 2 * c + i % 2;
            float acc = scale_d ? m.values[t * 128 + i] : 0.0f;
            for (unsigned k = 0; k < 16; ++k) acc = std::fma(A[row * 16 + k], B[col * 16 + k], acc);
            m.values[t * 128 + i] = acc;
          }
        }
      });
  TsanHidden hidden;
  const WarpgroupMeet& m = S.meets[tid() / 128];
  const unsigned i = tid() % 128;
  for (unsigned j = 0; j < half; ++j) {
    self.open.emplace_back(d + j, m.values[i * 128 + j]);
    d[j] = std::numeric_limits<float>::quiet_NaN();
  }
}

}  // namespace loom::simt::hopper_detail

namespace loom::hopper {

// cvta.to.shared: the shared-window address of p, in the dynamic shared memory here.
inline uint32_t smem_u32(const void* p, std::source_location loc = std::source_location::current()) {
  return ::loom::simt::hopper_detail::smem_address(p, 0, "shared-window address", loc);
}

// A wgmma matrix descriptor for the K-major operand at smem (see read_operand for the
// layouts); swizzle as CUtensorMapSwizzle, offsets in bytes. Here an address that is not
// 16-byte aligned, or not in the dynamic shared memory, is reported; the GPU would drop the
// low bits.
inline uint64_t make_smem_desc(const void* smem, CUtensorMapSwizzle swizzle, uint32_t lbo_bytes, uint32_t sbo_bytes,
                               std::source_location loc = std::source_location::current()) {
  namespace hd = ::loom::simt::hopper_detail;
  const char* what = "wgmma matrix descriptor";
  const uint32_t a = hd::smem_address(smem, 16, what, loc);
  if (a % 16 || lbo_bytes % 16 || sbo_bytes % 16)
    hd::fail("%s at %s:%u: start 0x%x, leading byte offset %u and stride byte offset %u must be multiples of 16", what,
             loc.file_name(), loc.line(), a, lbo_bytes, sbo_bytes);
  static constexpr uint64_t kLayout[4] = {0, 3, 2, 1};  // CUtensorMapSwizzle -> descriptor bits 62-63
  return uint64_t((a >> 4) & 0x3FFF) | uint64_t((lbo_bytes >> 4) & 0x3FFF) << 16 |
         uint64_t((sbo_bytes >> 4) & 0x3FFF) << 32 | kLayout[swizzle & 3] << 62;
}

// wgmma.fence.sync.aligned: required before the first wgmma.mma_async and after the warpgroup
// touched the accumulator or A registers (PTX ISA "wgmma.fence"); here after every wait_group.
inline void wgmma_fence(std::source_location loc = std::source_location::current()) {
  ::loom::simt::hopper_detail::state("wgmma.fence").wgmma[::loom::simt::hopper_detail::tid()].fenced = true;
  (void)loc;
}
// wgmma.commit_group.sync.aligned: the wgmma operations issued since the last commit form a
// group (an empty group if none).
inline void wgmma_commit_group() {
  namespace hd = ::loom::simt::hopper_detail;
  hd::ThreadWgmma& w = hd::state("wgmma.commit_group").wgmma[hd::tid()];
  w.committed.push_back(std::move(w.open));
  w.open.clear();
}
// wgmma.wait_group.sync.aligned N: waits until at most N groups are pending; only then do
// their accumulators hold results (the emulator writes them here, and keeps the rest NaN).
template <int N>
inline void wgmma_wait_group() {
  static_assert(N >= 0 && N <= 7, "wgmma.wait_group takes 0..7");
  namespace hd = ::loom::simt::hopper_detail;
  hd::ThreadWgmma& w = hd::state("wgmma.wait_group").wgmma[hd::tid()];
  while (w.committed.size() > size_t(N)) {
    for (const auto& [p, v] : w.committed.front()) *p = v;
    w.committed.erase(w.committed.begin());
  }
  for (const auto& g : w.committed)
    for (const auto& [p, v] : g) *p = std::numeric_limits<float>::quiet_NaN();
  for (const auto& [p, v] : w.open) *p = std::numeric_limits<float>::quiet_NaN();
  w.fenced = false;
}

// wgmma with N a multiple of 8 in [8, 256]; T is __nv_bfloat16 or __half. _ss: A and B
// through descriptors; _rs: A from registers (the fragment above), B through a descriptor.
template <int N, class T>
inline void wgmma_ss(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, int scale_d,
                     std::source_location loc = std::source_location::current()) {
  static_assert(N % 8 == 0 && N >= 8 && N <= 256, "wgmma m64nNk16: N is a multiple of 8 up to 256");
  static_assert(std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>);
  ::loom::simt::hopper_detail::wgmma<T>(d, N, nullptr, desc_a, desc_b, scale_d, loc);
}
template <int N, class T>
inline void wgmma_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b, int scale_d,
                     std::source_location loc = std::source_location::current()) {
  static_assert(N % 8 == 0 && N >= 8 && N <= 256, "wgmma m64nNk16: N is a multiple of 8 up to 256");
  static_assert(std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>);
  ::loom::simt::hopper_detail::wgmma<T>(d, N, a, 0, desc_b, scale_d, loc);
}

}  // namespace loom::hopper

// Thread-block clusters are not emulated: a kernel declared with a cluster of more than one
// block does not compile here (the alignment 3 is refused: "requested alignment is not a
// positive power of 2"), one of 1x1x1 compiles and runs as a plain block.
#undef __cluster_dims__
#define __cluster_dims__(x, y, z) __attribute__((aligned((x) * (y) * (z) == 1 ? 1 : 3)))
