// layernorm_test.cpp: the CUDA layer norm (layernorm.cu) against the CPU reference
// (loom::ref, run in double on the same bf16-rounded inputs). One source for the emulator,
// TSan, ASan and real-GPU builds (cmake/LoomKernel.cmake); the shapes cover every path: the
// register path with 16-byte packs and with scalar accesses (ragged C, or a misaligned base
// pointer), each slot-count instantiation family, and the looped path for C > 2048. Cases on a
// one-SM emulated device (4 backward partial rows) give every backward warp several rows, in
// every build, so that its shared-memory accumulators carry over rows as they do at scale.
// Outputs are NaN-poisoned before each launch, inputs are random and never zero, and each
// comparison names its worst element.
#include "kernels/common/cuda_compat.h"
#include "kernels/common/test_util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "kernels/layernorm/layernorm.h"

namespace {

using loom::bf16;
using namespace loom::test;

// bf16 outputs: a rounding is 2^-9 relative; the f32 arithmetic before it adds little.
constexpr Tolerance kBf16Out{2e-3, 1e-2};
// f32 statistics of one row.
constexpr Tolerance kF32Stat{1e-5, 2e-5};
// f32 sums over the rows (dg, db), against a double reference: a float sum's error is bounded
// by its depth times eps times the sum of |terms|, so the atol of each element is a fraction of
// that sum (kF32SumScale); 1e-5 leaves a few hundred sequential adds of room, far more than
// the kernels' depth (rows per warp + warps + partials per thread row + thread rows).
constexpr double kF32SumScale = 1e-5, kF32SumRtol = 1e-6;

struct Shape {
  int64_t N, C;
  bool residual;   // fused residual add (forward) / dresid (backward)
  int misalign;    // elements of offset on every bf16 pointer: forces the scalar path
  int sms = 0;     // emulated SM count (0: LOOM_SIMT_SM_COUNT, default 4)
};

std::string name(const Shape& s) {
  std::ostringstream os;
  os << "N=" << s.N << " C=" << s.C << (s.residual ? " +residual" : "") << (s.misalign ? " misaligned" : "");
  if (s.sms) os << " on " << s.sms << " SM";
  return os.str();
}

// Shapes for every path; small enough for the emulator (about 10 ms a block), smaller again
// under the sanitizers. Bigger, model-sized shapes run on the GPU only.
std::vector<Shape> shapes() {
  // One SM: 4 register-path blocks, so with 70 rows every warp takes 4 or 5; the looped path
  // gets 8 partial rows (a warp each), 5 rows a warp at N = 40.
  std::vector<Shape> v = {{11, 256, true, 0}, {5, 100, false, 0}, {3, 1040, true, 0}, {2, 2100, true, 0},
                          {70, 256, true, 0, 1}, {40, 2100, false, 0, 1}};
  if (!LOOM_SANITIZED) {
    v = {
        {203, 256, false, 0},  // vector, 1 slot; enough rows that every backward warp gets several
        {19, 768, true, 0},    // vector, 3 slots (GPT-2 small)
        {150, 100, true, 0},   // scalar: C not a multiple of 8
        {9, 264, false, 1},    // scalar: C % 8 == 0 but rows misaligned; 2 slots, one partial
        {5, 1600, true, 0},    // vector, 7 slots rounded up to the 8-slot instantiation
        {40, 2100, true, 0},   // looped path, scalar; warps own several rows
        {6, 2304, false, 0},   // looped path, vector
        {150, 768, true, 0, 1},   // one SM: 4 blocks of 37 rows, 9 rows a warp
        {40, 2304, false, 1, 1},  // one SM, looped and scalar: 5 rows a warp
    };
  }
  if (!LOOM_SIMT_EMULATION) {
    v.push_back({8192, 768, true, 0});
    v.push_back({4096, 1600, true, 0});
    v.push_back({1000, 1000, false, 0});
    v.push_back({777, 4096, true, 0});
    v.push_back({333, 768, true, 1});
  }
  return v;
}

// ---- forward ---------------------------------------------------------------------------

void check_forward(const Shape& sh) {
  SCOPED_TRACE(name(sh));
  EmulatedSms sms(sh.sms);
  const int64_t N = sh.N, C = sh.C;
  std::mt19937 rng(uint32_t(N * 131 + C));
  const auto x = random_bf16(N * C, rng, 0.3f, 1.f);
  const auto r = random_bf16(N * C, rng, -0.1f, 0.7f);
  const auto g = random_bf16(C, rng, 1.f, 0.3f);
  const auto b = random_bf16(C, rng, 0.f, 0.3f);
  const float eps = 1e-5f;

  const size_t o = size_t(sh.misalign);
  DeviceBuffer<bf16> dx(x, o), dr(r, o), dg(g, o), db(b, o), dy(N * C, o), dsum(N * C, o);
  DeviceBuffer<float> dmean(N), drstd(N);
  dy.poison();
  dsum.poison();
  dmean.poison();
  drstd.poison();

  cudaStream_t stream;
  ASSERT_CUDA(cudaStreamCreate(&stream));
  const auto t0 = std::chrono::steady_clock::now();
  loom::cuda::layernorm_fwd({.x = dx.get(), .residual = sh.residual ? dr.get() : nullptr,
                             .sum = sh.residual ? dsum.get() : nullptr, .g = dg.get(), .b = db.get(), .y = dy.get(),
                             .mean = dmean.get(), .rstd = drstd.get(), .N = N, .C = C, .eps = eps},
                            stream);
  ASSERT_CUDA(cudaStreamSynchronize(stream));
  print_timing("layernorm_fwd " + name(sh), t0);
  ASSERT_CUDA(cudaStreamDestroy(stream));

  // The reference: with a residual, the sum it computes is checked against the kernel's bf16
  // sum; the statistics and y are then checked against the reference run on that bf16 sum,
  // because the kernel normalises what it stores (the backward sees the stored sum as x).
  auto xd = to_double(x), rd = to_double(r), gd = to_double(g), bd = to_double(b);
  std::vector<double> ymean(N), yrstd(N), yref(N * C), sumref(N * C);
  const loom::ref::LayerNormArgs<double> ra{.x = xd.data(), .g = gd.data(), .b = bd.data(), .y = yref.data(),
                                            .mean = ymean.data(), .rstd = yrstd.data(), .N = N, .C = C, .eps = eps};
  if (sh.residual) {
    loom::ref::LayerNormArgs<double> with_residual = ra;
    with_residual.residual = rd.data();
    with_residual.sum = sumref.data();
    loom::ref::layernorm_fwd(with_residual);
    EXPECT_TRUE(all_close("sum", dsum.download(), sumref, kBf16Out));
    for (int64_t i = 0; i < N * C; ++i) xd[i] = loom::from_bf16(loom::to_bf16(float(sumref[i])));
  }
  loom::ref::layernorm_fwd(ra);
  EXPECT_TRUE(all_close("y", dy.download(), yref, kBf16Out));
  EXPECT_TRUE(all_close("mean", dmean.download(), ymean, kF32Stat));
  EXPECT_TRUE(all_close("rstd", drstd.download(), yrstd, kF32Stat));
}

TEST(LayerNormFwd, MatchesReference) {
  for (const Shape& s : shapes()) check_forward(s);
}

// ---- backward --------------------------------------------------------------------------

struct BwdInputs {
  std::vector<bf16> dy, x, g, dresid;
  std::vector<float> mean, rstd, dg0, db0;
};

// x has a nonzero mean and rstd comes from the reference forward, so xhat is realistic;
// dg/db start nonzero to check that the kernel accumulates.
BwdInputs make_bwd_inputs(const Shape& sh) {
  std::mt19937 rng(uint32_t(sh.N * 7 + sh.C * 3 + 1));
  const int64_t N = sh.N, C = sh.C;
  BwdInputs in;
  in.dy = random_bf16(N * C, rng, 0.f, 1.f);
  in.x = random_bf16(N * C, rng, 0.5f, 2.f);
  in.g = random_bf16(C, rng, 1.f, 0.3f);
  in.dresid = random_bf16(N * C, rng, 0.f, 0.5f);
  in.dg0 = random_f32(C, rng, 0.f, 1.f);
  in.db0 = random_f32(C, rng, 0.f, 1.f);
  auto xd = to_double(in.x), gd = to_double(in.g);
  std::vector<double> y(N * C), m(N), rs(N);
  loom::ref::layernorm_fwd<double>({.x = xd.data(), .g = gd.data(), .b = gd.data(), .y = y.data(), .mean = m.data(),
                                    .rstd = rs.data(), .N = N, .C = C, .eps = 1e-5f});
  in.mean.assign(m.begin(), m.end());
  in.rstd.assign(rs.begin(), rs.end());
  return in;
}

struct BwdOutputs {
  std::vector<bf16> dx;
  std::vector<float> dg, db;
};

BwdOutputs run_backward(const Shape& sh, const BwdInputs& in) {
  EmulatedSms sms(sh.sms);
  const int64_t N = sh.N, C = sh.C;
  const size_t o = size_t(sh.misalign);
  DeviceBuffer<bf16> ddy(in.dy, o), dx_in(in.x, o), dg_w(in.g, o), ddr(in.dresid, o), ddx(N * C, o);
  DeviceBuffer<float> dmean(in.mean), drstd(in.rstd), ddg(in.dg0), ddb(in.db0);
  // Exactly the advertised scratch size, NaN-filled: an overrun is an ASan report, and a
  // partial row the kernel forgot to write turns dg/db into NaN.
  DeviceBuffer<float> scratch(loom::cuda::layernorm_bwd_scratch_floats(N, C));
  scratch.poison();
  ddx.poison();
  const auto t0 = std::chrono::steady_clock::now();
  loom::cuda::layernorm_bwd({.dy = ddy.get(), .x = dx_in.get(), .g = dg_w.get(), .mean = dmean.get(),
                             .rstd = drstd.get(), .dresid = sh.residual ? ddr.get() : nullptr, .dx = ddx.get(),
                             .dg = ddg.get(), .db = ddb.get(), .scratch = scratch.get(), .N = N, .C = C},
                            nullptr);
  EXPECT_CUDA(cudaDeviceSynchronize());
  print_timing("layernorm_bwd " + name(sh), t0);
  return {ddx.download(), ddg.download(), ddb.download()};
}

void check_backward(const Shape& sh) {
  SCOPED_TRACE(name(sh));
  const int64_t N = sh.N, C = sh.C;
  const BwdInputs in = make_bwd_inputs(sh);
  const BwdOutputs out = run_backward(sh, in);

  auto dy = to_double(in.dy), x = to_double(in.x), g = to_double(in.g), dr = to_double(in.dresid);
  auto mean = to_double(in.mean), rstd = to_double(in.rstd);
  auto dg = to_double(in.dg0), db = to_double(in.db0);
  std::vector<double> dx(N * C);
  loom::ref::layernorm_bwd<double>({.dy = dy.data(), .x = x.data(), .g = g.data(), .mean = mean.data(),
                                    .rstd = rstd.data(), .dx = dx.data(), .dg = dg.data(), .db = db.data(), .N = N,
                                    .C = C, .dresid = sh.residual ? dr.data() : nullptr});
  EXPECT_TRUE(all_close("dx", out.dx, dx, kBf16Out));
  std::vector<double> atol_g(C), atol_b(C);
  for (int64_t c = 0; c < C; ++c) {
    double mg = std::fabs(in.dg0[c]), mb = std::fabs(in.db0[c]);
    for (int64_t n = 0; n < N; ++n) {
      mg += std::fabs(dy[n * C + c] * (x[n * C + c] - mean[n]) * rstd[n]);
      mb += std::fabs(dy[n * C + c]);
    }
    atol_g[c] = kF32SumScale * mg;
    atol_b[c] = kF32SumScale * mb;
  }
  EXPECT_TRUE(all_close("dg", out.dg, dg, atol_g, kF32SumRtol));
  EXPECT_TRUE(all_close("db", out.db, db, atol_b, kF32SumRtol));
}

TEST(LayerNormBwd, MatchesReference) {
  for (const Shape& s : shapes()) check_backward(s);
}

// Same inputs, same device: dx, dg and db must agree bit for bit (no float atomics). Under
// the emulator blocks run in order anyway; on a GPU this is the test with teeth.
TEST(LayerNormBwd, BitIdenticalRuns) {
  // The emulator runs blocks in order, so a sanitizer build repeats what the plain emulated
  // run shows; the sanitizers' budget goes to the shapes of MatchesReference instead.
  if (LOOM_SANITIZED) GTEST_SKIP() << "deterministic by construction under the emulator";
  std::vector<Shape> v = {{45, 768, true, 0}, {7, 2100, false, 0}};
  if (!LOOM_SIMT_EMULATION) v = {{8192, 768, true, 0}, {2048, 1600, false, 0}, {512, 3000, true, 0}};
  for (const Shape& sh : v) {
    SCOPED_TRACE(name(sh));
    const BwdInputs in = make_bwd_inputs(sh);
    const BwdOutputs a = run_backward(sh, in), b = run_backward(sh, in);
    EXPECT_TRUE(same_bits("dx", a.dx, b.dx));
    EXPECT_TRUE(same_bits("dg", a.dg, b.dg));
    EXPECT_TRUE(same_bits("db", a.db, b.db));
  }
}

// The partial buffer stays bounded however many rows there are.
TEST(LayerNormBwd, ScratchIsBounded) {
  EXPECT_LE(loom::cuda::layernorm_bwd_scratch_floats(int64_t(1) << 24, 768), size_t(2) * 768 * 1024);
  EXPECT_GE(loom::cuda::layernorm_bwd_scratch_floats(1, 768), size_t(2) * 768);
}

}  // namespace
