// rnn.cu: recurrent layers (tanh RNN, LSTM, GRU) over a whole sequence for bf16 x, y and
// weights, with f32 state, saved values and parameter gradients; the CUDA side of rnn.h
// (loom::ref is the ground truth, and `saved` holds exactly what the reference saves).
//
// Forward. The input projection of all steps is one product through the caller's Gemm:
// xp = x w_ih^T, f32 [B*S, G*H] in scratch (b_ih is added by the cell code). Then either
//  - per step: the product h_{t-1} w_hh^T (bf16 h: y[:, t-1] itself, or state0's h rounded
//    once at t = 0) into f32 [B, G*H], and ONE fused pointwise kernel that adds both biases,
//    applies the gates, updates the f32 state and writes y[:, t], saved[:, t] (and stateT at
//    the last step); or
//  - persistent (rnn_persistent_fits: w_hh in bf16 <= 96 KiB, so sm_80 and sm_90 both take
//    it with opt-in dynamic shared memory): one kernel in which each block owns a few batch
//    rows and runs every step with w_hh held transposed in shared memory. Batch rows are
//    independent, so no grid-wide synchronisation is needed; a step is two block barriers.
//    The recurrent product sees the same bf16-rounded h as the per-step path, so both paths
//    compute one function (up to summation order), the one the backward differentiates.
// Backward. w_hh is widened to f32 once (scratch), then per step in reverse one fused
// pointwise kernel turns dy[:, t] + dh (from later steps) into the gate gradients dg_t (f32,
// kept for all steps), the LSTM's dc and the GRU's direct dh share, and the product
// dh_{t-1} = dg_t w_hh runs in f32 x f32: the recurrence never rounds dg, and no operand is
// converted per step. The same kernel also stores dg_t as two bf16 halves side by side, a
// row [hi | lo] of the split matrix [B*S, 2 GH] with hi = bf16(dg), lo = bf16(dg - hi), which
// together hold dg to 2^-16 relative (f32: 2^-24), and h_{t-1} in bf16 (exact: it is y, the
// forward's bf16 output). After the loop every other product runs once over all B*S rows, on
// bf16 tensor cores with f32 accumulation:
//   dW_hh += hi^T h_prev + lo^T h_prev   (rows t >= 1; h_prev's t = 0 rows are zero)
//          + dg[:, 0]^T h_0              (f32: the initial state is f32, not a bf16 value)
//   dW_ih += hi^T x + lo^T x             (x is bf16)
//   dx     = [hi | lo] [w_ih; w_ih]      (one product, K = 2 GH, against w_ih stacked twice)
// and db is a deterministic column sum of the f32 dg (fixed order, no float atomics). Split
// in two, the products keep f32-product accuracy (the tests' tolerances against the double
// reference: 1e-4 for dW, and dx no worse than before) at tensor-core speed: two bf16
// products cost 2 x 2 B S G H (I or H) FLOPs at ~989 TFLOP/s (H200) instead of one at the
// ~67 TFLOP/s peak of f32 SIMT GEMMs.
// Lengths (len, optional): a padded step t >= len[b] copies row b's state (y repeats it, saved
// is zero) in both forward paths; its backward gives the gates no gradient and passes dh and
// dc through, so the dh product then adds (beta = 1) rather than replaces. dstateT (optional)
// seeds dh and dc at the last step; dstate0 (optional) is one more dh product at t = 0.
// The GRU's recurrent-side gate gradient differs from its input-side one in the n slice
// (n = tanh(xn + r*(W_hn h + b_hn))), so it keeps two of each gradient buffer.
//
// The Gemm callback must run its product in stream order on `s` (the launchers interleave it
// with their kernels); launchers never allocate: everything comes from `scratch`.
#include "kernels/common/cuda_compat.h"
#include "kernels/common/launch.cuh"
#include "kernels/common/reduce.cuh"
#include "kernels/common/vec.cuh"

#include <algorithm>
#include <climits>
#include <type_traits>

#include "core/check.h"
#include "kernels/rnn/rnn.h"

namespace loom::cuda {
namespace {

using Bf = __nv_bfloat16;

constexpr int kThreads = 256;                        // pointwise kernels
constexpr int kPersistentMaxThreads = 512;           // persistent kernel (a thread per gate row)
constexpr size_t kPersistentWhhBytes = 96 * 1024;    // w_hh (bf16) in shared memory, at most
constexpr size_t kAlignFloats = 64;                  // scratch segments start 256 bytes apart
static_assert(valid_block(kThreads) && valid_block(kPersistentMaxThreads));

template <Cell C>
constexpr int kGates = C == Cell::LSTM ? 4 : C == Cell::GRU ? 3 : 1;
// Saved floats per element j (rnn_saved_width / H).
template <Cell C>
constexpr int kSavedPer = C == Cell::LSTM ? 5 : C == Cell::GRU ? 4 : 1;

__device__ __forceinline__ float sigmoid(float v) { return 1.f / (1.f + expf(-v)); }
__device__ __forceinline__ float round_bf16(float v) { return to_float(from_float<Bf>(v)); }

// ---- the cells -------------------------------------------------------------------------

// Forward of element j of one batch row. xg: the gates' input pre-activations with b_ih, hg:
// the recurrent ones with b_hh (the GRU's hg[2] is W_hn h + b_hn). h and c: the f32 state, in
// and out. sv: what backward needs (rnn_ref.cpp's table), stored at sv[k * H].
template <Cell C>
__device__ __forceinline__ void cell_fwd(const float (&xg)[kGates<C>], const float (&hg)[kGates<C>], float& h,
                                         float& c, float (&sv)[kSavedPer<C>]) {
  if constexpr (C == Cell::RNN) {
    h = tanhf(xg[0] + hg[0]);
    sv[0] = h;
  } else if constexpr (C == Cell::LSTM) {
    const float i = sigmoid(xg[0] + hg[0]), f = sigmoid(xg[1] + hg[1]);
    const float g = tanhf(xg[2] + hg[2]), o = sigmoid(xg[3] + hg[3]);
    c = f * c + i * g;
    h = o * tanhf(c);
    sv[0] = i, sv[1] = f, sv[2] = g, sv[3] = o, sv[4] = c;
  } else {
    const float r = sigmoid(xg[0] + hg[0]), z = sigmoid(xg[1] + hg[1]);
    const float n = tanhf(xg[2] + r * hg[2]);
    h = (1.f - z) * n + z * h;
    sv[0] = r, sv[1] = z, sv[2] = n, sv[3] = hg[2];
  }
}

// Gathers the pre-activations of element j: xp row (b, t) and the recurrent row, plus biases.
template <Cell C>
__device__ __forceinline__ void gather_gates(const float* xrow, const float* hrow, const Bf* b_ih, const Bf* b_hh,
                                             int j, int H, float (&xg)[kGates<C>], float (&hg)[kGates<C>]) {
#pragma unroll
  for (int g = 0; g < kGates<C>; ++g) {
    xg[g] = xrow[g * H + j] + to_float(b_ih[g * H + j]);
    hg[g] = hrow[g * H + j] + to_float(b_hh[g * H + j]);
  }
}

// ---- forward, per step -----------------------------------------------------------------

// bf16 copy of state0's h: the A operand of the first recurrent product (later steps use y).
static __global__ void __launch_bounds__(kThreads) to_bf16_kernel(const float* __restrict__ src, Bf* __restrict__ dst,
                                                                 int n) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e < n) dst[e] = from_float<Bf>(src[e]);
}

// Step t for every (b, j): state_in/state_out are [NS, B, H] (c at B*H); they may be the same
// buffer, since each element is read and then written by its own thread only.
template <Cell C>
static __global__ void __launch_bounds__(kThreads)
    rnn_step_fwd_kernel(const float* __restrict__ xp, const float* __restrict__ hh, const Bf* __restrict__ b_ih,
                        const Bf* __restrict__ b_hh, const float* state_in, float* state_out, Bf* __restrict__ y,
                        float* __restrict__ saved, const int32_t* __restrict__ len, int B, int S, int H, int t) {
  constexpr int G = kGates<C>, W = kSavedPer<C>;
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= B * H) return;
  const int b = e / H, j = e - b * H;
  const size_t row = size_t(b) * S + t;
  if (len && t >= len[b]) {  // a padded step: the state is carried
    const float h = state_in[e];
    y[row * H + j] = from_float<Bf>(h);
#pragma unroll
    for (int k = 0; k < W; ++k) saved[row * (W * H) + j + k * H] = 0.f;
    state_out[e] = h;
    if (C == Cell::LSTM) state_out[B * H + e] = state_in[B * H + e];
    return;
  }
  float xg[G], hg[G], sv[W];
  gather_gates<C>(xp + row * (G * H), hh + size_t(b) * (G * H), b_ih, b_hh, j, H, xg, hg);
  float h = state_in[e];
  float c = C == Cell::LSTM ? state_in[B * H + e] : 0.f;
  cell_fwd<C>(xg, hg, h, c, sv);
  y[row * H + j] = from_float<Bf>(h);
  float* s = saved + row * (W * H) + j;
#pragma unroll
  for (int k = 0; k < W; ++k) s[k * H] = sv[k];
  state_out[e] = h;
  if (C == Cell::LSTM) state_out[B * H + e] = c;
}

// ---- forward, persistent ---------------------------------------------------------------

// Shared memory of the persistent kernel for R rows, in bytes.
constexpr size_t persistent_smem_bytes(int G, int H, int R) {
  return sizeof(float) * size_t(R) * (size_t(G) * H + 3 * size_t(H)) + sizeof(Bf) * size_t(G) * H * H;
}
// The widest H whose w_hh fits kPersistentWhhBytes (rnn_persistent_fits), for G gates.
constexpr int persistent_max_h(int G) {
  int h = 1;
  while (sizeof(Bf) * size_t(G) * size_t(h + 1) * size_t(h + 1) <= kPersistentWhhBytes) ++h;
  return h;
}
// Every shape the launcher sends to the persistent kernel fits one block's shared memory: the
// most is 8 rows a block at the widest H (about 123 KiB, under sm_80's 163 KiB).
static_assert(persistent_smem_bytes(1, persistent_max_h(1), 8) <= kSmemPerBlockLimit &&
                  persistent_smem_bytes(3, persistent_max_h(3), 8) <= kSmemPerBlockLimit &&
                  persistent_smem_bytes(4, persistent_max_h(4), 8) <= kSmemPerBlockLimit,
              "rnn persistent kernel: w_hh and the row state exceed a block's shared memory");

// Block blockIdx.x owns batch rows [b0, b0 + R) (fewer in the last block) for all S steps.
// Shared memory: gate sums gs [R][GH] | h [R][H] | c [R][H] | hb [R][H] (h rounded to bf16,
// the recurrent product's operand) | w_hh transposed, wT [H][GH] bf16. A thread per gate row
// computes that row's dot product for all R rows at once: consecutive threads read
// consecutive wT entries and all read the same h entry (a broadcast), so there are no bank
// conflicts, and each weight read from shared memory serves R rows.
template <Cell C, int R>
static __global__ void __launch_bounds__(kPersistentMaxThreads, 1)
    rnn_persistent_fwd_kernel(const float* __restrict__ xp, const Bf* __restrict__ w_hh, const Bf* __restrict__ b_ih,
                              const Bf* __restrict__ b_hh, const float* state0, Bf* __restrict__ y, float* stateT,
                              float* __restrict__ saved, const int32_t* __restrict__ len, int B, int S, int H) {
  constexpr int G = kGates<C>, W = kSavedPer<C>;
  const int GH = G * H;
  LOOM_DYNAMIC_SMEM(float, smem);
  float* gs = smem;
  float* hs = gs + R * GH;
  float* cs = hs + R * H;
  float* hbs = cs + R * H;
  Bf* wT = reinterpret_cast<Bf*>(hbs + R * H);
  const int b0 = blockIdx.x * R;
  const int rows = min(R, B - b0);
  // Each row's length in shared memory (S without len): the len pointer is not kept live
  // across the step loop, whose registers are at the launch bound's limit on sm_90a.
  __shared__ int lens[R];
  for (int r = threadIdx.x; r < R; r += blockDim.x) lens[r] = len && r < rows ? len[b0 + r] : S;

  for (int e = threadIdx.x; e < GH * H; e += blockDim.x) {
    const int g = e / H, k = e - g * H;
    wT[k * GH + g] = w_hh[e];
  }
  // Rows past B (last block) start at zero: they are computed (the loops are unrolled over R)
  // but never stored.
  for (int e = threadIdx.x; e < R * H; e += blockDim.x) {
    const int r = e / H;
    const float h = r < rows ? state0[b0 * H + e] : 0.f;
    hs[e] = h;
    hbs[e] = round_bf16(h);
    cs[e] = C == Cell::LSTM && r < rows ? state0[B * H + b0 * H + e] : 0.f;
  }
  __syncthreads();

  for (int t = 0; t < S; ++t) {
    for (int g = threadIdx.x; g < GH; g += blockDim.x) {
      float acc[R];
#pragma unroll
      for (int r = 0; r < R; ++r) acc[r] = 0.f;
#pragma unroll 4
      for (int k = 0; k < H; ++k) {
        const float w = to_float(wT[k * GH + g]);
#pragma unroll
        for (int r = 0; r < R; ++r) acc[r] += w * hbs[r * H + k];
      }
#pragma unroll
      for (int r = 0; r < R; ++r) gs[r * GH + g] = acc[r];
    }
    __syncthreads();  // gate sums complete; nobody reads hbs until the next step's products
    for (int e = threadIdx.x; e < rows * H; e += blockDim.x) {
      const int r = e / H, j = e - r * H;
      const size_t row = size_t(b0 + r) * S + t;
      float* s = saved + row * (W * H) + j;
      if (t >= lens[r]) {  // a padded step: h, c and hb are carried
        y[row * H + j] = from_float<Bf>(hs[e]);
#pragma unroll
        for (int k = 0; k < W; ++k) s[k * H] = 0.f;
        continue;
      }
      float xg[G], hg[G], sv[W];
      gather_gates<C>(xp + row * GH, gs + r * GH, b_ih, b_hh, j, H, xg, hg);
      float h = hs[e], c = cs[e];
      cell_fwd<C>(xg, hg, h, c, sv);
      hs[e] = h;
      cs[e] = c;
      hbs[e] = round_bf16(h);
      y[row * H + j] = from_float<Bf>(h);
#pragma unroll
      for (int k = 0; k < W; ++k) s[k * H] = sv[k];
    }
    __syncthreads();  // the new h is complete before the next products read it
  }

  for (int e = threadIdx.x; e < rows * H; e += blockDim.x) {
    stateT[b0 * H + e] = hs[e];
    if (C == Cell::LSTM) stateT[B * H + b0 * H + e] = cs[e];
  }
}

// ---- backward --------------------------------------------------------------------------

// One side's gate gradients, as f32 and as two bf16 halves (hi + lo = v to 2^-16 relative:
// v - hi is exact in f32, and only its own rounding to bf16 is lost).
struct GateGrad {
  float* f32;  // [B*S, GH]
  Bf* split;   // [B*S, 2 GH]: row r is hi(dg[r, :]) then lo(dg[r, :])
  int GH;
  __device__ __forceinline__ void store(size_t row, int col, float v) const {
    f32[row * GH + col] = v;
    const Bf h = from_float<Bf>(v);
    split[row * 2 * GH + col] = h;
    split[row * 2 * GH + GH + col] = from_float<Bf>(v - to_float(h));
  }
};

// The backward's per-step buffers. dh [B, H]: in, the gradient reaching h_t from later steps
// (absent at the last step); out, the GRU's direct share dh*z (the following product adds
// dg w_hh to it; for the other cells it overwrites). dc [B, H] likewise for the LSTM (out:
// dc_{t-1}). gx/gh: the gate gradients, input and recurrent side (the same buffers except for
// the GRU). hprev [B*S, H]: h_{t-1} in bf16 for t >= 1 (y itself) and 0 at t = 0, the B
// operand of dW_hh's bf16 products (the t = 0 term is a separate f32 product with state0).
struct StepBwdBuffers {
  GateGrad gx, gh;
  Bf* hprev;
  float* dh;
  float* dc;
};

// Step t for every (b, j).
template <Cell C>
static __global__ void __launch_bounds__(kThreads)
    rnn_step_bwd_kernel(const Bf* __restrict__ dy, const Bf* __restrict__ y, const float* __restrict__ saved,
                        const float* __restrict__ state0, const float* __restrict__ dstateT,
                        const int32_t* __restrict__ len, StepBwdBuffers o, int B, int S, int H, int t, int last) {
  constexpr int G = kGates<C>, W = kSavedPer<C>;
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= B * H) return;
  const int b = e / H, j = e - b * H;
  const size_t row = size_t(b) * S + t;
  const float* sv = saved + row * (W * H) + j;
  // h_{t-1} as the forward's recurrent product saw it: y (bf16) after the first step.
  const Bf hp_bf = t > 0 ? y[(row - 1) * H + j] : from_float<Bf>(0.f);
  o.hprev[row * H + j] = hp_bf;
  const float dy_t = dy ? to_float(dy[row * H + j]) : 0.f;
  const float dh_later = last ? (dstateT ? dstateT[e] : 0.f) : o.dh[e];
  const float dc_later = C != Cell::LSTM ? 0.f : last ? (dstateT ? dstateT[B * H + e] : 0.f) : o.dc[e];
  if (len && t >= len[b]) {  // a padded step: dh and dc pass through, the gates get nothing
#pragma unroll
    for (int g = 0; g < G; ++g) {
      o.gx.store(row, j + g * H, 0.f);
      if (C == Cell::GRU) o.gh.store(row, j + g * H, 0.f);
    }
    o.dh[e] = dy_t + dh_later;
    if (C == Cell::LSTM) o.dc[e] = dc_later;
    return;
  }
  const float dht = dy_t + dh_later;
  if (C != Cell::GRU && len) o.dh[e] = 0.f;  // the dh product adds to it
  if constexpr (C == Cell::RNN) {
    o.gx.store(row, j, dht * (1.f - sv[0] * sv[0]));
  } else if constexpr (C == Cell::LSTM) {
    const float i = sv[0], f = sv[H], g = sv[2 * H], og = sv[3 * H], c = sv[4 * H];
    const float cp = t > 0 ? saved[(row - 1) * (W * H) + 4 * H + j] : state0[B * H + e];
    const float tc = tanhf(c);
    const float dct = dc_later + dht * og * (1.f - tc * tc);
    o.gx.store(row, j, dct * g * i * (1.f - i));
    o.gx.store(row, j + H, dct * cp * f * (1.f - f));
    o.gx.store(row, j + 2 * H, dct * i * (1.f - g * g));
    o.gx.store(row, j + 3 * H, dht * tc * og * (1.f - og));
    o.dc[e] = dct * f;
  } else {
    const float hp = t > 0 ? to_float(hp_bf) : state0[e];
    const float r = sv[0], z = sv[H], n = sv[2 * H], hn = sv[3 * H];
    const float dn = dht * (1.f - z) * (1.f - n * n);
    const float dz = dht * (hp - n) * z * (1.f - z);
    const float dr = dn * hn * r * (1.f - r);
    o.gx.store(row, j, dr);
    o.gh.store(row, j, dr);
    o.gx.store(row, j + H, dz);
    o.gh.store(row, j + H, dz);
    o.gx.store(row, j + 2 * H, dn);
    o.gh.store(row, j + 2 * H, dn * r);
    o.dh[e] = dht * z;
  }
}

// w_hh widened to f32 once per backward, for the per-step f32 products (map_elements).
struct WidenBf16 {
  __device__ __forceinline__ float operator()(Bf v) const { return to_float(v); }
};

// The bias gradients' epilogue of reduce.cuh's column_sum: out[c] += sum, and out2[c] too
// (b_ih and b_hh get the same gradient except in the GRU).
struct AddToBoth {
  float* out;
  float* out2;
  __device__ __forceinline__ void operator()(int col, float sum) const {
    out[col] += sum;
    if (out2) out2[col] += sum;
  }
};

// A thread per element of y: row (b, t) reads row (b, src) of x.
static __global__ void __launch_bounds__(kThreads)
    seq_reverse_kernel(const Bf* __restrict__ x, const int32_t* __restrict__ len, Bf* __restrict__ y, int B, int S,
                       int C) {
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= B * S * C) return;
  const int row = e / C, k = e - row * C, b = row / S, t = row - b * S;
  const int n = min(max(len[b], 0), S);
  const int src = t < n ? n - 1 - t : t;
  y[e] = x[(size_t(b) * S + src) * C + k];
}

// ---- launch helpers --------------------------------------------------------------------

template <class F>
void with_cell(Cell c, F&& f) {
  with_value<Cell::RNN, Cell::LSTM, Cell::GRU>("rnn cell", c, f);
}

// A thread per element: whole warps, no more than needed, in as many blocks as it takes.
int block_for(int n) { return std::min(kThreads, (n + 31) / 32 * 32); }
int element_grid(int n) { return int(ceil_div(n, kThreads)); }

size_t seg(size_t floats) { return (floats + kAlignFloats - 1) / kAlignFloats * kAlignFloats; }
size_t seg_bf16(size_t n) { return seg((n + 1) / 2); }  // n bf16 values in whole floats

void check_shape(const char* what, Cell c, int64_t B, int64_t S, int64_t I, int64_t H) {
  LOOM_CHECK(int(c) >= 0 && int(c) <= 2, what, ": unknown cell ", int(c));
  LOOM_CHECK(B >= 0 && S >= 0 && I > 0 && H > 0, what, ": bad shape B=", B, " S=", S, " I=", I, " H=", H);
  const int64_t widest = std::max<int64_t>({I, int64_t(cell_gates(c)) * H, rnn_saved_width(c, H)});
  LOOM_CHECK(B * S <= INT_MAX / std::max<int64_t>(widest, 1), what, ": B*S*width exceeds int indexing: B=", B,
             " S=", S, " I=", I, " H=", H);
}

// Batch rows per block of the persistent kernel: as few as keep the blocks within one wave
// (a block holds ~100 KiB of shared memory, so about one a SM), 8 at most.
int persistent_rows(int64_t B, int sms) {
  for (int R : {1, 2, 4})
    if ((B + R - 1) / R <= sms) return R;
  return 8;
}

}  // namespace

bool rnn_persistent_fits(Cell c, int64_t H) {
  return H > 0 && size_t(cell_gates(c)) * size_t(H) * size_t(H) * sizeof(Bf) <= kPersistentWhhBytes;
}

// xp | hh | f32 state | bf16 h0 (the per-step path's; the persistent path needs only xp).
size_t rnn_fwd_scratch_floats(Cell c, int64_t B, int64_t S, int64_t I, int64_t H) {
  (void)I;
  const size_t GH = size_t(cell_gates(c)) * size_t(H), b = size_t(B), h = size_t(H);
  return seg(b * size_t(S) * GH) + seg(b * GH) + seg(size_t(cell_states(c)) * b * h) + seg((b * h + 1) / 2);
}

void rnn_fwd(const RnnFwd& a, const Gemm& gemm, Stream s) {
  check_shape("rnn_fwd", a.cell, a.B, a.S, a.I, a.H);
  if (a.B == 0) return;
  LOOM_CHECK(a.state0 && a.stateT, "rnn_fwd: null state pointer");
  const int NS = cell_states(a.cell);
  if (a.S == 0) {  // no steps: the state passes through
    if (a.stateT != a.state0)
      LOOM_CHECK(cudaMemcpyAsync(a.stateT, a.state0, sizeof(float) * NS * a.B * a.H, cudaMemcpyDeviceToDevice, s) ==
                     cudaSuccess,
                 "rnn_fwd: state copy failed");
    return;
  }
  LOOM_CHECK(a.x && a.w_ih && a.w_hh && a.b_ih && a.b_hh && a.y && a.saved && a.scratch && gemm,
             "rnn_fwd: null pointer");
  const int B = int(a.B), S = int(a.S), I = int(a.I), H = int(a.H);
  const int GH = cell_gates(a.cell) * H;
  float* xp = a.scratch;
  float* hh = xp + seg(size_t(B) * S * GH);
  float* state = hh + seg(size_t(B) * GH);
  Bf* h0 = reinterpret_cast<Bf*>(state + seg(size_t(NS) * B * H));

  GemmCall in;  // xp = x w_ih^T, all steps at once
  in.ta = false, in.tb = true, in.m = int64_t(B) * S, in.n = GH, in.k = I;
  in.A = a.x, in.a_dtype = DType::BF16, in.lda = I;
  in.B = a.w_ih, in.b_dtype = DType::BF16, in.ldb = I;
  in.C = xp, in.c_dtype = DType::F32, in.ldc = GH;
  gemm(in);

  if (a.allow_persistent && rnn_persistent_fits(a.cell, a.H)) {
    const int R = persistent_rows(B, sm_count());
    const int threads = std::min(kPersistentMaxThreads, (std::max(GH, 32) + 31) / 32 * 32);
    const size_t smem = persistent_smem_bytes(cell_gates(a.cell), H, R);
    with_cell(a.cell, [&](auto cc) {
      constexpr Cell C = decltype(cc)::value;
      with_value<1, 2, 4, 8>("rnn persistent rows", R, [&](auto rr) {
        constexpr int RR = decltype(rr)::value;
        allow_dynamic_smem(rnn_persistent_fwd_kernel<C, RR>, smem);
        LOOM_LAUNCH((rnn_persistent_fwd_kernel<C, RR>), int(ceil_div(B, RR)), threads, smem, s, xp, as_nv(a.w_hh),
                    as_nv(a.b_ih), as_nv(a.b_hh), a.state0, as_nv(a.y), a.stateT, a.saved, a.len, B, S, H);
      });
    });
    return;
  }

  const int n = B * H;
  LOOM_LAUNCH(to_bf16_kernel, element_grid(n), block_for(n), 0, s, a.state0, h0, n);
  for (int t = 0; t < S; ++t) {
    GemmCall rec;  // hh = h_{t-1} w_hh^T
    rec.ta = false, rec.tb = true, rec.m = B, rec.n = GH, rec.k = H;
    rec.A = t == 0 ? static_cast<const void*>(h0) : static_cast<const void*>(a.y + size_t(t - 1) * H);
    rec.a_dtype = DType::BF16, rec.lda = t == 0 ? H : int64_t(S) * H;
    rec.B = a.w_hh, rec.b_dtype = DType::BF16, rec.ldb = H;
    rec.C = hh, rec.c_dtype = DType::F32, rec.ldc = GH;
    gemm(rec);
    const float* in_state = t == 0 ? a.state0 : state;
    float* out_state = t == S - 1 ? a.stateT : state;
    with_cell(a.cell, [&](auto cc) {
      constexpr Cell C = decltype(cc)::value;
      LOOM_LAUNCH((rnn_step_fwd_kernel<C>), element_grid(n), block_for(n), 0, s, xp, hh, as_nv(a.b_ih), as_nv(a.b_hh),
                  in_state, out_state, as_nv(a.y), a.saved, a.len, B, S, H, t);
    });
  }
}

// Backward scratch, in this order: per gradient side (one, two for the GRU) its f32 [B*S, GH]
// and split bf16 [B*S, 2 GH] buffers; hprev (bf16) [B*S, H]; w_hh in f32 [GH, H]; w_ih stacked
// twice (bf16) [2 GH, I]; dh [B, H]; dc [B, H] (LSTM).
size_t rnn_bwd_scratch_floats(Cell c, int64_t B, int64_t S, int64_t I, int64_t H) {
  const size_t GH = size_t(cell_gates(c)) * size_t(H), bs = size_t(B) * size_t(S), bh = size_t(B) * size_t(H);
  const size_t side = seg(bs * GH) + seg_bf16(bs * 2 * GH);
  return side * (c == Cell::GRU ? 2 : 1) + seg_bf16(bs * size_t(H)) + seg(GH * size_t(H)) +
         seg_bf16(2 * GH * size_t(I)) + seg(bh) * (c == Cell::LSTM ? 2 : 1);
}

void rnn_bwd(const RnnBwd& a, const Gemm& gemm, Stream s) {
  check_shape("rnn_bwd", a.cell, a.B, a.S, a.I, a.H);
  if (a.B == 0) return;
  const size_t state_bytes = sizeof(float) * cell_states(a.cell) * a.B * a.H;
  if (a.S == 0) {  // no steps: the state passed through
    if (a.dstate0 && a.dstateT) CUDA_CHECK(cudaMemcpyAsync(a.dstate0, a.dstateT, state_bytes, cudaMemcpyDeviceToDevice, s));
    if (a.dstate0 && !a.dstateT) CUDA_CHECK(cudaMemsetAsync(a.dstate0, 0, state_bytes, s));
    return;
  }
  LOOM_CHECK(a.x && a.w_ih && a.w_hh && a.state0 && a.y && a.saved && a.dw_ih && a.dw_hh && a.db_ih &&
                 a.db_hh && a.scratch && gemm,
             "rnn_bwd: null pointer");
  const int B = int(a.B), S = int(a.S), I = int(a.I), H = int(a.H);
  const int GH = cell_gates(a.cell) * H;
  const bool gru = a.cell == Cell::GRU, lstm = a.cell == Cell::LSTM;
  const size_t bsg = size_t(B) * S * GH;
  float* next = a.scratch;
  auto take_f32 = [&](size_t n) { float* p = next; next += seg(n); return p; };
  auto take_bf16 = [&](size_t n) { Bf* p = reinterpret_cast<Bf*>(next); next += seg_bf16(n); return p; };
  auto take_side = [&] {
    GateGrad g;
    g.f32 = take_f32(bsg);
    g.split = take_bf16(2 * bsg);
    g.GH = GH;
    return g;
  };
  StepBwdBuffers o;
  o.gx = take_side();
  o.gh = gru ? take_side() : o.gx;
  o.hprev = take_bf16(size_t(B) * S * H);
  float* whh32 = take_f32(size_t(GH) * H);
  Bf* wih2 = take_bf16(2 * size_t(GH) * I);
  o.dh = take_f32(size_t(B) * H);
  o.dc = lstm ? take_f32(size_t(B) * H) : nullptr;

  // The one f32 copy of w_hh: every step's dh product reads it, none converts it again.
  map_elements("rnn_bwd (w_hh to f32)", WidenBf16{}, int64_t(GH) * H, s, whh32, as_nv(a.w_hh));

  const int n = B * H;
  for (int t = S - 1; t >= 0; --t) {
    with_cell(a.cell, [&](auto cc) {
      constexpr Cell C = decltype(cc)::value;
      LOOM_LAUNCH((rnn_step_bwd_kernel<C>), element_grid(n), block_for(n), 0, s, as_nv(a.dy), as_nv(a.y), a.saved,
                  a.state0, a.dstateT, a.len, o, B, S, H, t, int(t == S - 1));
    });
    if (t == 0 && !a.dstate0) break;  // no gradient into state0 wanted
    GemmCall rec;  // dh_{t-1} = dgh_t w_hh (+ the GRU's direct share or a padded row's dh), f32 x f32
    rec.ta = false, rec.tb = false, rec.m = B, rec.n = H, rec.k = GH;
    rec.A = o.gh.f32 + size_t(t) * GH, rec.a_dtype = DType::F32, rec.lda = int64_t(S) * GH;
    rec.B = whh32, rec.b_dtype = DType::F32, rec.ldb = H;
    rec.C = o.dh, rec.c_dtype = DType::F32, rec.ldc = H;
    rec.beta = gru || a.len ? 1.f : 0.f;
    gemm(rec);
  }
  if (a.dstate0) {  // after t = 0's product: dh and dc are state0's gradient
    const size_t bh = sizeof(float) * size_t(B) * H;
    CUDA_CHECK(cudaMemcpyAsync(a.dstate0, o.dh, bh, cudaMemcpyDeviceToDevice, s));
    if (lstm) CUDA_CHECK(cudaMemcpyAsync(a.dstate0 + size_t(B) * H, o.dc, bh, cudaMemcpyDeviceToDevice, s));
  }

  // Weight gradients over all B*S rows at once: op(A) = dg^T ([GH, B*S]) times a bf16
  // [B*S, cols] operand, added to the f32 gradient (beta = 1), once with each half of dg.
  auto weight_grad = [&](const GateGrad& dg, const void* rhs, int64_t cols, float* out) {
    for (int half = 0; half < 2; ++half) {
      GemmCall g;
      g.ta = true, g.tb = false, g.m = GH, g.n = cols, g.k = int64_t(B) * S;
      g.A = dg.split + half * GH, g.a_dtype = DType::BF16, g.lda = 2 * GH;
      g.B = rhs, g.b_dtype = DType::BF16, g.ldb = cols;
      g.C = out, g.c_dtype = DType::F32, g.ldc = cols, g.beta = 1.f;
      gemm(g);
    }
  };
  // At S = 1 h_prev is all t = 0 rows: only the f32 term below remains.
  if (S > 1) weight_grad(o.gh, o.hprev, H, a.dw_hh);
  GemmCall h0;  // dW_hh += dg_0^T h_0: the t = 0 rows (S*GH apart) against state0's h, in f32
  h0.ta = true, h0.tb = false, h0.m = GH, h0.n = H, h0.k = B;
  h0.A = o.gh.f32, h0.a_dtype = DType::F32, h0.lda = int64_t(S) * GH;
  h0.B = a.state0, h0.b_dtype = DType::F32, h0.ldb = H;
  h0.C = a.dw_hh, h0.c_dtype = DType::F32, h0.ldc = H, h0.beta = 1.f;
  gemm(h0);
  weight_grad(o.gx, a.x, I, a.dw_ih);
  if (a.dx) {
    // dx = hi w_ih + lo w_ih as one product over K = 2 GH, rounded to bf16 once at the end.
    const size_t wih_bytes = size_t(GH) * I * sizeof(bf16);
    CUDA_CHECK(cudaMemcpyAsync(wih2, a.w_ih, wih_bytes, cudaMemcpyDeviceToDevice, s));
    CUDA_CHECK(cudaMemcpyAsync(wih2 + size_t(GH) * I, a.w_ih, wih_bytes, cudaMemcpyDeviceToDevice, s));
    GemmCall dx;
    dx.ta = false, dx.tb = false, dx.m = int64_t(B) * S, dx.n = I, dx.k = 2 * int64_t(GH);
    dx.A = o.gx.split, dx.a_dtype = DType::BF16, dx.lda = 2 * GH;
    dx.B = wih2, dx.b_dtype = DType::BF16, dx.ldb = I;
    dx.C = a.dx, dx.c_dtype = DType::BF16, dx.ldc = I;
    gemm(dx);
  }
  column_sum("rnn_bwd (db_ih)", o.gx.f32, B * S, GH, AddToBoth{a.db_ih, gru ? nullptr : a.db_hh}, s);
  if (gru) column_sum("rnn_bwd (db_hh)", o.gh.f32, B * S, GH, AddToColumn{a.db_hh}, s);
}

void seq_reverse(const bf16* x, const int32_t* len, bf16* y, int64_t B, int64_t S, int64_t C, Stream s) {
  LOOM_CHECK(B >= 0 && S >= 0 && C >= 0 && B * S * C <= INT_MAX, "seq_reverse: bad shape B=", B, " S=", S, " C=", C);
  const int n = int(B * S * C);
  if (n == 0) return;
  LOOM_CHECK(x && len && y && x != y, "seq_reverse: null or aliased pointer");
  LOOM_LAUNCH(seq_reverse_kernel, element_grid(n), block_for(n), 0, s, as_nv(x), len, as_nv(y), int(B), int(S), int(C));
}

}  // namespace loom::cuda
