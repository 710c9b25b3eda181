// rnn_test.cpp: the recurrent layers (tanh RNN, LSTM, GRU). One source for the emulator, TSan,
// ASan and real-GPU builds (cmake/LoomKernel.cmake).
//  - RnnRef*: the CPU reference itself, in double: finite-difference gradients of rnn_bwd, a
//    sequence run in two halves (stateT -> state0) against the whole, and the forward against
//    a naive per-element loop. They exercise no kernel, so they run in the "emu" binary only.
//  - RnnFwd/RnnBwd: cuda::rnn_fwd / rnn_bwd (rnn.cu) against the double reference on the same
//    bf16-rounded inputs, every cell, per-step and persistent paths. Outputs and scratch are
//    NaN-poisoned before each launch, inputs are random and never zero, and each comparison
//    names its worst element.
// The Gemm callback is a plain double-accumulating CPU loop; it copies its operands to the
// host and back with cudaMemcpy, so it is the same code on a GPU, and in the emulator the
// copies check that every operand lies inside one device allocation. Shapes with more batch
// rows than a persistent block's share of threads (B = 20 on 4 SMs, B = 10 on one) make the
// persistent kernel's per-row loops go round more than once, in every build.
#include "kernels/common/cuda_compat.h"
#include "kernels/common/test_util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "kernels/rnn/rnn.h"

namespace {

using loom::bf16;
using loom::Cell;

constexpr Cell kCells[] = {Cell::RNN, Cell::LSTM, Cell::GRU};

using namespace loom::test;

// ---- helpers ---------------------------------------------------------------------------

// The values a bf16 (or f32) device buffer holds for v, and v rounded through them.
std::vector<bf16> to_bf16(const std::vector<double>& v) {
  std::vector<bf16> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = loom::to_bf16(float(v[i]));
  return r;
}
std::vector<float> to_f32(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }
std::vector<double> round_bf16(const std::vector<double>& v) { return to_double(to_bf16(v)); }
std::vector<double> round_f32(const std::vector<double>& v) { return to_double(to_f32(v)); }

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double e : v) m = std::max(m, std::fabs(e));
  return m;
}

bool variant_is(std::string_view v) { return std::string_view(LOOM_KERNEL_TEST_VARIANT) == v; }

struct Shape {
  int64_t B, S, I, H;
  int sms = 0;  // emulated SM count (0: LOOM_SIMT_SM_COUNT, default 4)
};
std::string name(Cell c, const Shape& s, const char* path = "") {
  std::ostringstream os;
  os << loom::cell_name(c) << " B=" << s.B << " S=" << s.S << " I=" << s.I << " H=" << s.H << path;
  if (s.sms) os << " on " << s.sms << " SM";
  return os.str();
}

// One problem: parameters, inputs and the loss weights dy, all in double.
struct Problem {
  Cell cell;
  Shape sh;
  std::vector<double> x, w_ih, w_hh, b_ih, b_hh, state0, dy;
  std::vector<int32_t> len;     // per-row lengths (empty: none)
  std::vector<double> dstateT;  // stateT's gradient (empty: none); with it, state0's is computed
  const int32_t* len_or_null() const { return len.empty() ? nullptr : len.data(); }
  int64_t G() const { return loom::cell_gates(cell); }
  int64_t NS() const { return loom::cell_states(cell); }
  int64_t W() const { return loom::rnn_saved_width(cell, sh.H); }
};

// Weights scaled by 1/sqrt(fan-in) so that the gates stay in their sensitive range.
Problem make_problem(Cell cell, const Shape& sh, uint32_t seed) {
  std::mt19937 rng(seed * 977u + uint32_t(cell) * 31u + uint32_t(sh.B * 131 + sh.S * 17 + sh.I * 7 + sh.H));
  Problem p{cell, sh, {}, {}, {}, {}, {}, {}, {}};
  const int64_t GH = p.G() * sh.H;
  p.x = random_f64(sh.B * sh.S * sh.I, rng, 0.1, 1.0);
  p.w_ih = random_f64(GH * sh.I, rng, 0.0, 1.0 / std::sqrt(double(sh.I)));
  p.w_hh = random_f64(GH * sh.H, rng, 0.0, 1.0 / std::sqrt(double(sh.H)));
  p.b_ih = random_f64(GH, rng, 0.0, 0.3);
  p.b_hh = random_f64(GH, rng, 0.0, 0.3);
  p.state0 = random_f64(p.NS() * sh.B * sh.H, rng, 0.0, 0.6);
  p.dy = random_f64(sh.B * sh.S * sh.H, rng, 0.0, 1.0);
  return p;
}

// The same problem as the CUDA path stores it: bf16 x, weights and dy, f32 state0.
void round_to_device_types(Problem& p) {
  for (auto* v : {&p.x, &p.w_ih, &p.w_hh, &p.b_ih, &p.b_hh, &p.dy}) *v = round_bf16(*v);
  p.state0 = round_f32(p.state0);
}

struct FwdOut {
  std::vector<double> y, stateT, saved;
};
FwdOut ref_fwd(const Problem& p) {
  const Shape& s = p.sh;
  FwdOut o{std::vector<double>(s.B * s.S * s.H), std::vector<double>(p.NS() * s.B * s.H),
           std::vector<double>(s.B * s.S * p.W())};
  loom::ref::rnn_fwd<double>({.cell = p.cell, .x = p.x.data(), .w_ih = p.w_ih.data(), .w_hh = p.w_hh.data(),
                              .b_ih = p.b_ih.data(), .b_hh = p.b_hh.data(), .state0 = p.state0.data(), .y = o.y.data(),
                              .stateT = o.stateT.data(), .saved = o.saved.data(), .B = s.B, .S = s.S, .I = s.I,
                              .H = s.H, .len = p.len_or_null()});
  return o;
}

struct Grads {
  std::vector<double> dx, dw_ih, dw_hh, db_ih, db_hh, dstate0;
};
Grads zero_grads(const Problem& p) {
  const Shape& s = p.sh;
  const int64_t GH = p.G() * s.H;
  return {std::vector<double>(s.B * s.S * s.I), std::vector<double>(GH * s.I), std::vector<double>(GH * s.H),
          std::vector<double>(GH), std::vector<double>(GH), std::vector<double>(p.dstateT.empty() ? 0 : p.state0.size())};
}
// Gradients of sum(dy * y) given the forward's y and saved; the parameter gradients are
// added to what g holds.
void ref_bwd(const Problem& p, const std::vector<double>& y, const std::vector<double>& saved, Grads& g,
             bool want_dx = true) {
  const Shape& s = p.sh;
  loom::ref::rnn_bwd<double>({.cell = p.cell, .dy = p.dy.data(), .x = p.x.data(), .w_ih = p.w_ih.data(),
                              .w_hh = p.w_hh.data(), .state0 = p.state0.data(), .y = y.data(), .saved = saved.data(),
                              .dx = want_dx ? g.dx.data() : nullptr, .dw_ih = g.dw_ih.data(), .dw_hh = g.dw_hh.data(),
                              .db_ih = g.db_ih.data(), .db_hh = g.db_hh.data(), .B = s.B, .S = s.S, .I = s.I,
                              .H = s.H, .dstateT = p.dstateT.empty() ? nullptr : p.dstateT.data(),
                              .dstate0 = g.dstate0.empty() ? nullptr : g.dstate0.data(), .len = p.len_or_null()});
}

// ---- the reference, in double ------------------------------------------------------------

#define REF_TEST_ONLY_IN_EMU()                                                                       \
  if (!variant_is("emu")) GTEST_SKIP() << "the reference is tested in the emu binary (no kernel here)"

double sigmoid(double v) { return 1 / (1 + std::exp(-v)); }

// The forward written out element by element from the cell equations (rnn.h), without BLAS
// and without the reference's structure: pre-activations per gate row, then the cell.
FwdOut naive_fwd(const Problem& p) {
  const Shape& s = p.sh;
  const int64_t H = s.H, I = s.I, G = p.G();
  FwdOut o{std::vector<double>(s.B * s.S * H), std::vector<double>(p.NS() * s.B * H), {}};
  for (int64_t b = 0; b < s.B; ++b) {
    std::vector<double> h(p.state0.begin() + b * H, p.state0.begin() + (b + 1) * H), c(H);
    if (p.cell == Cell::LSTM) c.assign(p.state0.begin() + (s.B + b) * H, p.state0.begin() + (s.B + b + 1) * H);
    for (int64_t t = 0; t < s.S; ++t) {
      std::vector<double> px(G * H), ph(G * H);
      for (int64_t r = 0; r < G * H; ++r) {
        px[r] = p.b_ih[r];
        for (int64_t i = 0; i < I; ++i) px[r] += p.w_ih[r * I + i] * p.x[(b * s.S + t) * I + i];
        ph[r] = p.b_hh[r];
        for (int64_t k = 0; k < H; ++k) ph[r] += p.w_hh[r * H + k] * h[k];
      }
      std::vector<double> hn(H);
      for (int64_t j = 0; j < H; ++j) {
        if (p.cell == Cell::RNN) {
          hn[j] = std::tanh(px[j] + ph[j]);
        } else if (p.cell == Cell::LSTM) {
          const double ig = sigmoid(px[j] + ph[j]), fg = sigmoid(px[H + j] + ph[H + j]);
          const double gg = std::tanh(px[2 * H + j] + ph[2 * H + j]), og = sigmoid(px[3 * H + j] + ph[3 * H + j]);
          c[j] = fg * c[j] + ig * gg;
          hn[j] = og * std::tanh(c[j]);
        } else {
          const double rg = sigmoid(px[j] + ph[j]), zg = sigmoid(px[H + j] + ph[H + j]);
          const double ng = std::tanh(px[2 * H + j] + rg * ph[2 * H + j]);
          hn[j] = (1 - zg) * ng + zg * h[j];
        }
      }
      h = hn;
      std::copy(h.begin(), h.end(), o.y.begin() + (b * s.S + t) * H);
    }
    std::copy(h.begin(), h.end(), o.stateT.begin() + b * H);
    if (p.cell == Cell::LSTM) std::copy(c.begin(), c.end(), o.stateT.begin() + (s.B + b) * H);
  }
  return o;
}

const std::vector<Shape> kRefShapes = {{2, 3, 4, 3}, {3, 5, 2, 4}, {1, 1, 3, 2}, {2, 4, 5, 6}};

TEST(RnnRef, ForwardMatchesNaiveLoop) {
  REF_TEST_ONLY_IN_EMU();
  for (Cell c : kCells)
    for (const Shape& sh : kRefShapes) {
      SCOPED_TRACE(name(c, sh));
      const Problem p = make_problem(c, sh, 1);
      const FwdOut r = ref_fwd(p), n = naive_fwd(p);
      // Same arithmetic in another order: double rounding differences only.
      EXPECT_TRUE(all_close("y", r.y, n.y, Tolerance{1e-13, 1e-12}));
      EXPECT_TRUE(all_close("stateT", r.stateT, n.stateT, Tolerance{1e-13, 1e-12}));
    }
}

// stateT carried into the next call as state0 continues the sequence exactly.
TEST(RnnRef, TwoHalvesEqualWhole) {
  REF_TEST_ONLY_IN_EMU();
  for (Cell c : kCells) {
    const Shape whole{3, 7, 4, 5};
    SCOPED_TRACE(name(c, whole));
    const Problem p = make_problem(c, whole, 2);
    const FwdOut all = ref_fwd(p);
    for (int64_t S1 : {1, 3, 6}) {
      // Problems over steps [t0, t0 + n) of p's sequence (x is batch-major: a strided slice).
      auto part = [&](int64_t t0, int64_t n, const std::vector<double>& state0) {
        Problem q = p;
        q.sh.S = n;
        q.x.assign(whole.B * n * whole.I, 0);
        for (int64_t b = 0; b < whole.B; ++b)
          std::copy_n(p.x.begin() + (b * whole.S + t0) * whole.I, n * whole.I, q.x.begin() + b * n * whole.I);
        q.state0 = state0;
        return q;
      };
      const FwdOut first = ref_fwd(part(0, S1, p.state0));
      const FwdOut second = ref_fwd(part(S1, whole.S - S1, first.stateT));
      std::vector<double> y(all.y.size());
      for (int64_t b = 0; b < whole.B; ++b) {
        std::copy_n(first.y.begin() + b * S1 * whole.H, S1 * whole.H, y.begin() + b * whole.S * whole.H);
        std::copy_n(second.y.begin() + b * (whole.S - S1) * whole.H, (whole.S - S1) * whole.H,
                    y.begin() + (b * whole.S + S1) * whole.H);
      }
      SCOPED_TRACE("split after " + std::to_string(S1));
      EXPECT_TRUE(all_close("y", y, all.y, Tolerance{1e-14, 1e-13}));
      EXPECT_TRUE(all_close("stateT", second.stateT, all.stateT, Tolerance{1e-14, 1e-13}));
    }
  }
}

// Per-row lengths: a row's final state is the state after its first len[b] steps (the
// sequence cut there), and its padded steps repeat that state in y.
TEST(RnnRef, LengthsEqualShorterSequences) {
  REF_TEST_ONLY_IN_EMU();
  for (Cell c : kCells) {
    const Shape whole{4, 6, 3, 5};
    SCOPED_TRACE(name(c, whole));
    Problem p = make_problem(c, whole, 4);
    p.len = {6, 0, 2, 5};
    const FwdOut got = ref_fwd(p);
    const FwdOut all = ref_fwd(make_problem(c, whole, 4));
    for (int64_t b = 0; b < whole.B; ++b) {
      const int64_t n = p.len[b], H = whole.H, BH = whole.B * H;
      Problem q = p;
      q.len.clear();
      q.sh.S = n;
      q.x.assign(whole.B * n * whole.I, 0);
      for (int64_t r = 0; r < whole.B; ++r)
        std::copy_n(p.x.begin() + r * whole.S * whole.I, n * whole.I, q.x.begin() + r * n * whole.I);
      const FwdOut cut = ref_fwd(q);
      for (int64_t k = 0; k < p.NS(); ++k)
        for (int64_t j = 0; j < H; ++j) EXPECT_NEAR(got.stateT[k * BH + b * H + j], cut.stateT[k * BH + b * H + j], 1e-13);
      for (int64_t t = 0; t < whole.S; ++t)
        for (int64_t j = 0; j < H; ++j) {
          const size_t at = size_t((b * whole.S + t) * H + j);
          EXPECT_NEAR(got.y[at], t < n ? all.y[at] : got.stateT[b * H + j], 1e-13) << "b " << b << " t " << t;
        }
    }
  }
}

// Central differences of L = sum(dy * y) (double, step 1e-6): truncation ~ eps^2 |L'''| and
// rounding ~ 1e-16 |L| / eps both stay below 1e-9 here, far inside atol 1e-8 + rtol 1e-6.
// The parameter gradients start from random values (rnn_bwd accumulates) that are subtracted
// again; dx = nullptr must leave the parameter gradients unchanged.
TEST(RnnRef, GradientsMatchFiniteDifferences) {
  REF_TEST_ONLY_IN_EMU();
  constexpr double kEps = 1e-6, kAtol = 1e-8, kRtol = 1e-6;
  for (Cell c : kCells)
    for (const Shape& sh : kRefShapes) {
      SCOPED_TRACE(name(c, sh));
      Problem p = make_problem(c, sh, 3);
      auto loss = [&](const Problem& q) {
        const FwdOut o = ref_fwd(q);
        double l = 0;
        for (size_t i = 0; i < o.y.size(); ++i) l += q.dy[i] * o.y[i];
        return l;
      };
      const FwdOut o = ref_fwd(p);
      Grads g = zero_grads(p);
      std::mt19937 rng(7);
      const Grads init{{}, random_f64(g.dw_ih.size(), rng, 0, 1), random_f64(g.dw_hh.size(), rng, 0, 1),
                       random_f64(g.db_ih.size(), rng, 0, 1), random_f64(g.db_hh.size(), rng, 0, 1)};
      g.dw_ih = init.dw_ih, g.dw_hh = init.dw_hh, g.db_ih = init.db_ih, g.db_hh = init.db_hh;
      g.dx.assign(g.dx.size(), NAN);  // written, not accumulated
      ref_bwd(p, o.y, o.saved, g);
      Grads g2 = zero_grads(p);
      ref_bwd(p, o.y, o.saved, g2, /*want_dx=*/false);

      struct Wrt {
        const char* what;
        std::vector<double>* param;
        std::vector<double> grad;
        const std::vector<double>* no_dx;
      };
      auto minus = [](std::vector<double> a, const std::vector<double>& b) {
        for (size_t i = 0; i < a.size(); ++i) a[i] -= b[i];
        return a;
      };
      std::vector<Wrt> wrt = {{"dx", &p.x, g.dx, nullptr},
                              {"dw_ih", &p.w_ih, minus(g.dw_ih, init.dw_ih), &g2.dw_ih},
                              {"dw_hh", &p.w_hh, minus(g.dw_hh, init.dw_hh), &g2.dw_hh},
                              {"db_ih", &p.b_ih, minus(g.db_ih, init.db_ih), &g2.db_ih},
                              {"db_hh", &p.b_hh, minus(g.db_hh, init.db_hh), &g2.db_hh}};
      for (Wrt& w : wrt) {
        std::vector<double> fd(w.param->size());
        for (size_t i = 0; i < fd.size(); ++i) {
          const double keep = (*w.param)[i];
          (*w.param)[i] = keep + kEps;
          const double lp = loss(p);
          (*w.param)[i] = keep - kEps;
          const double lm = loss(p);
          (*w.param)[i] = keep;
          fd[i] = (lp - lm) / (2 * kEps);
        }
        EXPECT_TRUE(all_close(w.what, w.grad, fd, Tolerance{kAtol, kRtol}));
        if (w.no_dx) {
          EXPECT_TRUE(all_close(std::string(w.what) + " (dx not wanted)", *w.no_dx, w.grad, Tolerance{1e-14, 1e-12}));
        }
      }
    }
}

// ---- CUDA vs the reference ---------------------------------------------------------------

// C = alpha op(A) op(B) + beta C with double accumulation; operands copied to the host and
// back, so that real device memory works and the emulator checks every operand's extent.
// run_cuda_bwd can also log the products it asks for (RnnBwd.ProductPlan).
void host_gemm(const loom::cuda::GemmCall& g) {
  using loom::DType;
  ASSERT_TRUE(g.m > 0 && g.n > 0 && g.k > 0) << "degenerate gemm " << g.m << "x" << g.n << "x" << g.k;
  ASSERT_TRUE(g.a_dtype == DType::BF16 || g.a_dtype == DType::F32);
  // One type for both operands, as the CUDA backend's cuBLASLt products require: a mixed call
  // would make it convert an operand at every call (at every step, for w_hh).
  ASSERT_EQ(g.a_dtype, g.b_dtype) << "mixed-type product " << g.m << "x" << g.n << "x" << g.k;
  ASSERT_TRUE(g.c_dtype == DType::BF16 || g.c_dtype == DType::F32);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  // A stored matrix of `rows` rows of `cols` used elements, `ld` apart.
  auto fetch = [](const void* p, DType t, int64_t rows, int64_t cols, int64_t ld) {
    EXPECT_GE(ld, cols);
    const size_t n = size_t((rows - 1) * ld + cols), es = loom::dtype_size(t);
    std::vector<unsigned char> raw(n * es);
    EXPECT_EQ(cudaMemcpy(raw.data(), p, raw.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    std::vector<double> v(n);
    for (size_t i = 0; i < n; ++i) {
      if (t == DType::BF16) {
        bf16 b;
        std::memcpy(&b, raw.data() + i * es, es);
        v[i] = loom::from_bf16(b);
      } else {
        float f;
        std::memcpy(&f, raw.data() + i * es, es);
        v[i] = f;
      }
    }
    return std::make_pair(v, raw);
  };
  const auto [a, a_raw] = fetch(g.A, g.a_dtype, g.ta ? g.k : g.m, g.ta ? g.m : g.k, g.lda);
  const auto [b, b_raw] = fetch(g.B, g.b_dtype, g.tb ? g.n : g.k, g.tb ? g.k : g.n, g.ldb);
  auto [c, c_raw] = fetch(g.C, g.c_dtype, g.m, g.n, g.ldc);
  for (int64_t i = 0; i < g.m; ++i)
    for (int64_t j = 0; j < g.n; ++j) {
      double s = 0;
      for (int64_t p = 0; p < g.k; ++p)
        s += a[g.ta ? p * g.lda + i : i * g.lda + p] * b[g.tb ? j * g.ldb + p : p * g.ldb + j];
      // beta = 0 does not read C (it may hold NaN), as in BLAS.
      const double v = g.alpha * s + (g.beta != 0 ? g.beta * c[i * g.ldc + j] : 0.0);
      const size_t at = size_t(i * g.ldc + j), es = loom::dtype_size(g.c_dtype);
      if (g.c_dtype == DType::BF16) {
        const bf16 h = loom::to_bf16(float(v));
        std::memcpy(c_raw.data() + at * es, &h, es);
      } else {
        const float f = float(v);
        std::memcpy(c_raw.data() + at * es, &f, es);
      }
    }
  ASSERT_EQ(cudaMemcpy(g.C, c_raw.data(), c_raw.size(), cudaMemcpyHostToDevice), cudaSuccess);
}

// Small shapes for the emulator (one OS thread per CUDA thread), smaller under the
// sanitizers. B = 7 with the emulator's 4 SMs gives the persistent kernel 2 rows a block and
// a last block with one; B = 20 (4 SMs) and B = 10 (one SM) give it 8 rows a block, more
// (row, column) elements than threads, so its per-row loops go round twice; I != H
// everywhere; H = 32 fills whole warps, H = 8 / 16 do not.
std::vector<Shape> kernel_shapes() {
  if (LOOM_SANITIZED) return {{2, 3, 5, 8}, {7, 2, 3, 8}, {10, 2, 3, 8, 1}};
  std::vector<Shape> v = {{3, 5, 7, 16}, {4, 6, 12, 32}, {7, 3, 5, 8}, {20, 3, 5, 16}};
  if (!LOOM_SIMT_EMULATION) {
    v.push_back({16, 24, 48, 96});
    v.push_back({8, 12, 40, 128});  // persistent only for the RNN and the GRU
    v.push_back({200, 4, 16, 64});  // 200 rows: 8 rows a block on the persistent path
  }
  return v;
}

// Forward tolerances. y is bf16 (a rounding is 2^-9 relative); beyond that both paths feed
// the bf16-rounded h to the recurrent product, which the double reference does not, so
// errors of a few 2^-9 carry through the steps into y, the f32 state and the saved values
// (all |.| <~ 2 here). atol 8e-3 is about four bf16 roundings of a unit value.
constexpr Tolerance kFwd{8e-3, 1e-2};

struct CudaFwd {
  std::vector<double> y, stateT, saved;
};
CudaFwd run_cuda_fwd(const Problem& p, bool allow_persistent, const std::string& what) {
  const Shape& s = p.sh;
  DeviceBuffer<bf16> x(to_bf16(p.x)), w_ih(to_bf16(p.w_ih)), w_hh(to_bf16(p.w_hh)), b_ih(to_bf16(p.b_ih)),
      b_hh(to_bf16(p.b_hh)), y(s.B * s.S * s.H);
  DeviceBuffer<float> state0(to_f32(p.state0)), stateT(p.NS() * s.B * s.H), saved(s.B * s.S * p.W()),
      scratch(loom::cuda::rnn_fwd_scratch_floats(p.cell, s.B, s.S, s.I, s.H));
  DeviceBuffer<int32_t> len(p.len);
  y.poison(), stateT.poison(), saved.poison(), scratch.poison();
  EmulatedSms sms(s.sms);
  const auto t0 = std::chrono::steady_clock::now();
  loom::cuda::rnn_fwd({.cell = p.cell, .x = x.get(), .w_ih = w_ih.get(), .w_hh = w_hh.get(), .b_ih = b_ih.get(),
                       .b_hh = b_hh.get(), .state0 = state0.get(), .y = y.get(), .stateT = stateT.get(),
                       .saved = saved.get(), .B = s.B, .S = s.S, .I = s.I, .H = s.H, .scratch = scratch.get(),
                       .allow_persistent = allow_persistent, .len = p.len.empty() ? nullptr : len.get()},
                      host_gemm, nullptr);
  EXPECT_CUDA(cudaDeviceSynchronize());
  print_timing("rnn_fwd " + what, t0);
  return {to_double(y.download()), to_double(stateT.download()), to_double(saved.download())};
}

void check_forward(Cell c, const Shape& sh, bool persistent) {
  if (persistent && !loom::cuda::rnn_persistent_fits(c, sh.H)) return;
  const std::string what = name(c, sh, persistent ? " persistent" : " per-step");
  SCOPED_TRACE(what);
  Problem p = make_problem(c, sh, 11);
  round_to_device_types(p);
  const CudaFwd got = run_cuda_fwd(p, persistent, what);
  const FwdOut ref = ref_fwd(p);
  EXPECT_TRUE(all_close("y", got.y, ref.y, kFwd));
  EXPECT_TRUE(all_close("stateT", got.stateT, ref.stateT, kFwd));
  EXPECT_TRUE(all_close("saved", got.saved, ref.saved, kFwd));
}

TEST(RnnFwd, PerStepMatchesReference) {
  for (Cell c : kCells)
    for (const Shape& sh : kernel_shapes()) check_forward(c, sh, false);
}

TEST(RnnFwd, PersistentMatchesReference) {
  for (Cell c : kCells)
    for (const Shape& sh : kernel_shapes()) check_forward(c, sh, true);
}

TEST(RnnFwd, PersistentFits) {
  EXPECT_TRUE(loom::cuda::rnn_persistent_fits(Cell::LSTM, 64));    // 32 KiB
  EXPECT_TRUE(loom::cuda::rnn_persistent_fits(Cell::LSTM, 110));   // 94.5 KiB
  EXPECT_FALSE(loom::cuda::rnn_persistent_fits(Cell::LSTM, 111));  // 96.3 KiB
  EXPECT_TRUE(loom::cuda::rnn_persistent_fits(Cell::GRU, 128));    // 96 KiB
  EXPECT_FALSE(loom::cuda::rnn_persistent_fits(Cell::GRU, 129));
  EXPECT_TRUE(loom::cuda::rnn_persistent_fits(Cell::RNN, 221));
  EXPECT_FALSE(loom::cuda::rnn_persistent_fits(Cell::RNN, 222));
}

// No steps: the state passes through, nothing else is touched.
TEST(RnnFwd, EmptySequencePassesStateThrough) {
  Problem p = make_problem(Cell::LSTM, {3, 0, 4, 5}, 5);
  p.state0 = round_f32(p.state0);
  const CudaFwd got = run_cuda_fwd(p, true, "S=0");
  EXPECT_TRUE(all_close("stateT", got.stateT, p.state0, Tolerance{0, 0}));
}

// Backward tolerances. Both sides get the same inputs (the reference forward's y rounded to
// bf16 and saved rounded to f32), and the products see exact bf16/f32 operands, so the f32
// gradients differ from the double ones only by f32 arithmetic along the reverse recurrence:
// atol 1e-4 of the tensor's largest gradient and rtol 1e-4 leave ample room for that while
// any wrong term is orders of magnitude larger. dx is bf16: 2^-9 relative per rounding.
constexpr double kGradScaleTol = 1e-4, kGradRtol = 1e-4;
constexpr double kDxScaleTol = 2e-3, kDxRtol = 8e-3;

struct BwdCase {
  Problem p;
  std::vector<double> y, saved;  // as the device holds them: bf16 y, f32 saved
  Grads init;                    // starting values of the accumulated gradients (f32)
};
BwdCase make_bwd_case(Cell c, const Shape& sh) {
  BwdCase k{make_problem(c, sh, 23), {}, {}, {}};
  round_to_device_types(k.p);
  const FwdOut f = ref_fwd(k.p);
  k.y = round_bf16(f.y);
  k.saved = round_f32(f.saved);
  std::mt19937 rng(uint32_t(sh.B * 3 + sh.H));
  k.init = zero_grads(k.p);
  for (auto* v : {&k.init.dw_ih, &k.init.dw_hh, &k.init.db_ih, &k.init.db_hh})
    *v = round_f32(random_f64(v->size(), rng, 0, 1));
  return k;
}

struct CudaBwdRaw {
  std::vector<bf16> dx;
  std::vector<float> dw_ih, dw_hh, db_ih, db_hh, dstate0;
};
CudaBwdRaw run_cuda_bwd(const BwdCase& k, bool want_dx, const std::string& what,
                        std::vector<loom::cuda::GemmCall>* log = nullptr) {
  const Problem& p = k.p;
  const Shape& s = p.sh;
  DeviceBuffer<bf16> dy(to_bf16(p.dy)), x(to_bf16(p.x)), w_ih(to_bf16(p.w_ih)), w_hh(to_bf16(p.w_hh)),
      y(to_bf16(k.y)), dx(s.B * s.S * s.I);
  DeviceBuffer<float> state0(to_f32(p.state0)), saved(to_f32(k.saved)), dw_ih(to_f32(k.init.dw_ih)),
      dw_hh(to_f32(k.init.dw_hh)), db_ih(to_f32(k.init.db_ih)), db_hh(to_f32(k.init.db_hh)),
      scratch(loom::cuda::rnn_bwd_scratch_floats(p.cell, s.B, s.S, s.I, s.H)), dstateT(to_f32(p.dstateT)),
      dstate0(p.dstateT.empty() ? 0 : p.state0.size());
  DeviceBuffer<int32_t> len(p.len);
  dx.poison(), scratch.poison(), dstate0.poison();
  EmulatedSms sms(s.sms);
  const auto t0 = std::chrono::steady_clock::now();
  loom::cuda::rnn_bwd({.cell = p.cell, .dy = dy.get(), .x = x.get(), .w_ih = w_ih.get(), .w_hh = w_hh.get(),
                       .state0 = state0.get(), .y = y.get(), .saved = saved.get(), .dx = want_dx ? dx.get() : nullptr,
                       .dw_ih = dw_ih.get(), .dw_hh = dw_hh.get(), .db_ih = db_ih.get(), .db_hh = db_hh.get(), .B = s.B,
                       .S = s.S, .I = s.I, .H = s.H, .scratch = scratch.get(),
                       .dstateT = p.dstateT.empty() ? nullptr : dstateT.get(),
                       .dstate0 = p.dstateT.empty() ? nullptr : dstate0.get(), .len = p.len.empty() ? nullptr : len.get()},
                      [log](const loom::cuda::GemmCall& g) {
                        if (log) log->push_back(g);
                        host_gemm(g);
                      },
                      nullptr);
  EXPECT_CUDA(cudaDeviceSynchronize());
  print_timing("rnn_bwd " + what, t0);
  return {dx.download(),    dw_ih.download(), dw_hh.download(),
          db_ih.download(), db_hh.download(), p.dstateT.empty() ? std::vector<float>{} : dstate0.download()};
}

// got - init against the reference's increment, atol relative to the increment's scale.
::testing::AssertionResult grad_close(const std::string& what, const std::vector<float>& got,
                                      const std::vector<double>& init, const std::vector<double>& ref_inc) {
  std::vector<double> inc(got.size());
  for (size_t i = 0; i < got.size(); ++i) inc[i] = double(got[i]) - init[i];
  return all_close(what, inc, ref_inc, Tolerance{kGradScaleTol * max_abs(ref_inc), kGradRtol});
}

void check_backward(Cell c, const Shape& sh) {
  const std::string what = name(c, sh);
  SCOPED_TRACE(what);
  const BwdCase k = make_bwd_case(c, sh);
  const CudaBwdRaw got = run_cuda_bwd(k, true, what);
  Grads ref = zero_grads(k.p);
  ref_bwd(k.p, k.y, k.saved, ref);
  EXPECT_TRUE(all_close("dx", got.dx, ref.dx, Tolerance{kDxScaleTol * max_abs(ref.dx), kDxRtol}));
  EXPECT_TRUE(grad_close("dw_ih", got.dw_ih, k.init.dw_ih, ref.dw_ih));
  EXPECT_TRUE(grad_close("dw_hh", got.dw_hh, k.init.dw_hh, ref.dw_hh));
  EXPECT_TRUE(grad_close("db_ih", got.db_ih, k.init.db_ih, ref.db_ih));
  EXPECT_TRUE(grad_close("db_hh", got.db_hh, k.init.db_hh, ref.db_hh));
}

// Per-row lengths (a full row, an empty one, one step, and between) with stateT's gradient in
// and state0's out, every cell: the forward on both paths and the backward against the
// reference.
TEST(RnnLengths, MatchReference) {
  const Shape sh = LOOM_SANITIZED ? Shape{4, 3, 5, 8} : Shape{6, 5, 7, 16};
  for (Cell c : kCells) {
    const std::string what = name(c, sh, " lengths");
    SCOPED_TRACE(what);
    BwdCase k = make_bwd_case(c, sh);
    Problem& p = k.p;
    p.len = {int32_t(sh.S), 0, 1};
    for (int64_t b = 3; b < sh.B; ++b) p.len.push_back(int32_t(1 + b % sh.S));
    std::mt19937 rng(5);
    p.dstateT = round_f32(random_f64(p.state0.size(), rng, 0, 1));
    const FwdOut ref = ref_fwd(p);
    for (bool persistent : {false, true}) {
      if (persistent && !loom::cuda::rnn_persistent_fits(c, sh.H)) continue;
      const CudaFwd got = run_cuda_fwd(p, persistent, what);
      EXPECT_TRUE(all_close("y", got.y, ref.y, kFwd));
      EXPECT_TRUE(all_close("stateT", got.stateT, ref.stateT, kFwd));
      EXPECT_TRUE(all_close("saved", got.saved, ref.saved, kFwd));
    }
    k.y = round_bf16(ref.y);
    k.saved = round_f32(ref.saved);
    const CudaBwdRaw got = run_cuda_bwd(k, true, what);
    Grads r = zero_grads(p);
    ref_bwd(p, k.y, k.saved, r);
    EXPECT_TRUE(all_close("dx", got.dx, r.dx, Tolerance{kDxScaleTol * max_abs(r.dx), kDxRtol}));
    EXPECT_TRUE(grad_close("dw_ih", got.dw_ih, k.init.dw_ih, r.dw_ih));
    EXPECT_TRUE(grad_close("dw_hh", got.dw_hh, k.init.dw_hh, r.dw_hh));
    EXPECT_TRUE(grad_close("db_ih", got.db_ih, k.init.db_ih, r.db_ih));
    EXPECT_TRUE(grad_close("db_hh", got.db_hh, k.init.db_hh, r.db_hh));
    EXPECT_TRUE(all_close("dstate0", std::vector<double>(got.dstate0.begin(), got.dstate0.end()), r.dstate0,
                          Tolerance{kGradScaleTol * max_abs(r.dstate0), kGradRtol}));
  }
}

TEST(RnnBwd, MatchesReference) {
  for (Cell c : kCells)
    for (const Shape& sh : kernel_shapes()) check_backward(c, sh);
}

// dx not wanted: the parameter gradients are the same, bit for bit.
TEST(RnnBwd, WithoutDx) {
  const Shape sh = LOOM_SANITIZED ? Shape{2, 3, 5, 8} : Shape{3, 4, 6, 16};
  // Under the sanitizers (a launch costs ~0.1 s there) the GRU alone: it has the most buffers.
  const std::vector<Cell> cells = LOOM_SANITIZED ? std::vector<Cell>{Cell::GRU} : std::vector<Cell>(kCells, kCells + 3);
  for (Cell c : cells) {
    SCOPED_TRACE(name(c, sh));
    const BwdCase k = make_bwd_case(c, sh);
    const CudaBwdRaw a = run_cuda_bwd(k, true, name(c, sh)), b = run_cuda_bwd(k, false, name(c, sh) + " no dx");
    EXPECT_EQ(a.dw_ih, b.dw_ih);
    EXPECT_EQ(a.dw_hh, b.dw_hh);
    EXPECT_EQ(a.db_ih, b.db_ih);
    EXPECT_EQ(a.db_hh, b.db_hh);
  }
}

// The backward's products, by type and size: S - 1 per-step products dh = dg_t w_hh in f32
// (w_hh widened once, never per step: host_gemm refuses mixed types), then over all B*S rows
// the bf16 weight-gradient products, two per weight (dg's hi and lo halves), the f32 t = 0
// term of dW_hh, and dx in bf16 (both halves in one product, K = 2 GH). A launcher that goes back to per-step weight products or to
// f32 SIMT products for dW fails here.
TEST(RnnBwd, ProductPlan) {
  const Shape sh = LOOM_SANITIZED ? Shape{2, 3, 5, 8} : Shape{3, 5, 7, 16};
  for (Cell c : kCells) {
    SCOPED_TRACE(name(c, sh));
    const BwdCase k = make_bwd_case(c, sh);
    std::vector<loom::cuda::GemmCall> log;
    run_cuda_bwd(k, true, name(c, sh), &log);
    const int64_t GH = k.p.G() * sh.H, BS = sh.B * sh.S;
    int step_f32 = 0, wgrad_bf16 = 0, h0_f32 = 0, dx_bf16 = 0;
    for (const auto& g : log) {
      const bool f32 = g.a_dtype == loom::DType::F32, bf = g.a_dtype == loom::DType::BF16;
      if (f32 && g.m == sh.B && g.k == GH) ++step_f32;
      else if (bf && g.ta && g.m == GH && g.k == BS && g.c_dtype == loom::DType::F32) ++wgrad_bf16;
      else if (f32 && g.ta && g.m == GH && g.k == sh.B) ++h0_f32;
      else if (bf && g.m == BS && g.k == 2 * GH && g.c_dtype == loom::DType::BF16) ++dx_bf16;
      else ADD_FAILURE() << "unexpected product " << g.m << "x" << g.n << "x" << g.k;
    }
    EXPECT_EQ(step_f32, sh.S - 1);
    EXPECT_EQ(wgrad_bf16, 4);  // dW_hh and dW_ih, hi and lo each
    EXPECT_EQ(h0_f32, 1);
    EXPECT_EQ(dx_bf16, 1);
    EXPECT_EQ(log.size(), size_t(sh.S - 1 + 4 + 1 + 1));
  }
}

// Same inputs, same device: the gradients agree bit for bit (no float atomics).
TEST(RnnBwd, BitIdenticalRuns) {
  if (LOOM_SIMT_EMULATION) GTEST_SKIP() << "blocks run in order under the emulator: deterministic by construction";
  const Shape sh{64, 16, 48, 96};
  for (Cell c : kCells) {
    SCOPED_TRACE(name(c, sh));
    const BwdCase k = make_bwd_case(c, sh);
    const CudaBwdRaw a = run_cuda_bwd(k, true, name(c, sh)), b = run_cuda_bwd(k, true, name(c, sh));
    EXPECT_TRUE(same_bits("dx", a.dx, b.dx));
    EXPECT_EQ(a.dw_ih, b.dw_ih);
    EXPECT_EQ(a.dw_hh, b.dw_hh);
    EXPECT_EQ(a.db_ih, b.db_ih);
    EXPECT_EQ(a.db_hh, b.db_hh);
  }
}

TEST(RnnScratch, Sizes) {
  for (Cell c : kCells) {
    const int64_t B = 5, S = 7, I = 9, H = 11, GH = loom::cell_gates(c) * H;
    EXPECT_GE(loom::cuda::rnn_fwd_scratch_floats(c, B, S, I, H), size_t(B * S * GH + B * GH + B * H));
    EXPECT_GE(loom::cuda::rnn_bwd_scratch_floats(c, B, S, I, H), size_t(B * S * GH + B * S * H + B * H));
  }
  EXPECT_STREQ(loom::cell_name(Cell::RNN), "rnn");
  EXPECT_STREQ(loom::cell_name(Cell::LSTM), "lstm");
  EXPECT_STREQ(loom::cell_name(Cell::GRU), "gru");
  EXPECT_EQ(loom::rnn_saved_width(Cell::LSTM, 10), 50);
  EXPECT_EQ(loom::rnn_saved_width(Cell::GRU, 10), 40);
  EXPECT_EQ(loom::rnn_saved_width(Cell::RNN, 10), 10);
}

}  // namespace
