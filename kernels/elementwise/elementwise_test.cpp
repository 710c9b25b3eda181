// elementwise_test.cpp: the CUDA add (elementwise.cu) against the CPU reference
// (loom::ref::add, run in double on the same bf16-rounded inputs). One source for the
// emulator, TSan, ASan and real-GPU builds (cmake/LoomKernel.cmake). Sizes cover the 16-byte
// pack path with and without a scalar tail, the scalar path (a misaligned pointer), a
// grid-stride loop that goes round more than once on the emulator's 4-SM device, and y
// aliasing a or b. Outputs are NaN-poisoned; inputs are random and never zero.
#include "kernels/common/cuda_compat.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "kernels/elementwise/elementwise.h"

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

// bf16 output: the f32 sum of two bf16 values is exact here, so one rounding (2^-9 relative)
// is all the error there is; the atol covers sums that cancel to nearly zero.
constexpr double kAtol = 1e-4, kRtol = 4e-3;

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

enum class Alias { kNone, kA, kB };

struct Case {
  int64_t n;
  int misalign;  // elements of offset on every pointer: forces the scalar path
  Alias alias;
};

std::vector<Case> cases() {
  std::vector<Case> v = {{4096, 0, Alias::kNone}, {1003, 0, Alias::kNone}, {517, 1, Alias::kNone},
                         {5, 0, Alias::kNone},    {70001, 0, Alias::kNone}, {1003, 0, Alias::kA},
                         {515, 1, Alias::kB}};
  if (LOOM_SANITIZED)
    v = {{2048, 0, Alias::kNone}, {1003, 0, Alias::kNone}, {517, 1, Alias::kNone}, {1003, 0, Alias::kA}};
  if (!LOOM_SIMT_EMULATION) v.push_back({int64_t(8) * 1024 * 768 + 3, 0, Alias::kB});
  return v;
}

TEST(Add, MatchesReference) {
  for (const Case& c : cases()) {
    SCOPED_TRACE("n=" + std::to_string(c.n) + (c.misalign ? " misaligned" : "") +
                 (c.alias == Alias::kA ? " y=a" : c.alias == Alias::kB ? " y=b" : ""));
    std::mt19937 rng(uint32_t(c.n) * 3 + uint32_t(c.alias));
    const auto a = random_bf16(c.n, rng, 1.f), b = random_bf16(c.n, rng, 2.f);
    DeviceBuffer<bf16> da(a, c.misalign), db(b, c.misalign), dy(c.n, c.misalign);
    dy.poison();
    bf16* y = c.alias == Alias::kA ? da.get() : c.alias == Alias::kB ? db.get() : dy.get();
    loom::cuda::add(da.get(), db.get(), y, c.n, nullptr);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    const auto ad = to_double(a), bd = to_double(b);
    std::vector<double> ref(c.n);
    loom::ref::add(ad.data(), bd.data(), ref.data(), c.n);
    const DeviceBuffer<bf16>& out = c.alias == Alias::kA ? da : c.alias == Alias::kB ? db : dy;
    EXPECT_TRUE(all_close("y", to_double(out.download()), ref));
  }
}

TEST(Scale, MatchesReference) {
  for (const Case& c : cases()) {
    SCOPED_TRACE("n=" + std::to_string(c.n) + (c.misalign ? " misaligned" : ""));
    std::mt19937 rng(uint32_t(c.n) * 5 + 1);
    const auto a = random_bf16(c.n, rng, 1.f);
    DeviceBuffer<bf16> da(a, c.misalign), dy(c.n, c.misalign);
    dy.poison();
    loom::cuda::scale(da.get(), 0.37f, dy.get(), c.n, nullptr);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    const auto ad = to_double(a);
    std::vector<double> ref(c.n);
    loom::ref::scale(ad.data(), 0.37, ref.data(), c.n);
    EXPECT_TRUE(all_close("y", to_double(dy.download()), ref));
  }
}

// Widening is exact: every bf16 is a float.
TEST(WidenBf16, Exact) {
  for (int64_t n : {int64_t(1), int64_t(517), int64_t(4099)}) {
    std::mt19937 rng{uint32_t(n)};
    const auto a = random_bf16(n, rng, 3.f);
    DeviceBuffer<bf16> da(a);
    DeviceBuffer<float> dy(n);
    dy.poison();
    loom::cuda::widen_bf16(da.get(), dy.get(), n, nullptr);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    const auto got = dy.download();
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[i], loom::from_bf16(a[i])) << "element " << i << " of " << n;
  }
}

TEST(Add, EmptyIsNoOp) {
  loom::cuda::add(nullptr, nullptr, nullptr, 0, nullptr);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

}  // namespace
