// cpu_step_test.cpp: the CPU backend's fused and vectorised step kernels against the plain
// passes they replace: AdamW and the gradient norm (kernels/adamw/adamw_ref.cpp) against scalar
// loops written here term for term, the product with its GELU epilogue (linear_gelu_fwd,
// kernels/matmul/matmul_ref.cpp) against the product then the GELU pass, the classifier loss's
// vectorised row max (softmax_xent_ref.cpp) against a double log-sum-exp. They must give the same
// bits whatever the thread count (a resumed run repeats its steps exactly), and let a NaN
// through rather than hide it.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/adamw/adamw.h"
#include "kernels/gelu/gelu.h"
#include "kernels/matmul/matmul.h"
#include "kernels/softmax_xent/softmax_xent.h"

namespace loom {
namespace {

struct OptState {
  std::vector<float> param, grad, m, v;
  std::vector<uint8_t> decay;
};

OptState random_state(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_real_distribution<float> pos(1e-6f, 1e-2f);
  OptState s;
  for (int64_t i = 0; i < n; ++i) {
    s.param.push_back(nd(rng));
    s.grad.push_back(nd(rng));
    s.m.push_back(0.1f * nd(rng));
    s.v.push_back(pos(rng));
    s.decay.push_back(static_cast<uint8_t>(rng() & 1u));
  }
  return s;
}

ref::AdamWArgs args(OptState& s, bool mask, int64_t step, float grad_scale) {
  return {.param = s.param.data(), .grad = s.grad.data(), .m = s.m.data(), .v = s.v.data(),
          .decay = mask ? s.decay.data() : nullptr, .n = static_cast<int64_t>(s.param.size()), .lr = 3e-3f,
          .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f, .grad_scale = grad_scale, .step = step};
}

// AdamW as the paper writes it, one element at a time.
void scalar_adamw(const ref::AdamWArgs& a) {
  const float bc1 = 1.0f - std::pow(a.beta1, static_cast<float>(a.step));
  const float bc2 = 1.0f - std::pow(a.beta2, static_cast<float>(a.step));
  for (int64_t i = 0; i < a.n; ++i) {
    const float g = a.grad[i] * a.grad_scale;
    const float m = a.beta1 * a.m[i] + (1.0f - a.beta1) * g;
    const float v = a.beta2 * a.v[i] + (1.0f - a.beta2) * g * g;
    a.m[i] = m;
    a.v[i] = v;
    const float mhat = m / bc1, vhat = v / bc2;
    const float wd = (!a.decay || a.decay[i]) ? a.weight_decay : 0.0f;
    a.param[i] -= a.lr * (mhat / (std::sqrt(vhat) + a.eps) + wd * a.param[i]);
  }
}

// Runs f with the given OpenMP thread count, restoring the previous one.
template <class F>
void with_threads(int threads, F f) {
  const int before = omp_get_max_threads();
  omp_set_num_threads(threads);
  f();
  omp_set_num_threads(before);
}

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Lengths around the chunk (16,384) and vector widths (8, 16): tails of every size.
const std::vector<int64_t> kLengths = {1, 7, 17, 1001, 16383, 16385, 50001};

TEST(CpuAdamW, SameBitsAsTheScalarLoopAtAnyThreadCount) {
  uint32_t seed = 1;
  for (int64_t n : kLengths)
    for (bool mask : {false, true})
      for (int threads : {1, 2, 3}) {
        SCOPED_TRACE("n=" + std::to_string(n) + (mask ? " decay mask" : " no mask") + " threads=" +
                     std::to_string(threads));
        const OptState s0 = random_state(n, seed++);
        OptState want = s0, got = s0;
        for (int64_t step = 1; step <= 3; ++step) {  // bias corrections change each step
          scalar_adamw(args(want, mask, step, 0.75f));
          with_threads(threads, [&] { ref::adamw_step(args(got, mask, step, 0.75f)); });
        }
        int64_t moved = 0;
        for (int64_t i = 0; i < n; ++i) {
          moved += got.param[i] != s0.param[i];
          ASSERT_EQ(bits(got.param[i]), bits(want.param[i])) << "param " << i << ": " << got.param[i] << " vs "
                                                             << want.param[i];
          ASSERT_EQ(bits(got.m[i]), bits(want.m[i])) << "m " << i;
          ASSERT_EQ(bits(got.v[i]), bits(want.v[i])) << "v " << i;
        }
        EXPECT_GE(moved, n * 9 / 10) << "the update left most weights where they were";
      }
}

TEST(CpuAdamW, NanGradientReachesItsOwnElementOnly) {
  const int64_t n = 1001;
  OptState s = random_state(n, 99);
  const std::vector<float> before = s.param;
  s.grad[500] = std::numeric_limits<float>::quiet_NaN();
  ref::adamw_step(args(s, true, 1, 1.0f));
  EXPECT_TRUE(std::isnan(s.param[500]));
  EXPECT_TRUE(std::isnan(s.m[500]));
  EXPECT_TRUE(std::isnan(s.v[500]));
  for (int64_t i : {int64_t{0}, int64_t{499}, int64_t{501}, n - 1}) {
    EXPECT_TRUE(std::isfinite(s.param[i])) << i;
    EXPECT_NE(s.param[i], before[i]) << i;
  }
}

TEST(CpuGradNorm, MatchesALongDoubleSumAndKeepsItsBitsAtAnyThreadCount) {
  uint32_t seed = 7;
  for (int64_t n : kLengths) {
    SCOPED_TRACE("n=" + std::to_string(n));
    const OptState s = random_state(n, seed++);
    long double sum = 0;
    for (float g : s.grad) sum += static_cast<long double>(g) * g;
    const double want = std::sqrt(static_cast<double>(sum));
    double one = 0;
    with_threads(1, [&] { one = ref::grad_norm(s.grad.data(), n); });
    EXPECT_NEAR(one, want, 1e-13 * want);  // double sums of n <= 5e4 float squares
    for (int threads : {2, 3}) {
      double t = 0;
      with_threads(threads, [&] { t = ref::grad_norm(s.grad.data(), n); });
      EXPECT_EQ(t, one) << threads << " threads";
    }
  }
}

TEST(CpuGradNorm, NanAndInfAreNotHidden) {
  OptState s = random_state(50001, 3);
  s.grad[40000] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(ref::grad_norm(s.grad.data(), 50001)));
  s.grad[40000] = std::numeric_limits<float>::infinity();
  EXPECT_TRUE(std::isinf(ref::grad_norm(s.grad.data(), 50001)));
  s.grad[40000] = 1e30f;  // its square overflows a float, not the double accumulator
  EXPECT_NEAR(ref::grad_norm(s.grad.data(), 50001), 1e30, 1e30 * 1e-7);
}

std::vector<float> random_floats(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& f : v) f = nd(rng);
  return v;
}

TEST(CpuLinearGelu, SameBitsAsTheProductThenTheGeluPass) {
  struct Shape {
    int64_t N, K, M;
  };
  // Row slabs (N >= 16 a thread), column slabs (a short N), ragged edges, one row.
  const std::vector<Shape> shapes = {{100, 33, 70}, {1024, 64, 256}, {5, 40, 129}, {1, 17, 48}, {37, 24, 3}};
  std::mt19937 rng(11);
  for (const Shape& sh : shapes)
    for (bool bias : {true, false})
      for (int threads : {1, 2, 3}) {
        SCOPED_TRACE("N=" + std::to_string(sh.N) + " K=" + std::to_string(sh.K) + " M=" + std::to_string(sh.M) +
                     (bias ? " bias" : " no bias") + " threads=" + std::to_string(threads));
        const std::vector<float> x = random_floats(sh.N * sh.K, rng), w = random_floats(sh.M * sh.K, rng),
                                 b = random_floats(sh.M, rng);
        const size_t ny = static_cast<size_t>(sh.N * sh.M);
        const float poison = std::numeric_limits<float>::quiet_NaN();
        std::vector<float> pre_want(ny, poison), y_want(ny, poison), pre_got(ny, poison), y_got(ny, poison);
        const ref::LinearArgs<float> want{.x = x.data(), .w = w.data(), .b = bias ? b.data() : nullptr,
                                          .y = pre_want.data(), .N = sh.N, .K = sh.K, .M = sh.M};
        ref::LinearArgs<float> got = want;
        got.y = pre_got.data();
        with_threads(threads, [&] {
          ref::linear_fwd<float>(want);
          ref::gelu_fwd<float>({.x = pre_want.data(), .y = y_want.data(), .n = static_cast<int64_t>(ny)});
          ref::linear_gelu_fwd<float>(got, y_got.data());
        });
        for (size_t i = 0; i < ny; ++i) {
          ASSERT_FALSE(std::isnan(y_got[i])) << i << " not written";
          ASSERT_EQ(bits(pre_got[i]), bits(pre_want[i])) << "pre " << i;
          ASSERT_EQ(bits(y_got[i]), bits(y_want[i])) << "y " << i;
        }
        // The product itself, checked once in double: the shared path cannot hide a wrong product.
        const int64_t n = sh.N - 1, m = sh.M / 2;
        double acc = bias ? b[static_cast<size_t>(m)] : 0.0;
        for (int64_t k = 0; k < sh.K; ++k)
          acc += static_cast<double>(x[static_cast<size_t>(n * sh.K + k)]) * w[static_cast<size_t>(m * sh.K + k)];
        EXPECT_NEAR(pre_got[static_cast<size_t>(n * sh.M + m)], acc, 1e-5 * (1 + std::sqrt(double(sh.K))));
      }
}

TEST(CpuLinearGelu, NanInTheInputReachesItsRowOnly) {
  const int64_t N = 64, K = 32, M = 48;
  std::mt19937 rng(5);
  std::vector<float> x = random_floats(N * K, rng);
  const std::vector<float> w = random_floats(M * K, rng), b = random_floats(M, rng);
  x[static_cast<size_t>(10 * K + 3)] = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> pre(static_cast<size_t>(N * M)), y(pre.size());
  ref::linear_gelu_fwd<float>({.x = x.data(), .w = w.data(), .b = b.data(), .y = pre.data(), .N = N, .K = K, .M = M},
                              y.data());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t m = 0; m < M; ++m)
      EXPECT_EQ(std::isnan(y[static_cast<size_t>(n * M + m)]), n == 10) << n << "," << m;
}

TEST(CpuSoftmaxXent, LogSumExpOfEveryRowWhereverItsMaximumIs) {
  // V = 8,197: a 16-wide vector body and a 5-element tail; each row's maximum sits somewhere
  // else (first, in the body, in the tail, last) and stands far above the rest, so a wrong
  // maximum shows as exp overflow or a shifted result.
  const int64_t N = 6, V = 8197;
  std::mt19937 rng(21);
  std::vector<float> z = random_floats(N * V, rng);
  const int64_t peak_at[N] = {0, 1, 4000, V - 5, V - 2, V - 1};
  for (int64_t n = 0; n < N; ++n) z[static_cast<size_t>(n * V + peak_at[n])] = 95.0f + static_cast<float>(n);
  std::vector<int32_t> targets(N);
  for (int64_t n = 0; n < N; ++n) targets[static_cast<size_t>(n)] = static_cast<int32_t>((n * 977) % V);
  std::vector<float> lse(N, std::numeric_limits<float>::quiet_NaN()), loss(1, std::numeric_limits<float>::quiet_NaN());
  ref::softmax_xent_fwd<float>({.logits = z.data(), .targets = targets.data(), .loss = loss.data(), .lse = lse.data(),
                                .N = N, .V = V});
  double want_loss = 0;
  for (int64_t n = 0; n < N; ++n) {
    const float* row = z.data() + n * V;
    const double m = row[peak_at[n]];
    double s = 0;
    for (int64_t v = 0; v < V; ++v) s += std::exp(static_cast<double>(row[v]) - m);
    const double want = m + std::log(s);
    EXPECT_NEAR(lse[static_cast<size_t>(n)], want, 1e-6 * std::abs(want)) << "row " << n;
    want_loss += want - row[targets[static_cast<size_t>(n)]];
  }
  EXPECT_NEAR(loss[0], want_loss / N, 1e-5 * std::abs(want_loss / N));
  z[static_cast<size_t>(2 * V + 8196)] = std::numeric_limits<float>::quiet_NaN();  // in the tail
  ref::softmax_xent_fwd<float>({.logits = z.data(), .targets = targets.data(), .loss = loss.data(), .lse = lse.data(),
                                .N = N, .V = V});
  EXPECT_TRUE(std::isnan(lse[2]));
  EXPECT_TRUE(std::isnan(loss[0]));
  EXPECT_TRUE(std::isfinite(lse[1]));
}

}  // namespace
}  // namespace loom
