// rnn_ref.cpp: CPU reference recurrent layers (tanh RNN, LSTM, GRU) over a whole sequence, in
// float and double (double for the gradient checks). The input projection of every step is
// one BLAS product; the recurrence then runs step by step: one product h_{t-1} w_hh^T for the
// whole batch, then the cell's pointwise part, OpenMP over the batch rows. Backward runs the
// same recurrence in reverse and keeps the gate gradients of every step, so that dW_ih, dW_hh
// and dx are again single products over all steps and the bias gradients fixed-order column
// sums (results do not depend on the thread count).
//
// What `saved` holds per (b, t), W = rnn_saved_width (the CUDA path stores the same):
//   RNN   h_t                                 W = H  (1 - h^2 needs h unrounded; y is bf16 on GPUs)
//   LSTM  i, f, g, o (activated), c_t         W = 5H
//   GRU   r, z, n (activated), W_hn h + b_hn  W = 4H
// Backward takes h_{t-1} from y (state0 at t = 0): the CUDA forward feeds the bf16 y to its
// recurrent product, so y is what the computed function actually saw.
// With lengths, a padded step (t >= len[b]) copies the state: y there is the carried h and
// saved is zero. Its backward passes dh (and the LSTM's dc) through unchanged and gives its
// gates no gradient, so the recurrent product adds to dh (beta = 1) instead of replacing it.
#include "kernels/rnn/rnn.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/matmul/matmul.h"

namespace loom {

const char* cell_name(Cell c) {
  switch (c) {
    case Cell::RNN: return "rnn";
    case Cell::LSTM: return "lstm";
    case Cell::GRU: return "gru";
  }
  return "?";
}

int64_t rnn_saved_width(Cell c, int64_t H) {
  switch (c) {
    case Cell::RNN: return H;
    case Cell::LSTM: return 5 * H;
    case Cell::GRU: return 4 * H;
  }
  return H;
}

}  // namespace loom

namespace loom::ref {
namespace {

// Below this many elements a parallel region costs more than it saves (a step of a small
// layer is a few microseconds of work; waking the team is comparable, and far worse when the
// cores are shared).
constexpr int64_t kParallelMin = 1 << 14;

template <typename T>
T sigmoid(T v) {
  return T(1) / (T(1) + std::exp(-v));
}

// Column sums of m [rows, cols] added to out (and to out2 when given), in row order: a fixed
// order whatever the thread count. Threads own blocks of columns.
template <typename T>
void add_column_sums(const T* m, int64_t rows, int64_t cols, T* out, T* out2) {
  constexpr int64_t kCols = 64;
  const int64_t blocks = (cols + kCols - 1) / kCols;
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kCols, c1 = std::min(cols, c0 + kCols);
    T acc[kCols] = {};
    for (int64_t r = 0; r < rows; ++r) {
      const T* row = m + r * cols;
      for (int64_t c = c0; c < c1; ++c) acc[c - c0] += row[c];
    }
    for (int64_t c = c0; c < c1; ++c) {
      out[c] += acc[c - c0];
      if (out2) out2[c] += acc[c - c0];
    }
  }
}

}  // namespace

template <typename T>
void rnn_fwd(const RnnFwdArgs<T>& a) {
  const int64_t B = a.B, S = a.S, I = a.I, H = a.H;
  const int64_t G = cell_gates(a.cell), GH = G * H, W = rnn_saved_width(a.cell, H);
  const bool lstm = a.cell == Cell::LSTM;
  // The state of the running step, [B, H] each: h (then the next step's h) and c.
  std::vector<T> h(a.state0, a.state0 + B * H), c;
  if (lstm) c.assign(a.state0 + B * H, a.state0 + 2 * B * H);
  if (S > 0) {
    // xp = x w_ih^T + b_ih for all steps: [B*S, GH].
    std::vector<T> xp(size_t(B * S * GH)), hh(size_t(B * GH));
    gemm<T>(false, true, B * S, GH, I, T(1), a.x, I, a.w_ih, I, T(0), xp.data(), GH);
#pragma omp parallel for schedule(static) if (B * S * GH >= kParallelMin)
    for (int64_t r = 0; r < B * S; ++r)
      for (int64_t k = 0; k < GH; ++k) xp[r * GH + k] += a.b_ih[k];

    for (int64_t t = 0; t < S; ++t) {
      gemm<T>(false, true, B, GH, H, T(1), h.data(), H, a.w_hh, H, T(0), hh.data(), GH);
      // Element j of a row reads only element j of h and c: updating them in place is safe.
#pragma omp parallel for schedule(static) if (B * GH >= kParallelMin)
      for (int64_t b = 0; b < B; ++b) {
        const T* xg = xp.data() + (b * S + t) * GH;
        const T* hg = hh.data() + b * GH;
        T* hb = h.data() + b * H;
        T* y = a.y + (b * S + t) * H;
        T* sv = a.saved + (b * S + t) * W;
        if (a.len && t >= a.len[b]) {
          std::copy(hb, hb + H, y);
          std::fill(sv, sv + W, T(0));
          continue;
        }
        for (int64_t j = 0; j < H; ++j) {
          switch (a.cell) {
            case Cell::RNN: {
              const T hn = std::tanh(xg[j] + hg[j] + a.b_hh[j]);
              sv[j] = hn;
              hb[j] = hn;
              break;
            }
            case Cell::LSTM: {
              const T ig = sigmoid(xg[j] + hg[j] + a.b_hh[j]);
              const T fg = sigmoid(xg[H + j] + hg[H + j] + a.b_hh[H + j]);
              const T gg = std::tanh(xg[2 * H + j] + hg[2 * H + j] + a.b_hh[2 * H + j]);
              const T og = sigmoid(xg[3 * H + j] + hg[3 * H + j] + a.b_hh[3 * H + j]);
              T& cb = c[b * H + j];
              cb = fg * cb + ig * gg;
              hb[j] = og * std::tanh(cb);
              sv[j] = ig, sv[H + j] = fg, sv[2 * H + j] = gg, sv[3 * H + j] = og, sv[4 * H + j] = cb;
              break;
            }
            case Cell::GRU: {
              const T rg = sigmoid(xg[j] + hg[j] + a.b_hh[j]);
              const T zg = sigmoid(xg[H + j] + hg[H + j] + a.b_hh[H + j]);
              const T hn = hg[2 * H + j] + a.b_hh[2 * H + j];
              const T ng = std::tanh(xg[2 * H + j] + rg * hn);
              hb[j] = (T(1) - zg) * ng + zg * hb[j];
              sv[j] = rg, sv[H + j] = zg, sv[2 * H + j] = ng, sv[3 * H + j] = hn;
              break;
            }
          }
          y[j] = hb[j];
        }
      }
    }
  }
  std::copy(h.begin(), h.end(), a.stateT);
  if (lstm) std::copy(c.begin(), c.end(), a.stateT + B * H);
}

template <typename T>
void rnn_bwd(const RnnBwdArgs<T>& a) {
  const int64_t B = a.B, S = a.S, I = a.I, H = a.H;
  if (B == 0 || S == 0) {  // no steps: the state passed through
    const int64_t n = cell_states(a.cell) * B * H;
    if (a.dstate0) std::fill(a.dstate0, a.dstate0 + n, T(0));
    if (a.dstate0 && a.dstateT) std::copy(a.dstateT, a.dstateT + n, a.dstate0);
    return;
  }
  const int64_t G = cell_gates(a.cell), GH = G * H, W = rnn_saved_width(a.cell, H);
  const bool gru = a.cell == Cell::GRU;
  // Gate gradients of every step, [B*S, GH]: dgx for the input side (w_ih, b_ih, x), dgh for
  // the recurrent side (w_hh, b_hh, h). They differ only for the GRU, whose n gate sees
  // W_hn h + b_hn through r.
  std::vector<T> dgx(size_t(B * S * GH)), dgh_own(gru ? size_t(B * S * GH) : 0);
  T* dgh = gru ? dgh_own.data() : dgx.data();
  std::vector<T> hprev(size_t(B * S * H));  // h_{t-1} of every (b, t), for dW_hh
  // dh: the gradient reaching h_t from later steps; dc likewise for the LSTM's c_t.
  std::vector<T> dh(size_t(B * H), T(0)), dc(a.cell == Cell::LSTM ? size_t(B * H) : 0, T(0));
  if (a.dstateT) {
    std::copy(a.dstateT, a.dstateT + B * H, dh.begin());
    if (!dc.empty()) std::copy(a.dstateT + B * H, a.dstateT + 2 * B * H, dc.begin());
  }
  const bool masked = a.len != nullptr;

  for (int64_t t = S - 1; t >= 0; --t) {
#pragma omp parallel for schedule(static) if (B * GH >= kParallelMin)
    for (int64_t b = 0; b < B; ++b) {
      const int64_t row = b * S + t;
      const T* sv = a.saved + row * W;
      const T* hp = t > 0 ? a.y + (row - 1) * H : a.state0 + b * H;
      T* gx = dgx.data() + row * GH;
      T* gh = dgh + row * GH;
      if (masked && t >= a.len[b]) {  // a padded step: dh and dc pass through
        std::fill(gx, gx + GH, T(0));
        if (gru) std::fill(gh, gh + GH, T(0));
        for (int64_t j = 0; j < H; ++j) {
          hprev[row * H + j] = hp[j];
          if (a.dy) dh[b * H + j] += a.dy[row * H + j];
        }
        continue;
      }
      for (int64_t j = 0; j < H; ++j) {
        const T dht = (a.dy ? a.dy[row * H + j] : T(0)) + dh[b * H + j];
        if (masked && !gru) dh[b * H + j] = T(0);  // the product below adds to it
        hprev[row * H + j] = hp[j];
        switch (a.cell) {
          case Cell::RNN: {
            gx[j] = dht * (T(1) - sv[j] * sv[j]);
            break;
          }
          case Cell::LSTM: {
            const T ig = sv[j], fg = sv[H + j], gg = sv[2 * H + j], og = sv[3 * H + j], ct = sv[4 * H + j];
            const T cp = t > 0 ? a.saved[(row - 1) * W + 4 * H + j] : a.state0[B * H + b * H + j];
            const T tc = std::tanh(ct);
            const T dct = dc[b * H + j] + dht * og * (T(1) - tc * tc);
            gx[j] = dct * gg * ig * (T(1) - ig);
            gx[H + j] = dct * cp * fg * (T(1) - fg);
            gx[2 * H + j] = dct * ig * (T(1) - gg * gg);
            gx[3 * H + j] = dht * tc * og * (T(1) - og);
            dc[b * H + j] = dct * fg;
            break;
          }
          case Cell::GRU: {
            const T rg = sv[j], zg = sv[H + j], ng = sv[2 * H + j], hn = sv[3 * H + j];
            const T dn = dht * (T(1) - zg) * (T(1) - ng * ng);  // at n's pre-activation
            const T dz = dht * (hp[j] - ng) * zg * (T(1) - zg);
            const T dr = dn * hn * rg * (T(1) - rg);
            gx[j] = gh[j] = dr;
            gx[H + j] = gh[H + j] = dz;
            gx[2 * H + j] = dn;
            gh[2 * H + j] = dn * rg;
            dh[b * H + j] = dht * zg;  // h_{t-1}'s direct share; the product below adds to it
            break;
          }
        }
      }
    }
    // dh_{t-1} = dgh_t w_hh (+ the GRU's direct share, or a padded row's passed-through dh):
    // rows of step t are S*GH apart. At t = 0 it is state0's gradient.
    if (t > 0 || a.dstate0)
      gemm<T>(false, false, B, H, GH, T(1), dgh + t * GH, S * GH, a.w_hh, H, gru || masked ? T(1) : T(0), dh.data(),
              H);
  }
  if (a.dstate0) {
    std::copy(dh.begin(), dh.end(), a.dstate0);
    std::copy(dc.begin(), dc.end(), a.dstate0 + B * H);
  }

  gemm<T>(true, false, GH, H, B * S, T(1), dgh, GH, hprev.data(), H, T(1), a.dw_hh, H);
  gemm<T>(true, false, GH, I, B * S, T(1), dgx.data(), GH, a.x, I, T(1), a.dw_ih, I);
  if (a.dx) gemm<T>(false, false, B * S, I, GH, T(1), dgx.data(), GH, a.w_ih, I, T(0), a.dx, I);
  if (gru) {
    add_column_sums<T>(dgx.data(), B * S, GH, a.db_ih, nullptr);
    add_column_sums<T>(dgh, B * S, GH, a.db_hh, nullptr);
  } else {
    add_column_sums<T>(dgx.data(), B * S, GH, a.db_ih, a.db_hh);
  }
}

template <typename T>
void seq_reverse(const T* x, const int32_t* len, T* y, int64_t B, int64_t S, int64_t C) {
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = std::clamp<int64_t>(len[b], 0, S);
    for (int64_t t = 0; t < S; ++t) {
      const int64_t src = t < n ? n - 1 - t : t;
      std::copy(x + (b * S + src) * C, x + (b * S + src + 1) * C, y + (b * S + t) * C);
    }
  }
}

template void seq_reverse<float>(const float*, const int32_t*, float*, int64_t, int64_t, int64_t);
template void seq_reverse<double>(const double*, const int32_t*, double*, int64_t, int64_t, int64_t);
template void rnn_fwd<float>(const RnnFwdArgs<float>&);
template void rnn_fwd<double>(const RnnFwdArgs<double>&);
template void rnn_bwd<float>(const RnnBwdArgs<float>&);
template void rnn_bwd<double>(const RnnBwdArgs<double>&);

}  // namespace loom::ref
