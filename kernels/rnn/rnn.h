// rnn.h: recurrent layers over a whole sequence (tanh RNN, LSTM, GRU), forward and backward.
// One layer per call; models stack calls. Layouts (PyTorch's gate order, so weights map 1:1):
//   x      [B, S, I]     input sequence (batch-major, like every graph activation)
//   w_ih   [G*H, I]      input weights, gates stacked: LSTM i,f,g,o  GRU r,z,n  RNN one
//   w_hh   [G*H, H]      recurrent weights
//   b_ih   [G*H]         input bias
//   b_hh   [G*H]         recurrent bias (GRU needs it apart: n = tanh(xn + r*(W_hn h + b_hn)))
//   state0 [NS, B, H]    initial state: h (and c for LSTM, NS = 2) -- carried between batches
//   y      [B, S, H]     hidden state of every step
//   stateT [NS, B, H]    final state (the next batch's state0 under truncated BPTT)
//   saved  [B, S, W]     what backward needs beyond y, W = rnn_saved_width(cell, H)
//   len    [B] i32       optional: row b's real length; steps t >= len[b] leave its state
//                        unchanged (y there repeats the state), so stateT is the state after
//                        each row's last real step (padded sequences of a batch)
// The input projection of all steps is one matrix product; the recurrence runs per step.
// Backward optionally takes the gradient of stateT (dstateT) and gives the gradient of state0
// (dstate0): a sequence-to-sequence model's encoder hands its final state to the decoder.
// The language models carry state across batches without either (truncated
// backpropagation through time).
#pragma once
#include <cstdint>
#include <functional>

#include "core/dtype.h"
#include "kernels/common/stream.h"

namespace loom {

enum class Cell : int { RNN = 0, LSTM = 1, GRU = 2 };
inline int cell_gates(Cell c) { return c == Cell::LSTM ? 4 : c == Cell::GRU ? 3 : 1; }
inline int cell_states(Cell c) { return c == Cell::LSTM ? 2 : 1; }
const char* cell_name(Cell c);
// Floats per (b, s) of `saved` (the same for the reference and the CUDA path).
int64_t rnn_saved_width(Cell c, int64_t H);

}  // namespace loom

namespace loom::ref {

template <typename T>
struct RnnFwdArgs {
  Cell cell;
  const T* x;
  const T* w_ih;
  const T* w_hh;
  const T* b_ih;
  const T* b_hh;
  const T* state0;
  T* y;
  T* stateT;
  T* saved;
  int64_t B, S, I, H;
  const int32_t* len = nullptr;  // [B] or nullptr (every step real)
};
template <typename T>
void rnn_fwd(const RnnFwdArgs<T>& a);

template <typename T>
struct RnnBwdArgs {
  Cell cell;
  const T* dy;      // [B, S, H] or nullptr (zero: only stateT's gradient flows)
  const T* x;       // [B, S, I]
  const T* w_ih;
  const T* w_hh;
  const T* state0;  // [NS, B, H]
  const T* y;       // [B, S, H]
  const T* saved;   // [B, S, W]
  T* dx;            // [B, S, I] written (nullptr: not wanted)
  T* dw_ih;         // accumulated (+=)
  T* dw_hh;         // accumulated (+=)
  T* db_ih;         // accumulated (+=)
  T* db_hh;         // accumulated (+=)
  int64_t B, S, I, H;
  const T* dstateT = nullptr;    // [NS, B, H] or nullptr (zero)
  T* dstate0 = nullptr;          // [NS, B, H] written (nullptr: not wanted)
  const int32_t* len = nullptr;  // [B] or nullptr, as in forward
};
template <typename T>
void rnn_bwd(const RnnBwdArgs<T>& a);

// The input of a backward-direction layer: y[b, t] = x[b, len[b]-1-t] for t < len[b], x[b, t]
// after (x, y [B, S, C]; len [B] i32, 0 <= len[b] <= S). Its own inverse, so also its own
// backward. y must not alias x.
template <typename T>
void seq_reverse(const T* x, const int32_t* len, T* y, int64_t B, int64_t S, int64_t C);

}  // namespace loom::ref

// CUDA path (rnn.cu): bf16 x, y, weights; f32 state, saved values and parameter gradients.
// Matrix products go through `Gemm`, supplied by the caller (cuBLAS(Lt) in the CUDA backend,
// a CPU loop in the emulated tests); the launchers run the per-step recurrence with one fused
// pointwise cell kernel per step, or -- when the recurrent weights fit in shared memory
// (rnn_persistent_fits) -- one persistent kernel that keeps w_hh on chip for all steps.
namespace loom::cuda {

// C[m, n] = alpha * op(A) * op(B) + beta * C, all row-major; op(X) = X^T when tX.
// A and B are bf16 or f32 (a_dtype/b_dtype); C is f32 or bf16 (c_dtype).
struct GemmCall {
  bool ta = false, tb = false;
  int64_t m = 0, n = 0, k = 0;
  const void* A = nullptr;
  DType a_dtype = DType::BF16;
  int64_t lda = 0;
  const void* B = nullptr;
  DType b_dtype = DType::BF16;
  int64_t ldb = 0;
  void* C = nullptr;
  DType c_dtype = DType::F32;
  int64_t ldc = 0;
  float alpha = 1.0f, beta = 0.0f;
};
using Gemm = std::function<void(const GemmCall&)>;

struct RnnFwd {
  Cell cell;
  const bf16* x;
  const bf16* w_ih;
  const bf16* w_hh;
  const bf16* b_ih;
  const bf16* b_hh;
  const float* state0;  // [NS, B, H]
  bf16* y;              // [B, S, H]
  float* stateT;        // [NS, B, H]
  float* saved;         // [B, S, W]
  int64_t B, S, I, H;
  float* scratch;       // rnn_fwd_scratch_floats(...) floats
  bool allow_persistent = true;
  const int32_t* len = nullptr;  // [B] or nullptr, as in loom::ref
};
size_t rnn_fwd_scratch_floats(Cell c, int64_t B, int64_t S, int64_t I, int64_t H);
bool rnn_persistent_fits(Cell c, int64_t H);
void rnn_fwd(const RnnFwd& a, const Gemm& gemm, Stream s);

struct RnnBwd {
  Cell cell;
  const bf16* dy;
  const bf16* x;
  const bf16* w_ih;
  const bf16* w_hh;
  const float* state0;
  const bf16* y;
  const float* saved;
  bf16* dx;             // written (nullptr: not wanted)
  float* dw_ih;         // accumulated (+=)
  float* dw_hh;         // accumulated (+=)
  float* db_ih;         // accumulated (+=)
  float* db_hh;         // accumulated (+=)
  int64_t B, S, I, H;
  float* scratch;       // rnn_bwd_scratch_floats(...) floats
  const float* dstateT = nullptr;  // [NS, B, H] or nullptr (zero)
  float* dstate0 = nullptr;        // [NS, B, H] written (nullptr: not wanted)
  const int32_t* len = nullptr;    // [B] or nullptr
};
size_t rnn_bwd_scratch_floats(Cell c, int64_t B, int64_t S, int64_t I, int64_t H);
void rnn_bwd(const RnnBwd& a, const Gemm& gemm, Stream s);

// loom::ref::seq_reverse on bf16.
void seq_reverse(const bf16* x, const int32_t* len, bf16* y, int64_t B, int64_t S, int64_t C, Stream s);

}  // namespace loom::cuda
