// test_util.h: what every kernel test shares, in all its builds (emu, tsan, asan and gpu: the
// runtime API below is the emulator's or the real one, cuda_compat.h decides). Written once
// so that every test allocates, poisons, draws inputs and compares the same way (DESIGN.md §6):
//  - ASSERT_CUDA(expr) / EXPECT_CUDA(expr): a runtime call that must return cudaSuccess; the
//    failure names the call and the CUDA error.
//  - DeviceBuffer<T>: device memory for one test, uploaded and downloaded whole. `offset`
//    elements of slack in front make get() a pointer that is not 16-byte aligned (the scalar
//    paths); poison() fills it with 0xFF bytes (NaN as f32 and bf16, -1 as int), so an output
//    element a kernel forgot to write fails the comparison.
//  - random_bf16 / random_f32 / random_f64: normal inputs that are never zero (a draw within
//    1e-3 of zero is pushed out to +-1e-3), so a kernel that drops a term cannot hide behind
//    zeros; to_double() of bf16 and f32 vectors for the double-precision references.
//  - all_close(what, got, ref, tol): THE comparison, max |got - ref| <= atol + rtol |ref|
//    element by element; NaN or inf in got (or ref) never passes. The message names the worst
//    element (index, got, ref, how many times its tolerance), and how many are NaN or out of
//    tolerance; passing checks print their worst element too, so logs show each margin.
//    Tolerances are stated per dtype: kF32Tol and kBf16Tol below for outputs whose error is
//    one rounding of a short computation, or a test's own Tolerance, named after its dtype,
//    beside the reason. A per-element atol (sums whose error scales with their terms) is the
//    other overload.
//  - EmulatedSms sms(n): under the emulator, a device of n SMs while it lives (the emulator
//    reads LOOM_SIMT_SM_COUNT, default 4, at every attribute query); n = 0 changes nothing.
//    Launchers size grids to one wave of blocks an SM, so with one SM a small shape - cheap
//    even under TSan - drives grid-stride loops round many times and gives blocks several
//    items, which is where a missing barrier between items shows. No effect on a GPU.
//  - same_bits(what, a, b): two runs' outputs agree bit for bit (deterministic kernels); the
//    message names the first element that differs.
//  - print_timing(what, t0): wall time of a launch, printed (the emulator's budget), never
//    asserted.
#pragma once
#include "kernels/common/cuda_compat.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/dtype.h"

#define ASSERT_CUDA(expr)                                                                          \
  do {                                                                                             \
    const cudaError_t loom_test_err_ = (expr);                                                     \
    ASSERT_EQ(loom_test_err_, cudaSuccess) << #expr << ": " << cudaGetErrorString(loom_test_err_); \
  } while (0)
#define EXPECT_CUDA(expr)                                                                          \
  do {                                                                                             \
    const cudaError_t loom_test_err_ = (expr);                                                     \
    EXPECT_EQ(loom_test_err_, cudaSuccess) << #expr << ": " << cudaGetErrorString(loom_test_err_); \
  } while (0)

namespace loom::test {

template <class T>
class DeviceBuffer {
 public:
  // At least one element is allocated: cudaMalloc of 0 bytes gives a null pointer, which
  // launchers take for an absent operand.
  explicit DeviceBuffer(size_t n, size_t offset = 0) : n_(n), offset_(offset) {
    EXPECT_CUDA(cudaMalloc(&base_, std::max<size_t>(n + offset, 1) * sizeof(T)));
  }
  explicit DeviceBuffer(const std::vector<T>& h, size_t offset = 0) : DeviceBuffer(h.size(), offset) { upload(h); }
  ~DeviceBuffer() { cudaFree(base_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() const { return base_ ? base_ + offset_ : nullptr; }
  size_t size() const { return n_; }
  void upload(const std::vector<T>& h) {
    ASSERT_EQ(h.size(), n_) << "upload of " << h.size() << " elements into a buffer of " << n_;
    EXPECT_CUDA(cudaMemcpy(get(), h.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  void poison() { EXPECT_CUDA(cudaMemset(get(), 0xFF, n_ * sizeof(T))); }
  std::vector<T> download() const {
    std::vector<T> h(n_);
    EXPECT_CUDA(cudaDeviceSynchronize());
    EXPECT_CUDA(cudaMemcpy(h.data(), get(), n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }

 private:
  T* base_ = nullptr;
  size_t n_, offset_;
};

// ---- inputs -----------------------------------------------------------------------------

template <class F>
F nonzero(F x) {
  return std::fabs(x) >= F(1e-3) ? x : x < 0 ? F(-1e-3) : F(1e-3);
}

inline std::vector<double> random_f64(size_t n, std::mt19937& rng, double mean, double sd) {
  std::normal_distribution<double> d(mean, sd);
  std::vector<double> v(n);
  for (auto& e : v) e = nonzero(d(rng));
  return v;
}
inline std::vector<float> random_f32(size_t n, std::mt19937& rng, float mean, float sd) {
  std::normal_distribution<float> d(mean, sd);
  std::vector<float> v(n);
  for (auto& e : v) e = nonzero(d(rng));
  return v;
}
// Rounded after the nudge: +-1e-3 is a normal bf16, never zero.
inline std::vector<bf16> random_bf16(size_t n, std::mt19937& rng, float mean, float sd) {
  std::normal_distribution<float> d(mean, sd);
  std::vector<bf16> v(n);
  for (auto& e : v) e = to_bf16(nonzero(d(rng)));
  return v;
}

inline double as_double(double v) { return v; }
inline double as_double(float v) { return v; }
inline double as_double(bf16 v) { return from_bf16(v); }

template <class T>
std::vector<double> to_double(const std::vector<T>& v) {
  std::vector<double> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = as_double(v[i]);
  return r;
}

// ---- the comparison -----------------------------------------------------------------------

struct Tolerance {
  double atol, rtol;
};

// f32 outputs of a short f32 computation (a few roundings of 2^-24, library exp/log) against
// a double reference.
inline constexpr Tolerance kF32Tol{1e-5, 1e-5};
// bf16 outputs of f32 arithmetic: one rounding of the output is 2^-9 relative; rtol 2^-7
// leaves room for the f32 error before it, atol for results that cancel to near zero.
inline constexpr Tolerance kBf16Tol{1e-3, 1.0 / 128};

namespace detail {

template <class G, class Atol>
::testing::AssertionResult close(const std::string& what, const std::vector<G>& got, const std::vector<double>& ref,
                                 Atol atol_of, double rtol) {
  if (got.size() != ref.size())
    return ::testing::AssertionFailure() << what << ": " << got.size() << " elements, reference has " << ref.size();
  size_t worst = 0, nonfinite = 0, bad = 0;
  double worst_ratio = -1;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = as_double(got[i]), err = std::fabs(g - ref[i]);
    // NaN and inf fail whatever the tolerance (a poisoned element the kernel never wrote).
    const bool finite = std::isfinite(g) && std::isfinite(ref[i]);
    const double ratio = !finite ? INFINITY : err == 0 ? 0.0 : err / (atol_of(i) + rtol * std::fabs(ref[i]));
    nonfinite += !finite;
    bad += !(ratio <= 1);
    if (ratio > worst_ratio) worst_ratio = ratio, worst = i;
  }
  std::ostringstream os;
  os.precision(9);
  if (got.empty()) {
    os << what << ": no elements";
  } else {
    os << what << ": worst element " << worst << " got " << as_double(got[worst]) << " ref " << ref[worst] << " ("
       << worst_ratio << " x its tolerance " << atol_of(worst) << " + " << rtol << " |ref|); " << nonfinite
       << " NaN/inf, " << bad << " out of tolerance, of " << got.size();
  }
  std::printf("[ worst    ] %s\n", os.str().c_str());
  if (bad) return ::testing::AssertionFailure() << os.str();
  return ::testing::AssertionSuccess() << os.str();
}

}  // namespace detail

template <class G>
::testing::AssertionResult all_close(const std::string& what, const std::vector<G>& got, const std::vector<double>& ref,
                                     Tolerance tol) {
  return detail::close(what, got, ref, [&](size_t) { return tol.atol; }, tol.rtol);
}

// atol[i] per element: for sums, whose rounding error scales with the sum of |terms|.
template <class G>
::testing::AssertionResult all_close(const std::string& what, const std::vector<G>& got, const std::vector<double>& ref,
                                     const std::vector<double>& atol, double rtol) {
  if (atol.size() != ref.size())
    return ::testing::AssertionFailure() << what << ": " << atol.size() << " tolerances for " << ref.size();
  return detail::close(what, got, ref, [&](size_t i) { return atol[i]; }, rtol);
}

template <class T>
::testing::AssertionResult same_bits(const std::string& what, const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << what << ": " << a.size() << " vs " << b.size();
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0)
      return ::testing::AssertionFailure() << what << ": element " << i << " differs: " << as_double(a[i]) << " vs "
                                           << as_double(b[i]);
  return ::testing::AssertionSuccess();
}

class EmulatedSms {
 public:
  explicit EmulatedSms(int sms) : active_(LOOM_SIMT_EMULATION && sms > 0) {
    if (!active_) return;
    if (const char* v = std::getenv(kVar)) saved_ = v;
    setenv(kVar, std::to_string(sms).c_str(), 1);
  }
  ~EmulatedSms() {
    if (!active_) return;
    if (saved_)
      setenv(kVar, saved_->c_str(), 1);
    else
      unsetenv(kVar);
  }
  EmulatedSms(const EmulatedSms&) = delete;
  EmulatedSms& operator=(const EmulatedSms&) = delete;

 private:
  static constexpr const char* kVar = "LOOM_SIMT_SM_COUNT";
  bool active_;
  std::optional<std::string> saved_;
};

inline void print_timing(const std::string& what, std::chrono::steady_clock::time_point t0) {
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ timing   ] %s: %.1f ms\n", what.c_str(), ms);
}

}  // namespace loom::test
