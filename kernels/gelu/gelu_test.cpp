// gelu_test.cpp: the CUDA GELU (gelu.cu) against the CPU reference (loom::ref::gelu_fwd/bwd,
// run in double on the same bf16-rounded inputs). One source for the emulator, TSan, ASan and
// real-GPU builds (cmake/LoomKernel.cmake). Sizes cover the 16-byte pack path with and
// without a scalar tail, the scalar path (a misaligned pointer), and, on the emulator's
// 4-SM device, a grid-stride loop that goes round more than once. Outputs are NaN-poisoned;
// inputs are random, never zero, and reach GELU's saturated tails.
#include "kernels/common/cuda_compat.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "kernels/gelu/gelu.h"

namespace {

using loom::bf16;

// Device memory; `offset` elements of slack in front give a pointer that is not 16-byte
// aligned.
template <class T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n, size_t offset = 0) : n_(n), off_(offset) {
    if (cudaMalloc(&base_, (n + offset) * sizeof(T)) != cudaSuccess) base_ = nullptr;
  }
  DeviceBuffer(const std::vector<T>& h, size_t offset = 0) : DeviceBuffer(h.size(), offset) {
    cudaMemcpy(get(), h.data(), n_ * sizeof(T), cudaMemcpyHostToDevice);
  }
  ~DeviceBuffer() { cudaFree(base_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  T* get() const { return base_ ? base_ + off_ : nullptr; }
  void poison() { cudaMemset(get(), 0xFF, n_ * sizeof(T)); }  // NaN in bf16
  std::vector<T> download() const {
    std::vector<T> h(n_);
    cudaDeviceSynchronize();
    cudaMemcpy(h.data(), get(), n_ * sizeof(T), cudaMemcpyDeviceToHost);
    return h;
  }

 private:
  T* base_ = nullptr;
  size_t n_, off_;
};

std::vector<bf16> random_bf16(size_t n, std::mt19937& rng, float sd) {
  std::normal_distribution<float> d(0.f, sd);
  std::vector<bf16> v(n);
  for (auto& e : v) {
    float f = d(rng);
    if (std::fabs(f) < 1e-3f) f = f < 0 ? -1e-3f : 1e-3f;
    e = loom::to_bf16(f);
  }
  return v;
}

std::vector<double> to_double(const std::vector<bf16>& v) {
  std::vector<double> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = loom::from_bf16(v[i]);
  return r;
}

// bf16 outputs: one rounding (2^-9 relative) after f32 math; the atol covers results that
// are tiny next to their inputs (GELU of a large negative x).
constexpr double kAtol = 1e-3, kRtol = 1e-2;

::testing::AssertionResult all_close(const std::string& what, const std::vector<double>& got,
                                     const std::vector<double>& ref) {
  size_t worst = 0, nans = 0, bad = 0;
  double worst_ratio = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) {
      if (nans++ == 0) worst = i;
      worst_ratio = INFINITY;
      continue;
    }
    const double ratio = std::fabs(got[i] - ref[i]) / (kAtol + kRtol * std::fabs(ref[i]));
    bad += ratio > 1;
    if (ratio > worst_ratio) worst_ratio = ratio, worst = i;
  }
  std::ostringstream os;
  os << what << ": worst element " << worst << " got " << got[worst] << " ref " << ref[worst] << " (error "
     << worst_ratio << "x tolerance); " << nans << " NaN/inf, " << bad << " out of tolerance, of " << got.size();
  if (nans || bad) return ::testing::AssertionFailure() << os.str();
  return ::testing::AssertionSuccess();
}

struct Case {
  int64_t n;
  int misalign;  // elements of offset on every pointer: forces the scalar path
};

std::vector<Case> cases() {
  std::vector<Case> v = {{4096, 0}, {1003, 0}, {517, 1}, {7, 0}, {70001, 0}};
  if (LOOM_SANITIZED) v = {{2048, 0}, {1003, 0}, {517, 1}, {7, 0}};
  if (!LOOM_SIMT_EMULATION) v.push_back({int64_t(8) * 1024 * 3072 + 5, 0});
  return v;
}

TEST(Gelu, ForwardMatchesReference) {
  for (const Case& c : cases()) {
    SCOPED_TRACE("n=" + std::to_string(c.n) + (c.misalign ? " misaligned" : ""));
    std::mt19937 rng(uint32_t(c.n));
    const auto x = random_bf16(c.n, rng, 3.f);
    DeviceBuffer<bf16> dx(x, c.misalign), dy(c.n, c.misalign);
    dy.poison();
    loom::cuda::gelu_fwd(dx.get(), dy.get(), c.n, nullptr);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    const auto xd = to_double(x);
    std::vector<double> ref(c.n);
    loom::ref::gelu_fwd(loom::ref::GeluArgs<double>{xd.data(), ref.data(), c.n});
    EXPECT_TRUE(all_close("y", to_double(dy.download()), ref));
  }
}

TEST(Gelu, BackwardMatchesReference) {
  for (const Case& c : cases()) {
    SCOPED_TRACE("n=" + std::to_string(c.n) + (c.misalign ? " misaligned" : ""));
    std::mt19937 rng(uint32_t(c.n) + 1);
    const auto x = random_bf16(c.n, rng, 3.f);
    const auto dy = random_bf16(c.n, rng, 1.f);
    DeviceBuffer<bf16> ddy(dy, c.misalign), dx_in(x, c.misalign), ddx(c.n, c.misalign);
    ddx.poison();
    cudaStream_t stream;
    ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
    loom::cuda::gelu_bwd(ddy.get(), dx_in.get(), ddx.get(), c.n, stream);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    ASSERT_EQ(cudaStreamDestroy(stream), cudaSuccess);
    const auto xd = to_double(x), dyd = to_double(dy);
    std::vector<double> ref(c.n);
    loom::ref::gelu_bwd(loom::ref::GeluBwdArgs<double>{dyd.data(), xd.data(), ref.data(), c.n});
    EXPECT_TRUE(all_close("dx", to_double(ddx.download()), ref));
  }
}

TEST(Tanh, ForwardMatchesReference) {
  for (const Case& c : cases()) {
    SCOPED_TRACE("n=" + std::to_string(c.n) + (c.misalign ? " misaligned" : ""));
    std::mt19937 rng(uint32_t(c.n) + 7);
    const auto x = random_bf16(c.n, rng, 2.f);
    DeviceBuffer<bf16> dx(x, c.misalign), dy(c.n, c.misalign);
    dy.poison();
    loom::cuda::tanh_fwd(dx.get(), dy.get(), c.n, nullptr);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    const auto xd = to_double(x);
    std::vector<double> ref(c.n);
    loom::ref::tanh_fwd(loom::ref::GeluArgs<double>{xd.data(), ref.data(), c.n});
    EXPECT_TRUE(all_close("y", to_double(dy.download()), ref));
  }
}

// Backward from the output y (in (-1, 1)): dx = dy (1 - y^2).
TEST(Tanh, BackwardMatchesReference) {
  for (const Case& c : cases()) {
    SCOPED_TRACE("n=" + std::to_string(c.n) + (c.misalign ? " misaligned" : ""));
    std::mt19937 rng(uint32_t(c.n) + 8);
    std::vector<bf16> y(c.n);
    std::uniform_real_distribution<float> u(-0.999f, 0.999f);
    for (auto& e : y) e = loom::to_bf16(u(rng));
    const auto dy = random_bf16(c.n, rng, 1.f);
    DeviceBuffer<bf16> ddy(dy, c.misalign), dyv(y, c.misalign), ddx(c.n, c.misalign);
    ddx.poison();
    loom::cuda::tanh_bwd(ddy.get(), dyv.get(), ddx.get(), c.n, nullptr);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    const auto yd = to_double(y), dyd = to_double(dy);
    std::vector<double> ref(c.n);
    loom::ref::tanh_bwd(loom::ref::GeluBwdArgs<double>{dyd.data(), yd.data(), ref.data(), c.n});
    EXPECT_TRUE(all_close("dx", to_double(ddx.download()), ref));
  }
}

// n = 0 is a no-op that must not launch (a zero-block grid is a launch error).
TEST(Gelu, EmptyIsNoOp) {
  loom::cuda::gelu_fwd(nullptr, nullptr, 0, nullptr);
  loom::cuda::gelu_bwd(nullptr, nullptr, nullptr, 0, nullptr);
  loom::cuda::tanh_fwd(nullptr, nullptr, 0, nullptr);
  loom::cuda::tanh_bwd(nullptr, nullptr, nullptr, 0, nullptr);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

}  // namespace
