// gelu_test.cpp: the CUDA GELU and tanh (gelu.cu) against the CPU reference
// (loom::ref::gelu_* / tanh_*, run in double on the same bf16-rounded inputs). One source for
// the emulator, TSan, ASan and real-GPU builds (cmake/LoomKernel.cmake). Sizes cover the
// 16-byte pack path with and without a scalar tail, the scalar path (a misaligned pointer),
// and grid-stride loops that go round several times on both paths: on the emulator's 4-SM
// device (a wave of 32 blocks of 256 threads) in the plain build, on one SM (8 blocks) in the
// sanitizer builds. Outputs are NaN-poisoned; inputs are random, never zero, and reach GELU's
// saturated tails.
#include "kernels/common/cuda_compat.h"
#include "kernels/common/test_util.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "kernels/gelu/gelu.h"

namespace {

using loom::bf16;
using namespace loom::test;

struct Case {
  int64_t n;
  int misalign;  // elements of offset on every pointer: forces the scalar path
  int sms = 0;   // emulated SM count (0: LOOM_SIMT_SM_COUNT, default 4)
};

std::string name(const Case& c) {
  return "n=" + std::to_string(c.n) + (c.misalign ? " misaligned" : "") +
         (c.sms ? " on " + std::to_string(c.sms) + " SM" : "");
}

std::vector<Case> cases() {
  // One SM: 20003 elements are 2501 packs, two rounds of the 2048-thread wave; 5003 scalars,
  // three.
  if (LOOM_SANITIZED) return {{2048, 0}, {1003, 0}, {517, 1}, {7, 0}, {20003, 0, 1}, {5003, 1, 1}};
  std::vector<Case> v = {{4096, 0}, {1003, 0}, {517, 1}, {7, 0},
                         {70001, 0},   // vector: 8751 packs, two rounds of the 8192-thread wave, then a tail
                         {17001, 1}};  // scalar: three rounds
  if (!LOOM_SIMT_EMULATION) v.push_back({int64_t(8) * 1024 * 3072 + 5, 0});
  return v;
}

// One op under test: the launcher, and the reference on the same (double) inputs.
using Launch1 = void (*)(const bf16*, bf16*, int64_t, loom::cuda::Stream);
using Launch2 = void (*)(const bf16*, const bf16*, bf16*, int64_t, loom::cuda::Stream);

// y = op(x) for every case; x ~ N(0, sd).
template <class Ref>
void check_forward(Launch1 launch, Ref ref_op, float sd, uint32_t seed) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(name(c));
    EmulatedSms sms(c.sms);
    std::mt19937 rng(uint32_t(c.n) + seed);
    const auto x = random_bf16(c.n, rng, 0.f, sd);
    DeviceBuffer<bf16> dx(x, c.misalign), dy(c.n, c.misalign);
    dy.poison();
    launch(dx.get(), dy.get(), c.n, nullptr);
    const auto xd = to_double(x);
    std::vector<double> ref(c.n);
    ref_op(loom::ref::GeluArgs<double>{.x = xd.data(), .y = ref.data(), .n = c.n});
    EXPECT_TRUE(all_close("y", dy.download(), ref, kBf16Tol));
  }
}

// dx = op'(dy, v) for every case; v: the value the backward reads (x, or tanh's output y).
template <class Ref, class Values>
void check_backward(Launch2 launch, Ref ref_op, Values values, uint32_t seed) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(name(c));
    EmulatedSms sms(c.sms);
    std::mt19937 rng(uint32_t(c.n) + seed);
    const std::vector<bf16> v = values(c.n, rng);
    const auto dy = random_bf16(c.n, rng, 0.f, 1.f);
    DeviceBuffer<bf16> ddy(dy, c.misalign), dv(v, c.misalign), ddx(c.n, c.misalign);
    ddx.poison();
    // On a stream of its own: the launcher must launch on the stream it is given.
    cudaStream_t stream;
    ASSERT_CUDA(cudaStreamCreate(&stream));
    launch(ddy.get(), dv.get(), ddx.get(), c.n, stream);
    ASSERT_CUDA(cudaStreamSynchronize(stream));
    ASSERT_CUDA(cudaStreamDestroy(stream));
    const auto vd = to_double(v), dyd = to_double(dy);
    std::vector<double> ref(c.n);
    ref_op(loom::ref::GeluBwdArgs<double>{.dy = dyd.data(), .x = vd.data(), .dx = ref.data(), .n = c.n});
    EXPECT_TRUE(all_close("dx", ddx.download(), ref, kBf16Tol));
  }
}

TEST(Gelu, ForwardMatchesReference) {
  check_forward(loom::cuda::gelu_fwd, loom::ref::gelu_fwd<double>, 3.f, 0);
}

TEST(Gelu, BackwardMatchesReference) {
  check_backward(loom::cuda::gelu_bwd, loom::ref::gelu_bwd<double>,
                 [](int64_t n, std::mt19937& rng) { return random_bf16(n, rng, 0.f, 3.f); }, 1);
}

TEST(Tanh, ForwardMatchesReference) {
  check_forward(loom::cuda::tanh_fwd, loom::ref::tanh_fwd<double>, 2.f, 7);
}

// Backward from the output y (in (-1, 1)): dx = dy (1 - y^2).
TEST(Tanh, BackwardMatchesReference) {
  check_backward(loom::cuda::tanh_bwd, loom::ref::tanh_bwd<double>,
                 [](int64_t n, std::mt19937& rng) {
                   std::uniform_real_distribution<float> u(-0.999f, 0.999f);
                   std::vector<bf16> y(n);
                   for (auto& e : y) e = loom::to_bf16(nonzero(u(rng)));
                   return y;
                 },
                 8);
}

// n = 0 is a no-op that must not launch (a zero-block grid is a launch error).
TEST(Gelu, EmptyIsNoOp) {
  loom::cuda::gelu_fwd(nullptr, nullptr, 0, nullptr);
  loom::cuda::gelu_bwd(nullptr, nullptr, nullptr, 0, nullptr);
  loom::cuda::tanh_fwd(nullptr, nullptr, 0, nullptr);
  loom::cuda::tanh_bwd(nullptr, nullptr, nullptr, 0, nullptr);
  EXPECT_CUDA(cudaGetLastError());
}

}  // namespace
