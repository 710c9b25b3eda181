// matmul_test.cpp: the CUDA bias gradient (matmul.cu, bias_grad) against the CPU reference
// (loom::ref::linear_bwd's db, run in double on the same bf16-rounded dy). One source for the
// emulator, TSan, ASan and real-GPU builds (cmake/LoomKernel.cmake). Shapes cover the 16-byte
// pack path, the scalar path (M not a multiple of 8, or a misaligned dy), ragged column tiles,
// one and many row chunks; db starts nonzero (the kernel accumulates), the scratch is exactly
// the advertised size and NaN-filled, and two runs must agree bit for bit.
#include "kernels/common/cuda_compat.h"
#include "kernels/common/test_util.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "kernels/matmul/matmul.h"

namespace {

using loom::bf16;
using namespace loom::test;

// f32 column sums against a double reference: the error of a float sum is bounded by its
// depth times eps times the sum of |terms|, hence a per-column atol of kF32SumScale times
// that sum; 1e-5 leaves room for a few hundred sequential adds.
constexpr double kF32SumScale = 1e-5, kF32SumRtol = 1e-6;

struct Shape {
  int64_t N, M;
  int misalign;  // elements of offset on dy: forces the scalar path
};

std::string name(const Shape& s) {
  return "N=" + std::to_string(s.N) + " M=" + std::to_string(s.M) + (s.misalign ? " misaligned" : "");
}

std::vector<Shape> shapes() {
  std::vector<Shape> v = {
      {64, 256, 0},   // vector, one tile
      {37, 1000, 0},  // vector, 4 tiles, the last one partial
      {100, 300, 0},  // scalar: M % 8 != 0
      {33, 64, 1},    // scalar: misaligned
      {1000, 24, 0},  // many row chunks, one narrow tile
      {3, 13, 0},     // fewer rows than warps
  };
  if (LOOM_SANITIZED) v = {{40, 264, 0}, {70, 20, 0}, {9, 30, 1}};
  if (!LOOM_SIMT_EMULATION) {
    v.push_back({8192, 768, 0});
    v.push_back({8192, 3072, 0});
    v.push_back({4097, 50, 0});
    v.push_back({65536, 96, 0});
  }
  return v;
}

struct Inputs {
  std::vector<bf16> dy;
  std::vector<float> db0;
};

Inputs make_inputs(const Shape& sh) {
  std::mt19937 rng(uint32_t(sh.N * 17 + sh.M));
  Inputs in;
  in.dy = random_bf16(sh.N * sh.M, rng, 0.2f, 1.f);
  in.db0 = random_f32(sh.M, rng, 3.2f, 1.f);
  return in;
}

std::vector<float> run(const Shape& sh, const Inputs& in) {
  DeviceBuffer<bf16> dy(in.dy, sh.misalign);
  DeviceBuffer<float> db(in.db0);
  // Exactly the advertised size, NaN-filled: an overrun is an ASan report, a partial the
  // kernel forgot to write turns db into NaN.
  DeviceBuffer<float> scratch(loom::cuda::bias_grad_scratch_floats(sh.N, sh.M));
  scratch.poison();
  loom::cuda::bias_grad(dy.get(), db.get(), scratch.get(), sh.N, sh.M, nullptr);
  return db.download();
}

TEST(BiasGrad, MatchesReference) {
  for (const Shape& sh : shapes()) {
    SCOPED_TRACE(name(sh));
    const Inputs in = make_inputs(sh);
    const std::vector<float> got = run(sh, in);

    // The reference on the values, then on their magnitudes: the scale of each column's sum.
    auto column_sums = [&](const std::vector<double>& dy, std::vector<double>& db) {
      loom::ref::linear_bwd<double>({.dy = dy.data(), .x = nullptr, .w = nullptr, .dx = nullptr, .dw = nullptr,
                                     .db = db.data(), .N = sh.N, .K = 0, .M = sh.M});
    };
    const auto dy = to_double(in.dy);
    auto db = to_double(in.db0), mag = to_double(in.db0);
    column_sums(dy, db);
    auto abs_dy = dy;
    for (auto& e : abs_dy) e = std::fabs(e);
    for (auto& e : mag) e = std::fabs(e);
    column_sums(abs_dy, mag);
    for (auto& m : mag) m *= kF32SumScale;
    EXPECT_TRUE(all_close("db", got, db, mag, kF32SumRtol));
  }
}

// Same inputs, same device: db must agree bit for bit (no float atomics anywhere). Under the
// emulator blocks run in order anyway; on a GPU this is the test with teeth.
TEST(BiasGrad, BitIdenticalRuns) {
  // The emulator runs blocks in order, so a sanitizer build repeats what the plain emulated
  // run shows; the sanitizers' budget goes to the shapes of MatchesReference instead.
  if (LOOM_SANITIZED) GTEST_SKIP() << "deterministic by construction under the emulator";
  Shape sh = {300, 520, 0};
  if (!LOOM_SIMT_EMULATION) sh = {16384, 3072, 0};
  const Inputs in = make_inputs(sh);
  const std::vector<float> a = run(sh, in), b = run(sh, in);
  EXPECT_TRUE(same_bits("db", a, b));
}

TEST(BiasGrad, ScratchIsBounded) {
  EXPECT_LE(loom::cuda::bias_grad_scratch_floats(int64_t(1) << 24, 768), size_t(1024) * 768);
  EXPECT_GE(loom::cuda::bias_grad_scratch_floats(1, 768), size_t(768));
  loom::cuda::bias_grad(nullptr, nullptr, nullptr, 0, 768, nullptr);  // nothing to do: no launch
  EXPECT_CUDA(cudaGetLastError());
}

}  // namespace
