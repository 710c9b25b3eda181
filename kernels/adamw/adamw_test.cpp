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

#define ASSERT_CUDA(expr)                                                                 \
  do {                                                                                    \
    const cudaError_t e_ = (expr);                                                        \
    ASSERT_EQ(e_, cudaSuccess) << #expr << ": " << cudaGetErrorString(e_);               \
  } while (0)

// Device memory for one test, copied in and out whole.
template <class T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n) : n_(n) {
    if (cudaMalloc(&p_, std::max<size_t>(n, 1) * sizeof(T)) != cudaSuccess) p_ = nullptr;
  }
  explicit DeviceBuffer(const std::vector<T>& h) : DeviceBuffer(h.size()) { upload(h); }
  ~DeviceBuffer() { cudaFree(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  T* get() const { return p_; }
  void upload(const std::vector<T>& h) { cudaMemcpy(p_, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice); }
  // 0xFF bytes: NaN in f32 and bf16, so an element the kernel forgot reads as wrong.
  void poison() { cudaMemset(p_, 0xFF, n_ * sizeof(T)); }
  std::vector<T> download() const {
    std::vector<T> h(n_);
    cudaDeviceSynchronize();
    cudaMemcpy(h.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost);
    return h;
  }

 private:
  T* p_ = nullptr;
  size_t n_;
};

// The worst element under |got - ref| <= atol + rtol |ref| (DESIGN.md §6); NaN never passes.
struct Worst {
  double ratio = 0, got = 0, ref = 0;
  int64_t index = -1;
  void add(int64_t i, double g, double r, double atol, double rtol) {
    const double q = std::isnan(g) || std::isnan(r) ? INFINITY : std::fabs(g - r) / (atol + rtol * std::fabs(r));
    if (index < 0 || q > ratio || std::isnan(q)) {
      ratio = q;
      index = i;
      got = g;
      ref = r;
    }
  }
  std::string str() const {
    char b[160];
    std::snprintf(b, sizeof b, "worst element %lld: got %.9g ref %.9g (%.3g x tolerance)", static_cast<long long>(index),
                  got, ref, ratio);
    return b;
  }
  // Printed for passing checks too, so the logs show each margin.
  bool ok(const char* what) const {
    std::printf("[ worst    ] %s: %s\n", what, str().c_str());
    return index >= 0 && ratio <= 1.0;
  }
};

// f32 AdamW: the kernel repeats the reference's arithmetic term for term; only FMA
// contraction (nvcc) separates them, a few ulps of the weight.
constexpr double kF32Atol = 1e-7, kF32Rtol = 2e-6;

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

// Never zero: a draw that rounds to 0 is replaced.
float nonzero(float x) { return x == 0.f ? 0.125f : x; }

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
      : off(offset), param(pad(s.param)), grad(pad(s.grad)), m(pad(s.m)), v(pad(s.v)), decay(pad(s.decay)),
        working(offset + s.param.size()) {}
  template <class T>
  std::vector<T> pad(const std::vector<T>& h) const {
    std::vector<T> r(off, h.empty() ? T{} : h[0]);
    r.insert(r.end(), h.begin(), h.end());
    return r;
  }
  template <class T>
  std::vector<T> unpad(const std::vector<T>& h) const {
    return std::vector<T>(h.begin() + ptrdiff_t(off), h.end());
  }
  ref::AdamWArgs args(const ref::AdamWArgs& hyper, bool with_decay) const {
    ref::AdamWArgs a = hyper;
    a.param = param.get() + off;
    a.grad = grad.get() + off;
    a.m = m.get() + off;
    a.v = v.get() + off;
    a.decay = with_decay ? decay.get() + off : nullptr;
    return a;
  }
  size_t off;
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
};

TEST(AdamW, MatchesReference) {
  std::vector<Case> cases = {
      {4099, 0, true, 3, 0.5f},   // vector path, 3-element tail, decay mask, clipped gradients
      {1001, 1, false, 1, 1.0f},  // scalar path, decay everywhere, first step
      {7, 0, true, 10, 2.0f},     // shorter than a grid: most threads idle
  };
  // Past one grid sweep (4 emulated SMs x 8 blocks x 256 threads x 4 elements): the
  // grid-stride loop runs twice.
  if (!LOOM_SANITIZED) cases.push_back({40003, 0, true, 2, 0.75f});
  uint32_t seed = 1;
  for (const Case& c : cases) {
    SCOPED_TRACE("n=" + std::to_string(c.n) + " offset=" + std::to_string(c.offset) +
                 (c.decay ? " decay mask" : " no mask") + " step=" + std::to_string(c.step));
    const State s = random_state(size_t(c.n), seed++);
    DeviceState d(s, c.offset);
    d.working.poison();
    const ref::AdamWArgs h = hyper(c.n, c.step, c.grad_scale);
    cuda::adamw(d.args(h, c.decay), d.working.get() + c.offset, 1234 + seed, nullptr);
    ASSERT_CUDA(cudaDeviceSynchronize());

    State r = s;
    ref::AdamWArgs ra = h;
    ra.param = r.param.data();
    ra.grad = r.grad.data();
    ra.m = r.m.data();
    ra.v = r.v.data();
    ra.decay = c.decay ? r.decay.data() : nullptr;
    ref::adamw_step(ra);

    const auto param = d.unpad(d.param.download()), m = d.unpad(d.m.download()), v = d.unpad(d.v.download());
    const auto working = d.unpad(d.working.download());
    Worst wp, wm, wv;
    int64_t not_neighbour = -1;
    for (int64_t i = 0; i < c.n; ++i) {
      wp.add(i, param[size_t(i)], r.param[size_t(i)], kF32Atol, kF32Rtol);
      wm.add(i, m[size_t(i)], r.m[size_t(i)], kF32Atol, kF32Rtol);
      wv.add(i, v[size_t(i)], r.v[size_t(i)], kF32Atol, kF32Rtol);
      // The working copy against the kernel's own f32 weight: exactly a bf16 neighbour.
      const uint16_t lo = bf16_down(param[size_t(i)]);
      const bool exact = (bits_of(param[size_t(i)]) & 0xffffu) == 0;
      const uint16_t got = working[size_t(i)].bits;
      if (not_neighbour < 0 && !(got == lo || (!exact && got == uint16_t(lo + 1)))) not_neighbour = i;
    }
    EXPECT_TRUE(wp.ok("param")) << "param: " << wp.str();
    EXPECT_TRUE(wm.ok("m")) << "m: " << wm.str();
    EXPECT_TRUE(wv.ok("v")) << "v: " << wv.str();
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
  ASSERT_CUDA(cudaDeviceSynchronize());
  const auto param = d.unpad(d.param.download());
  const auto working = d.unpad(d.working.download());

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
    cuda::adamw(d.args(h, true), d.working.get() + offset, seed, nullptr);
    std::vector<uint16_t> bits;
    for (const bf16 b : d.unpad(d.working.download())) bits.push_back(b.bits);
    return std::make_pair(bits, d.unpad(d.param.download()));
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
  // costs ~30 ms emulated and ~0.35 s under TSan, so the sanitizers run three cases.
  std::vector<std::pair<int64_t, size_t>> cases = {{7, 1}, {4099, 0}, {9001, 1}};
  if (!LOOM_SANITIZED) cases.insert(cases.end(), {{1, 0}, {4099, 1}, {20000, 1}, {70001, 0}});
  uint32_t seed = 20;
  for (const auto& [n, offset] : cases) {
    SCOPED_TRACE("n=" + std::to_string(n) + " offset=" + std::to_string(offset));
    std::mt19937 rng(seed++);
    std::normal_distribution<float> nd(0.f, 3.f);
    std::vector<float> g(offset + size_t(n));
    for (auto& x : g) x = nonzero(nd(rng));
    DeviceBuffer<float> dg(g), scratch(cuda::global_norm_scratch_floats(n)), out(1);
    uint32_t bits[2];
    for (int run = 0; run < 2; ++run) {
      scratch.poison();
      out.poison();
      cuda::global_norm_sq(dg.get() + offset, n, scratch.get(), out.get(), nullptr);
      bits[run] = bits_of(out.download()[0]);
    }
    EXPECT_EQ(bits[0], bits[1]) << "two runs differ";
    const double ref = ref::grad_norm(g.data() + offset, n);
    Worst w;
    // f32 partial sums of squares: a few ulps, far below 1e-5.
    w.add(0, float_of(bits[0]), ref * ref, 0.0, 1e-5);
    EXPECT_TRUE(w.ok("norm^2")) << w.str();
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
  const int64_t n = LOOM_SANITIZED ? 2053 : 8197;  // vector path plus a 5-element tail
  std::mt19937 rng(31);
  for (const size_t offset : {size_t{0}, size_t{1}}) {
    SCOPED_TRACE("offset=" + std::to_string(offset));
    std::vector<float> x(offset + size_t(n));
    for (size_t i = 0; i < x.size(); ++i) {
      const size_t k = i - offset;
      x[i] = float_of(i >= offset && k < special.size() ? special[k] : uint32_t(rng()));
    }
    DeviceBuffer<float> src(x);
    DeviceBuffer<bf16> dst(x.size());
    dst.poison();
    cuda::cast_to_bf16(src.get() + offset, dst.get() + offset, n, nullptr);
    const auto got = dst.download();
    int64_t bad = 0, first_bad = -1;
    for (int64_t i = 0; i < n; ++i) {
      const size_t j = offset + size_t(i);
      if (got[j].bits != to_bf16(x[j]).bits) {
        if (first_bad < 0) first_bad = i;
        ++bad;
      }
    }
    EXPECT_EQ(bad, 0) << "first mismatch at " << first_bad << ": input 0x" << std::hex
                      << bits_of(x[offset + size_t(std::max<int64_t>(first_bad, 0))]) << " got 0x"
                      << got[offset + size_t(std::max<int64_t>(first_bad, 0))].bits << " want 0x"
                      << to_bf16(x[offset + size_t(std::max<int64_t>(first_bad, 0))]).bits;
  }
}

}  // namespace
}  // namespace loom
