// softmax_xent_test.cpp: the classifier-loss kernels (softmax_xent.cu) against the CPU
// reference in double, on the same bf16-rounded logits. One source for the emulator, its TSan
// and ASan builds, and a real GPU (cmake/LoomKernel.cmake).
//
// The shapes are chosen for the code paths, not for size: V = 256 and 300 take the
// warp-per-row kernels (300: rows alternate between 16-byte aligned and not, so heads and
// tails run), 4097 / 8192 / 50304 the block-per-row kernels, and an offset base pointer
// misaligns every row. Shapes on a one-SM emulated device (grids of 8 blocks: 64 warp rows or
// 8 block rows a wave) make the row loops go round several times, so blocks reduce several
// rows through the same shared memory, in every build. Outputs start as NaN; inputs are
// random and never zero.
#include "kernels/common/cuda_compat.h"
#include "kernels/common/test_util.h"
#include "kernels/softmax_xent/softmax_xent.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace loom {
namespace {

using namespace loom::test;

// bf16 outputs (dlogits, probabilities): one output rounding (half an ulp, 2^-9 relative) plus
// the f32 error, with margin; a tiny atol, since both are probabilities-sized and exact zeros
// do not occur.
constexpr Tolerance kBf16Grad{1e-7, 1.0 / 128};
constexpr Tolerance kBf16Prob{1e-9, 1.0 / 128};

struct Shape {
  int64_t N, V;
  int64_t offset;  // elements between the allocation and the first logit: misaligns rows
  int sms = 0;     // emulated SM count (0: LOOM_SIMT_SM_COUNT, default 4)
};

std::string name(const Shape& s) {
  return "N=" + std::to_string(s.N) + " V=" + std::to_string(s.V) + " offset=" + std::to_string(s.offset) +
         (s.sms ? " on " + std::to_string(s.sms) + " SM" : "");
}

// Sanitizer builds run one shape per code path (warp rows aligned and not, block rows
// unaligned by V and by the base pointer) on fewer rows: each launch there costs about half a
// second of thread start-up under TSan.
std::vector<Shape> shapes() {
  if (LOOM_SANITIZED) return {{9, 256, 0}, {5, 300, 0}, {2, 4097, 0}, {2, 8192, 3}, {70, 256, 0, 1}, {10, 4097, 3, 1}};
  return {{37, 256, 0}, {19, 300, 0}, {9, 5, 0},      {4, 4097, 0},      {5, 8192, 0},
          {3, 50304, 0}, {4, 8192, 3}, {11, 256, 1}, {150, 300, 0, 1}, {11, 4097, 0, 1}};
}

struct Problem {
  std::vector<bf16> logits;  // [N, V]
  std::vector<int32_t> targets;
  std::vector<double> z;     // the bf16 logits as double
};

Problem make_problem(const Shape& s, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> ud(0, int32_t(s.V - 1));
  Problem p;
  p.logits = random_bf16(size_t(s.N * s.V), rng, 0.f, 2.5f);
  p.z = to_double(p.logits);
  p.targets.resize(size_t(s.N));
  for (auto& t : p.targets) t = ud(rng);
  // One row whose target holds the row's largest logit: the -1 then meets p close to 1.
  if (s.N > 1) {
    const double* row = p.z.data() + s.V;
    p.targets[1] = int32_t(std::max_element(row, row + s.V) - row);
  }
  return p;
}

// The reference forward in double: lse per row and the mean loss.
void reference_fwd(const Shape& s, const Problem& p, std::vector<double>& lse, double& loss) {
  lse.assign(size_t(s.N), 0.0);
  ref::softmax_xent_fwd<double>(
      {.logits = p.z.data(), .targets = p.targets.data(), .loss = &loss, .lse = lse.data(), .N = s.N, .V = s.V});
}

// f(s, p) for every shape, on its emulated SM count, with a problem drawn from its own seed.
template <class F>
void for_each_shape(uint32_t seed, F f) {
  for (const Shape& s : shapes()) {
    SCOPED_TRACE(name(s));
    EmulatedSms sms(s.sms);
    f(s, make_problem(s, seed++));
  }
}

struct Forward {
  std::vector<float> lse, loss;
};

// The CUDA forward, from NaN-poisoned outputs and scratch.
Forward run_forward(const Shape& s, const Problem& p) {
  DeviceBuffer<bf16> logits(p.logits, size_t(s.offset));
  DeviceBuffer<int32_t> targets(p.targets);
  DeviceBuffer<float> lse(size_t(s.N)), loss(1), scratch(cuda::softmax_xent_scratch_floats(s.N));
  lse.poison();
  loss.poison();
  scratch.poison();
  cuda::softmax_xent_fwd({.logits = logits.get(), .targets = targets.get(), .lse = lse.get(), .loss = loss.get(),
                          .scratch = scratch.get(), .N = s.N, .V = s.V},
                         nullptr);
  return {lse.download(), loss.download()};
}

TEST(SoftmaxXent, ForwardMatchesReference) {
  for_each_shape(1, [](const Shape& s, const Problem& p) {
    const Forward got = run_forward(s, p);
    std::vector<double> ref_lse;
    double ref_loss = 0;
    reference_fwd(s, p, ref_lse, ref_loss);
    EXPECT_TRUE(all_close("lse", got.lse, ref_lse, kF32Tol));
    EXPECT_TRUE(all_close("loss", got.loss, std::vector<double>{ref_loss}, kF32Tol));
  });
}

// The mean is reduced in a fixed order: two runs give the same bits. 300 rows: the mean
// kernel's 256 threads add two row losses each.
TEST(SoftmaxXent, ForwardIsDeterministic) {
  const Shape s{300, 64, 0, 1};
  EmulatedSms sms(s.sms);
  const Problem p = make_problem(s, 99);
  const Forward a = run_forward(s, p), b = run_forward(s, p);
  ASSERT_FALSE(std::isnan(a.loss[0]));
  EXPECT_TRUE(same_bits("loss", a.loss, b.loss));
}

// A target outside the vocabulary must show, not read out of bounds.
TEST(SoftmaxXent, BadTargetGivesNaN) {
  const Shape s{4, 256, 0};
  Problem p = make_problem(s, 7);
  p.targets[2] = int32_t(s.V);
  EXPECT_TRUE(std::isnan(run_forward(s, p).loss[0]));
}

// Backward out of place and in place (dlogits over the logits), from the reference lse so
// that a forward bug cannot hide a backward one.
TEST(SoftmaxXent, BackwardMatchesReference) {
  for_each_shape(100, [](const Shape& s, const Problem& p) {
    std::vector<double> ref_lse;
    double ref_loss = 0;
    reference_fwd(s, p, ref_lse, ref_loss);
    const double dloss = 1.75 * double(s.N);  // scale = dloss / N = 1.75
    std::vector<double> ref_d(size_t(s.N * s.V));
    ref::softmax_xent_bwd<double>({.dloss = &dloss, .logits = p.z.data(), .targets = p.targets.data(),
                                   .lse = ref_lse.data(), .dlogits = ref_d.data(), .N = s.N, .V = s.V});
    for (const bool in_place : {false, true}) {
      SCOPED_TRACE(in_place ? "in place" : "out of place");
      const size_t o = size_t(s.offset);
      DeviceBuffer<bf16> logits(p.logits, o), out(p.logits.size(), o);
      DeviceBuffer<int32_t> targets(p.targets);
      DeviceBuffer<float> lse(std::vector<float>(ref_lse.begin(), ref_lse.end())), dl(std::vector<float>{float(dloss)});
      out.poison();
      DeviceBuffer<bf16>& d = in_place ? logits : out;
      cuda::softmax_xent_bwd({.dloss = dl.get(), .logits = logits.get(), .targets = targets.get(), .lse = lse.get(),
                              .dlogits = d.get(), .N = s.N, .V = s.V},
                             nullptr);
      EXPECT_TRUE(all_close("dlogits", d.download(), ref_d, kBf16Grad));
    }
  });
}

TEST(SoftmaxXent, SoftmaxMatchesReference) {
  for_each_shape(200, [](const Shape& s, const Problem& p) {
    std::vector<double> ref_y(size_t(s.N * s.V));
    ref::softmax_rows<double>(p.z.data(), ref_y.data(), s.N, s.V);
    DeviceBuffer<bf16> x(p.logits, size_t(s.offset)), y(p.logits.size(), size_t(s.offset));
    y.poison();
    cuda::softmax_fwd(x.get(), y.get(), s.N, s.V, nullptr);
    EXPECT_TRUE(all_close("softmax", y.download(), ref_y, kBf16Prob));
  });
}

}  // namespace
}  // namespace loom
