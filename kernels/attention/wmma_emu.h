// wmma_emu.h: emulator models of the warp-level hardware instructions attention.cu uses on
// the GPU, so that the emulated build runs the tensor-core kernels themselves, not a
// look-alike:
//  - the warp matrix product `mma.sync.m16n8k16.row.col.f32.bf16.bf16.f32` (the instruction
//    nvcuda::wmma also compiles to), with its documented per-lane fragment layout;
//  - `ldmatrix.sync.m8n8.{x2,x4}{,.trans}.b16`, which fills fragments from shared memory
//    with the row addresses that the lanes supply;
//  - `cp.async` 16-byte copies into shared memory with commit/wait groups.
// Only the instructions are modelled. Everything around them (the row address each lane
// gives ldmatrix, the online softmax on accumulator registers, the accumulator -> operand
// reuse of P and dS) is the code that also runs on the GPU.
//
// Why mma.sync and not the WMMA API: WMMA leaves the accumulator layout unspecified, so the
// per-row softmax would have to go through shared memory. mma.sync's layout is in the PTX
// manual (m16n8k16, "Matrix Fragments for mma.m16n8k16"), which lets the softmax run on
// registers as in FlashAttention-2. For a lane with g = lane / 4 and t = lane % 4:
//   A (16x16, row-major) a0:(g, 2t..2t+1) a1:(g+8, 2t..) a2:(g, 2t+8..) a3:(g+8, 2t+8..)
//   B (16x8, "col")      b0:(k = 2t..2t+1, n = g)  b1:(k = 2t+8..2t+9, n = g)
//   C (16x8, f32)        c0,c1:(g, 2t..2t+1)  c2,c3:(g+8, 2t..2t+1)
// where a 32-bit operand register holds two bf16, the lower k in the low half.
//
// Cost: each lane must see the other lanes' registers, which the emulator can only do
// through memory and a __syncwarp, and a warp collective costs ~0.5 ms per 128-thread block
// there. So the model works a whole warp-tile product at a time (all k- and n-steps of one
// `WarpMma::gemm` call): every lane stages what it would feed the instructions (a register
// fragment, or its ldmatrix row address), one __syncwarp, then every lane computes its own
// accumulator elements, reading each operand register of each lane as the layouts define
// it; for an ldmatrix operand that register is resolved through the other lanes' addresses
// as the PTX manual distributes them:
//   non-transposed: register i of lane L = tile i, row L / 4, elements 2 (L % 4) and +1,
//                   from the address of lane 8 i + L / 4;
//   .trans:         register i of lane L = tile i, rows 2 (L % 4) and +1, column L / 4,
//                   from the addresses of lanes 8 i + 2 (L % 4) and +1.
// The staging area is double-buffered, so one __syncwarp per product is enough (MmaStage).
#pragma once
#include "kernels/common/cuda_compat.h"

#if LOOM_SIMT_EMULATION

#include <cstdint>
#include <cstring>
#include <source_location>
#include <vector>

namespace loom::attn_emu {

constexpr int kMaxWarps = 8;
constexpr int kStageWords = 512;  // per lane and buffer: the largest product stages < 300

// One staging slot per (buffer, warp, lane). Static storage is exact here for the same
// reason `__shared__` is: blocks run one at a time and launches are serialised.
inline uint32_t* stage_slot(int buffer, int warp, int lane) {
  static uint32_t slots[2][kMaxWarps][32][kStageWords];
  return slots[buffer][warp][lane];
}

inline float bf16_bits_to_float(uint32_t bits16) {
  const uint32_t u = bits16 << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// The half (0 = low, 1 = high) of a staged register: element k of a pair.
inline float staged_elem(const uint32_t* slot, int reg, int half) {
  return bf16_bits_to_float((slot[reg] >> (16 * half)) & 0xffffu);
}

// An operand the way a loader hands it over: a register fragment (member x[]) or an
// ldmatrix operand (member row: this lane's row address; kTrans, kNumRegs).
template <class Op>
concept LdsmOperand = requires(const Op& op) { op.row; Op::kTrans; };

inline float bf16_at(const void* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return bf16_bits_to_float(bits);
}

// Kernel-local state of the model: which staging buffer the next product uses. Products
// alternate buffers; a lane can only overwrite buffer b (product n+2) after passing the
// __syncwarp of product n+1, which every lane reaches only after reading buffer b for
// product n. Every lane of a warp makes the same sequence of calls, so the parities agree.
struct MmaStage {
  int parity = 0;

  // acc[mt][nt] += sum over kt of A(mt, kt) * B(kt, nt), where load_a(mt, kt) returns this
  // lane's A operand of the 16x16 tile and load_b(kt, nt) its B operand of the 16x8 tile:
  // the same calls the GPU path makes before each mma.sync.
  template <int MT, int KT, int NT, class LoadA, class LoadB>
  void gemm(float (&acc)[MT][NT][4], LoadA&& load_a, LoadB&& load_b) {
    using OpA = decltype(load_a(0, 0));
    using OpB = decltype(load_b(0, 0));
    constexpr int kA = MT * KT * 4, kB = KT * NT * 2;
    static_assert(kA + kB <= kStageWords, "warp tile too large for the mma staging area");
    const unsigned tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const int warp = int(tid / 32), lane = int(tid % 32);
    if (warp >= kMaxWarps) ::loom::simt::detail::fail("mma model: more than %d warps in a block", kMaxWarps);
    uint32_t* mine = stage_slot(parity, warp, lane);
    for (int mt = 0; mt < MT; ++mt)
      for (int kt = 0; kt < KT; ++kt) stage(mine + (mt * KT + kt) * 4, load_a(mt, kt));
    for (int kt = 0; kt < KT; ++kt)
      for (int nt = 0; nt < NT; ++nt) stage(mine + kA + (kt * NT + nt) * 2, load_b(kt, nt));
    __syncwarp();
    const int g = lane / 4, t = lane % 4;
    for (int mt = 0; mt < MT; ++mt)
      for (int nt = 0; nt < NT; ++nt)
        for (int i = 0; i < 4; ++i) {
          const int row = g + 8 * (i / 2), col = 2 * t + (i % 2);
          float c = acc[mt][nt][i];
          for (int kt = 0; kt < KT; ++kt)
            for (int k = 0; k < 16; ++k) {
              // A(row, k) is in lane (row % 8) * 4 + (k % 8) / 2, register (row / 8) + 2 (k / 8);
              // B(k, col) in lane col * 4 + (k % 8) / 2, register k / 8; half k % 2 of each.
              const float av = element<OpA>(warp, (mt * KT + kt) * 4, (row % 8) * 4 + (k % 8) / 2,
                                            row / 8 + 2 * (k / 8), k % 2);
              const float bv = element<OpB>(warp, kA + (kt * NT + nt) * 2, col * 4 + (k % 8) / 2, k / 8, k % 2);
              c = std::fma(av, bv, c);
            }
          acc[mt][nt][i] = c;
        }
    parity ^= 1;
  }

 private:
  template <class Op>
  static void stage(uint32_t* dst, const Op& op) {
    if constexpr (LdsmOperand<Op>) {
      if (reinterpret_cast<uintptr_t>(op.row) & 15u)
        ::loom::simt::detail::fail("ldmatrix: row address %p is not 16-byte aligned", static_cast<const void*>(op.row));
      std::memcpy(dst, &op.row, sizeof op.row);
    } else {
      for (int r = 0; r < int(sizeof op.x / sizeof op.x[0]); ++r) dst[r] = op.x[r];
    }
  }

  // Half `half` of register `reg` of lane `lane`'s operand staged at word `off`.
  template <class Op>
  float element(int warp, int off, int lane, int reg, int half) const {
    if constexpr (LdsmOperand<Op>) {
      static_assert(Op::kNumRegs == 2 || Op::kNumRegs == 4);
      const int src = Op::kTrans ? 8 * reg + 2 * (lane % 4) + half : 8 * reg + lane / 4;
      const int col = Op::kTrans ? lane / 4 : 2 * (lane % 4) + half;
      const char* row;
      std::memcpy(&row, stage_slot(parity, warp, src) + off, sizeof row);
      return bf16_at(row + 2 * col);
    } else {
      return staged_elem(stage_slot(parity, warp, lane) + off, reg, half);
    }
  }
};

// ---- cp.async ---------------------------------------------------------------------------
// The GPU copies in the background and guarantees the data only after cp.async.wait_group.
// The model defers every copy to that wait, the latest moment the hardware may deliver it:
// a kernel that reads its tile before waiting reads the emulator's NaN poison (or the
// previous tile), and its results are wrong here as they might be on the device.
struct PendingCopy {
  void* dst;
  const void* src;  // null: zero-fill (the src-size 0 form)
};

struct CopyQueue {
  std::vector<PendingCopy> open;                 // since the last commit
  std::vector<std::vector<PendingCopy>> groups;  // committed, oldest first
};

inline CopyQueue& copy_queue() {
  thread_local CopyQueue q;
  return q;
}

inline void cp_async_16(void* dst, const void* src, bool valid,
                        std::source_location loc = std::source_location::current()) {
  if ((reinterpret_cast<uintptr_t>(dst) | (valid ? reinterpret_cast<uintptr_t>(src) : 0)) & 15u)
    ::loom::simt::detail::fail("cp.async at %s:%u: 16-byte copy with a misaligned address (dst %p, src %p)",
                               loc.file_name(), loc.line(), dst, src);
  copy_queue().open.push_back({dst, valid ? src : nullptr});
}

inline void cp_async_commit() {
  CopyQueue& q = copy_queue();
  q.groups.push_back(std::move(q.open));
  q.open.clear();
}

// Completes all but the newest `pending` committed groups, as cp.async.wait_group does.
inline void cp_async_wait(int pending) {
  CopyQueue& q = copy_queue();
  while (int(q.groups.size()) > pending) {
    for (const PendingCopy& c : q.groups.front()) {
      if (c.src)
        std::memcpy(c.dst, c.src, 16);
      else
        std::memset(c.dst, 0, 16);
    }
    q.groups.erase(q.groups.begin());
  }
}

}  // namespace loom::attn_emu

#endif  // LOOM_SIMT_EMULATION
