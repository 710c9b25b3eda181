// elementwise_test.cpp: the CUDA add, scale and widening (elementwise.cu) against the CPU
// reference (loom::ref::add / scale, run in double on the same bf16-rounded inputs). One
// source for the emulator, TSan, ASan and real-GPU builds (cmake/LoomKernel.cmake). Sizes
// cover the 16-byte pack path with and without a scalar tail, the scalar path (a misaligned
// pointer), y aliasing a or b, and grid-stride loops that go round several times on both
// paths: on the emulator's 4-SM device (a wave of 32 blocks of 256 threads) in the plain
// build, on one SM (8 blocks) in the sanitizer builds. Outputs are NaN-poisoned; inputs are
// random and never zero.
#include "kernels/common/cuda_compat.h"
#include "kernels/common/test_util.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "kernels/elementwise/elementwise.h"

namespace {

using loom::bf16;
using namespace loom::test;

// bf16 output: the f32 sum of two bf16 values (or the f32 product) is exact or nearly, so one
// rounding (2^-9 relative) is all the error there is; the atol covers sums that cancel.
constexpr Tolerance kBf16Out{1e-4, 4e-3};

enum class Alias { kNone, kA, kB };

struct Case {
  int64_t n;
  int misalign;  // elements of offset on every pointer: forces the scalar path
  Alias alias;
  int sms = 0;   // emulated SM count (0: LOOM_SIMT_SM_COUNT, default 4)
};

std::string name(const Case& c) {
  return "n=" + std::to_string(c.n) + (c.misalign ? " misaligned" : "") +
         (c.alias == Alias::kA ? " y=a" : c.alias == Alias::kB ? " y=b" : "") +
         (c.sms ? " on " + std::to_string(c.sms) + " SM" : "");
}

std::vector<Case> cases() {
  if (LOOM_SANITIZED)  // one SM: 20003 elements are 2501 packs, two rounds; 5003 scalars, three
    return {{2048, 0, Alias::kNone}, {1003, 0, Alias::kNone},   {517, 1, Alias::kNone},
            {1003, 0, Alias::kA},    {20003, 0, Alias::kNone, 1}, {5003, 1, Alias::kNone, 1}};
  std::vector<Case> v = {
      {4096, 0, Alias::kNone},  {1003, 0, Alias::kNone}, {517, 1, Alias::kNone}, {5, 0, Alias::kNone},
      {70001, 0, Alias::kNone},  // vector: 8751 packs, two rounds of the 8192-thread wave, then a tail
      {20001, 3, Alias::kNone},  // scalar: three rounds
      {1003, 0, Alias::kA},     {515, 1, Alias::kB},
  };
  if (!LOOM_SIMT_EMULATION) v.push_back({int64_t(8) * 1024 * 768 + 3, 0, Alias::kB});
  return v;
}

TEST(Add, MatchesReference) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(name(c));
    EmulatedSms sms(c.sms);
    std::mt19937 rng(uint32_t(c.n) * 3 + uint32_t(c.alias));
    const auto a = random_bf16(c.n, rng, 0.f, 1.f), b = random_bf16(c.n, rng, 0.f, 2.f);
    DeviceBuffer<bf16> da(a, c.misalign), db(b, c.misalign), dy(c.n, c.misalign);
    dy.poison();
    bf16* y = c.alias == Alias::kA ? da.get() : c.alias == Alias::kB ? db.get() : dy.get();
    loom::cuda::add(da.get(), db.get(), y, c.n, nullptr);
    const auto ad = to_double(a), bd = to_double(b);
    std::vector<double> ref(c.n);
    loom::ref::add(ad.data(), bd.data(), ref.data(), c.n);
    const DeviceBuffer<bf16>& out = c.alias == Alias::kA ? da : c.alias == Alias::kB ? db : dy;
    EXPECT_TRUE(all_close("y", out.download(), ref, kBf16Out));
  }
}

TEST(Scale, MatchesReference) {
  for (const Case& c : cases()) {
    if (c.alias != Alias::kNone) continue;
    SCOPED_TRACE(name(c));
    EmulatedSms sms(c.sms);
    std::mt19937 rng(uint32_t(c.n) * 5 + 1);
    const auto a = random_bf16(c.n, rng, 0.f, 1.f);
    DeviceBuffer<bf16> da(a, c.misalign), dy(c.n, c.misalign);
    dy.poison();
    loom::cuda::scale(da.get(), 0.37f, dy.get(), c.n, nullptr);
    const auto ad = to_double(a);
    std::vector<double> ref(c.n);
    loom::ref::scale(ad.data(), 0.37, ref.data(), c.n);
    EXPECT_TRUE(all_close("y", dy.download(), ref, kBf16Out));
  }
}

// In place, y = s * y: the scale of LoRA's update.
TEST(Scale, InPlace) {
  const int64_t n = 1003;
  std::mt19937 rng(17);
  const auto a = random_bf16(n, rng, 0.f, 1.f);
  DeviceBuffer<bf16> da(a);
  loom::cuda::scale(da.get(), -1.5f, da.get(), n, nullptr);
  const auto ad = to_double(a);
  std::vector<double> ref(n);
  loom::ref::scale(ad.data(), -1.5, ref.data(), n);
  EXPECT_TRUE(all_close("y", da.download(), ref, kBf16Out));
}

// Widening is exact: every bf16 is a float. Both paths, and on the emulator a vector path
// that goes round twice.
TEST(WidenBf16, Exact) {
  std::vector<Case> v = {{1, 0, Alias::kNone}, {517, 1, Alias::kNone}, {4099, 0, Alias::kNone}};
  v.push_back(LOOM_SANITIZED ? Case{20003, 0, Alias::kNone, 1} : Case{70003, 0, Alias::kNone});
  for (const Case& c : v) {
    SCOPED_TRACE(name(c));
    EmulatedSms sms(c.sms);
    std::mt19937 rng{uint32_t(c.n)};
    const auto a = random_bf16(c.n, rng, 0.f, 3.f);
    DeviceBuffer<bf16> da(a, c.misalign);
    DeviceBuffer<float> dy(c.n, c.misalign);
    dy.poison();
    loom::cuda::widen_bf16(da.get(), dy.get(), c.n, nullptr);
    EXPECT_TRUE(all_close("dst", dy.download(), to_double(a), Tolerance{0, 0}));
  }
}

// n = 0 is a no-op that must not launch (a zero-block grid is a launch error).
TEST(Add, EmptyIsNoOp) {
  loom::cuda::add(nullptr, nullptr, nullptr, 0, nullptr);
  loom::cuda::scale(nullptr, 2.f, nullptr, 0, nullptr);
  loom::cuda::widen_bf16(nullptr, nullptr, 0, nullptr);
  EXPECT_CUDA(cudaGetLastError());
}

}  // namespace
