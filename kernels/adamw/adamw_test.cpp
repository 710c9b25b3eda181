// adamw_test.cpp: the optimizer kernels (adamw.cu) against the CPU reference and against the
// properties the reference cannot state: the stochastically rounded bf16 working copy is
// always one of the two bf16 neighbours of the new weight, unbiased where round-to-nearest is
// not, and the same bits for the same seed; the gradient norm is the same bits every run;
// the cast matches dtype.h's to_bf16 bit for bit. One source for the emulator, its TSan and
// ASan builds, and a real GPU (cmake/LoomKernel.cmake).
//
// Each kernel has a 16-byte vector path and a scalar one; the buffers offset by one element
// take the scalar path, lengths that are not multiples of 4 or 8 run the vector path's tail.
#include "kernels/common/cuda_compat.h"
#include "kernels/common/test_util.h"
#include "kernels/adamw/adamw.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace loom {
namespace {

using namespace loom::test;

// f32 AdamW: the kernel repeats the reference's arithmetic term for term; only FMA
// contraction (nvcc) separates them, a few ulps of the weight.
constexpr Tolerance kF32Step{1e-7, 2e-6};

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// Truncation toward zero: the lower-magnitude bf16 neighbour of x.
uint16_t bf16_down(float x) { return uint16_t(bits_of(x) >> 16); }

struct State {
  std::vector<float> param, grad, m, v;
  std::vector<uint8_t> decay;
};

State random_state(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f), pos(1e-4f, 1e-2f);
  std::normal_distribution<float> nd(0.f, 1.f);
  State s;
  s.param.resize(n);
  s.grad.resize(n);
  s.m.resize(n);
  s.v.resize(n);
  s.decay.resize(n);
  for (size_t i = 0; i < n; ++i) {
    s.param[i] = nonzero(u(rng));
    s.grad[i] = nonzero(nd(rng));
    s.m[i] = nonzero(0.1f * nd(rng));
    s.v[i] = pos(rng);
    s.decay[i] = uint8_t(rng() & 1u);
  }
  return s;
}

// A state on the device, each buffer `offset` elements into its allocation (offset 1 breaks
// 16-byte alignment and forces the scalar path).
struct DeviceState {
  DeviceState(const State& s, size_t offset)
      : param(s.param, offset), grad(s.grad, offset), m(s.m, offset), v(s.v, offset), decay(s.decay, offset),
        working(s.param.size(), offset) {}
  ref::AdamWArgs args(const ref::AdamWArgs& hyper, bool with_decay) const {
    ref::AdamWArgs a = hyper;
    a.param = param.get();
    a.grad = grad.get();
    a.m = m.get();
    a.v = v.get();
    a.decay = with_decay ? decay.get() : nullptr;
    return a;
  }
  DeviceBuffer<float> param, grad, m, v;
  DeviceBuffer<uint8_t> decay;
  DeviceBuffer<bf16> working;
};

ref::AdamWArgs hyper(int64_t n, int64_t step, float grad_scale, float lr = 1e-2f) {
  ref::AdamWArgs a{};
  a.n = n;
  a.lr = lr;
  a.beta1 = 0.9f;
  a.beta2 = 0.95f;
  a.eps = 1e-8f;
  a.weight_decay = 0.1f;
  a.grad_scale = grad_scale;
  a.step = step;
  return a;
}

struct Case {
  int64_t n;
  size_t offset;
  bool decay;
  int64_t step;
  float grad_scale;
  int sms = 0;  // emulated SM count (0: LOOM_SIMT_SM_COUNT, default 4)
};

TEST(AdamW, MatchesReference) {
  std::vector<Case> cases = {
      {4099, 0, true, 3, 0.5f},   // vector path, 3-element tail, decay mask, clipped gradients
      {1001, 1, false, 1, 1.0f},  // scalar path, decay everywhere, first step
      {7, 0, true, 10, 2.0f},     // shorter than a grid: most threads idle
  };
  // Past one grid sweep (4 emulated SMs x 8 blocks x 256 threads, 4 elements a thread on the
  // vector path, one on the scalar path): the grid-stride loops run two and three times; the
  // sanitizer builds do the same on one SM (a sweep of 2048 threads).
  if (LOOM_SANITIZED)
    cases.insert(cases.end(), {{9001, 0, true, 2, 0.75f, 1}, {5003, 1, true, 5, 1.0f, 1}});
  else
    cases.insert(cases.end(), {{40003, 0, true, 2, 0.75f}, {20001, 1, true, 5, 1.0f}});
  uint32_t seed = 1;
  for (const Case& c : cases) {
    SCOPED_TRACE("n=" + std::to_string(c.n) + " offset=" + std::to_string(c.offset) +
                 (c.decay ? " decay mask" : " no mask") + " step=" + std::to_string(c.step) +
                 (c.sms ? " on one SM" : ""));
    EmulatedSms sms(c.sms);
    const State s = random_state(size_t(c.n), seed++);
    DeviceState d(s, c.offset);
    d.working.poison();
    const ref::AdamWArgs h = hyper(c.n, c.step, c.grad_scale);
    cuda::adamw(d.args(h, c.decay), d.working.get(), 1234 + seed, nullptr);

    State r = s;
    ref::AdamWArgs ra = h;
    ra.param = r.param.data();
    ra.grad = r.grad.data();
    ra.m = r.m.data();
    ra.v = r.v.data();
    ra.decay = c.decay ? r.decay.data() : nullptr;
    ref::adamw_step(ra);

    const auto param = d.param.download();
    const auto working = d.working.download();
    EXPECT_TRUE(all_close("param", param, to_double(r.param), kF32Step));
    EXPECT_TRUE(all_close("m", d.m.download(), to_double(r.m), kF32Step));
    EXPECT_TRUE(all_close("v", d.v.download(), to_double(r.v), kF32Step));
    int64_t not_neighbour = -1;
    for (int64_t i = 0; i < c.n; ++i) {
      // The working copy against the kernel's own f32 weight: exactly a bf16 neighbour.
      const uint16_t lo = bf16_down(param[size_t(i)]);
      const bool exact = (bits_of(param[size_t(i)]) & 0xffffu) == 0;
      const uint16_t got = working[size_t(i)].bits;
      if (not_neighbour < 0 && !(got == lo || (!exact && got == uint16_t(lo + 1)))) not_neighbour = i;
    }
    EXPECT_LT(not_neighbour, 0) << "working[" << not_neighbour << "] = 0x" << std::hex
                                << working[size_t(std::max<int64_t>(not_neighbour, 0))].bits
                                << " is not a bf16 neighbour of param = "
                                << param[size_t(std::max<int64_t>(not_neighbour, 0))];
  }
}

// Weights a quarter of a bf16 ulp above a bf16 value (in magnitude): round-to-nearest always
// rounds them down, a bias of -1/4 ulp; stochastic rounding rounds up one time in four and
// its mean error is 0. lr = 0 keeps the weights exactly as crafted.
TEST(AdamW, StochasticRoundingIsUnbiased) {
  const int64_t n = LOOM_SANITIZED ? 4096 : 16384;
  std::mt19937 rng(5);
  State s = random_state(size_t(n), 6);
  for (auto& p : s.param) {
    const uint32_t magnitude = 0x3c00u + rng() % 0x0600u;  // bf16 bits of |x| in [2^-7, 2^5)
    const uint32_t sign = (rng() & 1u) << 15;
    p = float_of((sign | magnitude) << 16 | 0x4000u);
  }
  DeviceState d(s, 0);
  d.working.poison();
  cuda::adamw(d.args(hyper(n, 1, 1.f, 0.f), true), d.working.get(), 77, nullptr);
  const auto param = d.param.download();
  const auto working = d.working.download();

  // The same weights through the round-to-nearest kernel: the biased baseline.
  DeviceBuffer<float> src(s.param);
  DeviceBuffer<bf16> rne{size_t(n)};
  rne.poison();
  cuda::cast_to_bf16(src.get(), rne.get(), n, nullptr);
  const auto nearest = rne.download();

  // Errors in magnitude, in units of the bf16 ulp at the weight, so signs do not cancel.
  double sr_err = 0, rne_err = 0;
  int64_t up = 0;
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(param[size_t(i)], s.param[size_t(i)]) << "lr = 0 must leave weight " << i << " unchanged";
    const float x = std::fabs(s.param[size_t(i)]);
    const float lo = std::fabs(from_bf16(bf16{bf16_down(x)}));
    const float ulp = std::fabs(from_bf16(bf16{uint16_t(bf16_down(x) + 1)})) - lo;
    const float got = std::fabs(from_bf16(working[size_t(i)]));
    ASSERT_TRUE(got == lo || got == lo + ulp) << "element " << i << ": " << got << " is not a neighbour of " << x;
    up += got != lo;
    sr_err += (got - x) / ulp;
    rne_err += (std::fabs(from_bf16(nearest[size_t(i)])) - x) / ulp;
  }
  sr_err /= double(n);
  rne_err /= double(n);
  // Per element the error is +3/4 w.p. 1/4 and -1/4 w.p. 3/4 (variance 3/16): the mean's
  // standard deviation is 0.43 / sqrt(n), at most 0.007 ulp here; 0.04 is > 5 sigma.
  std::printf("[ rounding ] mean error in ulps: stochastic %+.4f, nearest %+.4f; rounded up %.3f\n", sr_err, rne_err,
              double(up) / double(n));
  EXPECT_NEAR(rne_err, -0.25, 1e-6) << "the crafted input must bias round-to-nearest";
  EXPECT_LT(std::fabs(sr_err), 0.04) << "stochastic rounding is biased";
  EXPECT_NEAR(double(up) / double(n), 0.25, 0.04);
}

// The same seed gives the same bits, whichever path (vector or scalar) ran; another seed
// gives other bits. With weights at random positions between neighbours, two seeds disagree
// on an element with probability E[2f(1-f)] = 1/3.
TEST(AdamW, SameSeedSameBits) {
  const int64_t n = LOOM_SANITIZED ? 1027 : 4099;
  const State s = random_state(size_t(n), 11);
  const ref::AdamWArgs h = hyper(n, 4, 0.9f);
  auto run = [&](size_t offset, uint64_t seed) {
    DeviceState d(s, offset);
    d.working.poison();
    cuda::adamw(d.args(h, true), d.working.get(), seed, nullptr);
    std::vector<uint16_t> bits;
    for (const bf16 b : d.working.download()) bits.push_back(b.bits);
    return std::make_pair(bits, d.param.download());
  };
  const auto a = run(0, 42), b = run(0, 42), c = run(1, 42), other = run(0, 43);
  EXPECT_TRUE(a.first == b.first) << "same seed, same path: different bits";
  EXPECT_TRUE(a.second == b.second) << "same inputs: different weights";
  EXPECT_TRUE(a.first == c.first) << "same seed, vector vs scalar path: different bits";
  int64_t differ = 0;
  for (int64_t i = 0; i < n; ++i) differ += a.first[size_t(i)] != other.first[size_t(i)];
  EXPECT_GT(differ, n / 5) << "another seed should change about a third of the roundings";
}

TEST(GlobalNorm, CloseToDoubleAndDeterministic) {
  // (n, offset): offset 1 takes the scalar path, odd n the vector path's tail. Each launch
  // costs ~30 ms emulated and ~0.35 s under TSan, so the sanitizers run three cases. More
  // than 256 partial sums (a block per 4096 elements), which the final kernel's threads add
  // several each, take 257 blocks: about 10 s emulated, so that case is the GPU's.
  std::vector<std::pair<int64_t, size_t>> cases = {{7, 1}, {4099, 0}, {9001, 1}};
  if (!LOOM_SANITIZED) cases.insert(cases.end(), {{1, 0}, {4099, 1}, {20000, 1}, {70001, 0}});
  if (!LOOM_SIMT_EMULATION) cases.push_back({1100003, 0});
  uint32_t seed = 20;
  for (const auto& [n, offset] : cases) {
    SCOPED_TRACE("n=" + std::to_string(n) + " offset=" + std::to_string(offset));
    std::mt19937 rng(seed++);
    const std::vector<float> g = random_f32(size_t(n), rng, 0.f, 3.f);
    DeviceBuffer<float> dg(g, offset), scratch(cuda::global_norm_scratch_floats(n)), out(1);
    std::vector<float> result[2];
    for (auto& r : result) {
      scratch.poison();
      out.poison();
      cuda::global_norm_sq(dg.get(), n, scratch.get(), out.get(), nullptr);
      r = out.download();
    }
    EXPECT_EQ(bits_of(result[0][0]), bits_of(result[1][0])) << "two runs differ";
    const double ref = ref::grad_norm(g.data(), n);
    // f32 partial sums of squares: a few ulps, far below 1e-5.
    EXPECT_TRUE(all_close("norm^2", result[0], std::vector<double>{ref * ref}, Tolerance{0, 1e-5}));
  }
}

// to_bf16 bit for bit: specials, ties both ways, subnormals, NaN payloads, and random bit
// patterns over the whole float range.
TEST(CastToBf16, BitIdenticalToHost) {
  std::vector<uint32_t> special = {
      0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u,  // zeros, infinities
      0x7fc00000u, 0xffc00001u, 0x7f800001u, 0x7fff8000u,  // NaNs (signalling, payloads)
      0x00000001u, 0x807fffffu, 0x00008000u, 0x00018000u,  // subnormals, ties at the bottom
      0x3f808000u, 0x3f818000u, 0x3f807fffu, 0x3f808001u,  // ties to even down / up, near ties
      0x7f7fffffu, 0x7f7f8000u, 0xff7f8000u, 0x7f7f7fffu,  // overflow to infinity and not
  };
  // The vector path plus a 5-element tail. On one emulated SM (a wave of 2048 threads) the
  // plain emulator's 20005 elements take both paths' grid-stride loops round several times.
  const int64_t n = LOOM_SANITIZED ? 2053 : 20005;
  EmulatedSms sms(1);
  std::mt19937 rng(31);
  for (const size_t offset : {size_t{0}, size_t{1}}) {
    SCOPED_TRACE("offset=" + std::to_string(offset));
    std::vector<float> x(static_cast<size_t>(n));
    for (size_t i = 0; i < x.size(); ++i) x[i] = float_of(i < special.size() ? special[i] : uint32_t(rng()));
    DeviceBuffer<float> src(x, offset);
    DeviceBuffer<bf16> dst(x.size(), offset);
    dst.poison();
    cuda::cast_to_bf16(src.get(), dst.get(), n, nullptr);
    const auto got = dst.download();
    int64_t bad = 0, first_bad = -1;
    for (int64_t i = 0; i < n; ++i) {
      if (got[size_t(i)].bits != to_bf16(x[size_t(i)]).bits) {
        if (first_bad < 0) first_bad = i;
        ++bad;
      }
    }
    const size_t f = size_t(std::max<int64_t>(first_bad, 0));
    EXPECT_EQ(bad, 0) << "first mismatch at " << first_bad << ": input 0x" << std::hex << bits_of(x[f]) << " got 0x"
                      << got[f].bits << " want 0x" << to_bf16(x[f]).bits;
  }
}

}  // namespace
}  // namespace loom
