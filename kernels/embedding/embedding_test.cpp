// embedding_test.cpp: the CUDA embedding (embedding.cu) against the CPU reference
// (loom::ref::embedding_fwd/bwd, run in double on the same bf16-rounded inputs). One source
// for the emulator, TSan, ASan and real-GPU builds (cmake/LoomKernel.cmake).
// Cases cover the 16-byte pack path and the scalar path (C not a multiple of 8, or a
// misaligned table), a device-side pos0, ragged 256-column tiles, skewed token counts so that
// both the warp-per-run and the block-per-run sums run, and more than 2048 positions so that
// the sort's global merge steps run. Cases on a one-SM emulated device (a wave of 8 blocks of
// 256 threads) make every grid-stride loop go round several times and give the long-run
// kernel's blocks several (run, tile) items each, in every build: a block that rewrites its
// shared partial sums for the next item before all its threads have read them is a TSan race
// there. Forward output is NaN-poisoned, gradients start nonzero (they accumulate), the int
// scratch is exactly the advertised size and poisoned, and two backward runs must agree bit
// for bit.
#include "kernels/common/cuda_compat.h"
#include "kernels/common/test_util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "kernels/embedding/embedding.h"

namespace {

using loom::bf16;
using namespace loom::test;

// bf16 output of an exact f32 sum of two bf16 values: one rounding, 2^-9 relative.
constexpr Tolerance kBf16Out{1e-4, 4e-3};
// f32 gradient sums against a double reference: a float sum's error is bounded by its depth
// times eps times the sum of |terms|; kF32SumScale of that sum, the per-element atol, leaves
// room for a few hundred sequential adds (a long run summed by one warp is the deepest).
constexpr double kF32SumScale = 1e-5, kF32SumRtol = 1e-6;

struct Case {
  int64_t B, T, C, V, maxT;
  int pos0;       // -1: no pos0 pointer (position 0); else a device int holding it
  double skew;    // probability that a position gets token 3 (long runs)
  int misalign;   // elements of offset on the bf16 tables/gradients: forces the scalar path
  int sms = 0;    // emulated SM count for this case (0: LOOM_SIMT_SM_COUNT, default 4)
};

std::string name(const Case& c) {
  std::ostringstream os;
  os << "B=" << c.B << " T=" << c.T << " C=" << c.C << " V=" << c.V << " maxT=" << c.maxT << " pos0=" << c.pos0
     << " skew=" << c.skew << (c.misalign ? " misaligned" : "");
  if (c.sms) os << " on " << c.sms << " SM";
  return os.str();
}

// One SM: the long-run kernel's grid is one wave of 8 blocks. V = 4 tokens over 200
// positions are 4 runs of ~50 (long: > 32) times 3 column tiles = 12 (run, tile) items, so
// blocks take a second item; the forward's 200 rows go round a 64-warp wave 4 times and dwpe's
// 6500 threads' worth round a 2048-thread wave 4 times. The second case is the scalar path.
const Case kSeveralItemsPerBlock[] = {
    {2, 100, 520, 4, 100, -1, 0.0, 0, 1},
    {2, 150, 300, 6, 160, 7, 0.0, 0, 1},
};

std::vector<Case> cases() {
  std::vector<Case> v;
  if (LOOM_SANITIZED) {
    v = {{2, 9, 64, 40, 16, -1, 0.0, 0}, {3, 30, 100, 12, 40, 4, 0.6, 0}, {2, 13, 48, 30, 20, 3, 0.3, 1}};
  } else {
    v = {
        {2, 9, 64, 40, 16, -1, 0.0, 0},     // vector, one partial tile, short runs
        {4, 40, 300, 20, 48, 5, 0.5, 0},    // scalar (C % 8), 2 tiles, long runs, pos0
        {3, 50, 512, 10, 50, -1, 0.6, 0},   // vector, 2 whole tiles, long runs
        {2, 17, 48, 30, 20, 3, 0.3, 1},     // scalar: misaligned tables
        {1, 1, 8, 5, 4, 2, 0.0, 0},         // one position
        {5, 500, 16, 300, 512, -1, 0.1, 0}, // 2500 positions: global sort steps
        // 4500 positions on one SM: the keys (8192), the sort's global steps (4096 pairs),
        // the runs, the forward rows, the ~1100 short runs (a warp each) and dwpe all go
        // round their grid-stride loops several times.
        {3, 1500, 24, 1200, 1600, 40, 0.3, 0, 1},
    };
  }
  v.insert(v.end(), std::begin(kSeveralItemsPerBlock), std::end(kSeveralItemsPerBlock));
  if (!LOOM_SIMT_EMULATION) {
    v.push_back({8, 1024, 768, 50257, 1024, -1, 0.03, 0});  // GPT-2 small, a frequent token
    v.push_back({4, 1024, 768, 50257, 2048, 700, 0.0, 0});
    v.push_back({64, 1024, 768, 50257, 1024, -1, 0.3, 0});  // 65536 positions, a very long run
  }
  return v;
}

std::vector<float> random_grad(size_t n, std::mt19937& rng) { return random_f32(n, rng, 2.f, 1.f); }
std::vector<int32_t> random_tokens(const Case& c, std::mt19937& rng) {
  std::uniform_int_distribution<int32_t> tok(0, int32_t(c.V - 1));
  std::bernoulli_distribution frequent(c.skew);
  std::vector<int32_t> t(c.B * c.T);
  for (auto& e : t) e = frequent(rng) ? 3 % int32_t(c.V) : tok(rng);
  return t;
}

// ---- forward ---------------------------------------------------------------------------

TEST(EmbeddingFwd, MatchesReference) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(name(c));
    EmulatedSms sms(c.sms);
    std::mt19937 rng(uint32_t(c.B * 1000 + c.T * 10 + c.C));
    const auto tokens = random_tokens(c, rng);
    const auto wte = random_bf16(c.V * c.C, rng, 0.f, 1.f), wpe = random_bf16(c.maxT * c.C, rng, 0.f, 0.5f);
    const size_t o = size_t(c.misalign);
    DeviceBuffer<int32_t> dtok(tokens), dpos0(std::vector<int32_t>{c.pos0});
    DeviceBuffer<bf16> dwte(wte, o), dwpe(wpe, o), dout(c.B * c.T * c.C, o);
    dout.poison();
    loom::cuda::embedding_fwd({.tokens = dtok.get(), .wte = dwte.get(), .wpe = dwpe.get(), .out = dout.get(), .B = c.B,
                               .T = c.T, .C = c.C, .V = c.V, .maxT = c.maxT,
                               .pos0 = c.pos0 >= 0 ? dpos0.get() : nullptr},
                              nullptr);

    const auto wted = to_double(wte), wped = to_double(wpe);
    std::vector<double> ref(c.B * c.T * c.C);
    loom::ref::embedding_fwd<double>({.tokens = tokens.data(), .wte = wted.data(), .wpe = wped.data(),
                                      .out = ref.data(), .B = c.B, .seq = c.T, .C = c.C, .V = c.V, .maxT = c.maxT,
                                      .pos0 = std::max(c.pos0, 0)});
    EXPECT_TRUE(all_close("out", dout.download(), ref, kBf16Out));
  }
}

// ---- backward --------------------------------------------------------------------------

struct BwdInputs {
  std::vector<int32_t> tokens;
  std::vector<bf16> dout;
  std::vector<float> dwte0, dwpe0;
};

BwdInputs make_bwd_inputs(const Case& c) {
  std::mt19937 rng(uint32_t(c.B * 7 + c.T * 3 + c.C + c.V));
  BwdInputs in;
  in.tokens = random_tokens(c, rng);
  in.dout = random_bf16(c.B * c.T * c.C, rng, 0.f, 1.f);
  in.dwte0 = random_grad(c.V * c.C, rng);
  in.dwpe0 = random_grad(c.maxT * c.C, rng);
  return in;
}

struct BwdOutputs {
  std::vector<float> dwte, dwpe;
};

BwdOutputs run_backward(const Case& c, const BwdInputs& in) {
  EmulatedSms sms(c.sms);
  const size_t o = size_t(c.misalign);
  DeviceBuffer<int32_t> dtok(in.tokens), dpos0(std::vector<int32_t>{c.pos0});
  DeviceBuffer<bf16> ddout(in.dout, o);
  DeviceBuffer<float> ddwte(in.dwte0, o), ddwpe(in.dwpe0, o);
  // Exactly the advertised size, filled with -1: an overrun is an ASan report, and a kernel
  // that relied on zeroed scratch would go wrong.
  DeviceBuffer<int32_t> scratch(loom::cuda::embedding_bwd_scratch_ints(c.B * c.T, c.V));
  scratch.poison();
  const auto t0 = std::chrono::steady_clock::now();
  loom::cuda::embedding_bwd({.dout = ddout.get(), .tokens = dtok.get(), .dwte = ddwte.get(), .dwpe = ddwpe.get(),
                             .scratch = scratch.get(), .B = c.B, .T = c.T, .C = c.C, .V = c.V, .maxT = c.maxT,
                             .pos0 = c.pos0 >= 0 ? dpos0.get() : nullptr},
                            nullptr);
  BwdOutputs out{ddwte.download(), ddwpe.download()};
  print_timing("embedding_bwd " + name(c), t0);
  return out;
}

// dwte += and dwpe += the sums of dout rows, in double; run on |dout| and |dwte0|, |dwpe0|
// it gives the scale of each sum instead.
void ref_backward(const Case& c, const std::vector<int32_t>& tokens, const std::vector<double>& dout,
                  std::vector<double>& dwte, std::vector<double>& dwpe) {
  loom::ref::embedding_bwd<double>({.dout = dout.data(), .tokens = tokens.data(), .dwte = dwte.data(),
                                    .dwpe = dwpe.data(), .B = c.B, .seq = c.T, .C = c.C, .V = c.V, .maxT = c.maxT,
                                    .pos0 = std::max(c.pos0, 0)});
}

std::vector<double> abs_of(std::vector<double> v) {
  for (auto& e : v) e = std::fabs(e);
  return v;
}

TEST(EmbeddingBwd, MatchesReference) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(name(c));
    const BwdInputs in = make_bwd_inputs(c);
    const BwdOutputs out = run_backward(c, in);

    const auto dout = to_double(in.dout);
    auto dwte = to_double(in.dwte0), dwpe = to_double(in.dwpe0);
    ref_backward(c, in.tokens, dout, dwte, dwpe);
    auto mte = abs_of(to_double(in.dwte0)), mpe = abs_of(to_double(in.dwpe0));
    ref_backward(c, in.tokens, abs_of(dout), mte, mpe);
    for (auto& m : mte) m *= kF32SumScale;
    for (auto& m : mpe) m *= kF32SumScale;
    EXPECT_TRUE(all_close("dwte", out.dwte, dwte, mte, kF32SumRtol));
    EXPECT_TRUE(all_close("dwpe", out.dwpe, dwpe, mpe, kF32SumRtol));
  }
}

// Same inputs, same device: dwte and dwpe must agree bit for bit (no float atomics; the run
// list's order varies on a GPU, the sums must not). Under the emulator blocks run in order
// anyway; on a GPU this is the test with teeth.
TEST(EmbeddingBwd, BitIdenticalRuns) {
  // The emulator runs blocks in order, so a sanitizer build repeats what the plain emulated
  // run shows; the sanitizers' budget goes to the shapes of MatchesReference instead.
  if (LOOM_SANITIZED) GTEST_SKIP() << "deterministic by construction under the emulator";
  std::vector<Case> v = {{3, 50, 512, 10, 50, -1, 0.6, 0}, {4, 40, 300, 20, 48, 5, 0.5, 0}};
  if (!LOOM_SIMT_EMULATION) v = {{16, 1024, 768, 50257, 1024, -1, 0.05, 0}, {8, 1024, 770, 300, 1024, 3, 0.2, 0}};
  for (const Case& c : v) {
    SCOPED_TRACE(name(c));
    const BwdInputs in = make_bwd_inputs(c);
    const BwdOutputs a = run_backward(c, in), b = run_backward(c, in);
    EXPECT_TRUE(same_bits("dwte", a.dwte, b.dwte));
    EXPECT_TRUE(same_bits("dwpe", a.dwpe, b.dwpe));
  }
}

// ---- context embedding (feed-forward LM) --------------------------------------------------
// context_tokens + embedding_fwd/bwd without a position table against the reference
// context_embedding_fwd/bwd, with padding before the window and a padding token inside it.
// The last case (2400 context rows on one SM) takes context_tokens' grid-stride loop round
// twice, and gives the backward long runs (V = 11) with several items a block.
TEST(ContextEmbedding, MatchesReference) {
  struct Ctx {
    int64_t B, T, E, V;
    int n;
    int sms = 0;
  };
  std::vector<Ctx> cases = {{2, 7, 16, 11, 3}, {3, 5, 24, 9, 1}, {1, 4, 8, 6, 5}};
  cases.push_back({2, 400, 8, 11, 3, 1});
  for (const Ctx& c : cases) {
    SCOPED_TRACE("B=" + std::to_string(c.B) + " T=" + std::to_string(c.T) + " n=" + std::to_string(c.n) +
                 (c.sms ? " on one SM" : ""));
    EmulatedSms sms(c.sms);
    std::mt19937 rng(uint32_t(c.B * 31 + c.T * 7 + c.n));
    const int pad = int(c.V) - 1;
    std::uniform_int_distribution<int32_t> tok(0, pad);  // pad itself can occur in the window
    std::vector<int32_t> tokens(c.B * c.T);
    for (auto& t : tokens) t = tok(rng);
    const auto wte = random_bf16(c.V * c.E, rng, 0.f, 1.f);
    const int64_t rows = c.B * c.T * c.n;
    DeviceBuffer<int32_t> dtok(tokens), dctx(rows);
    DeviceBuffer<bf16> dwte(wte), dout(rows * c.E);
    dout.poison();
    loom::cuda::context_tokens(dtok.get(), dctx.get(), c.B, c.T, c.n, pad, nullptr);
    loom::cuda::embedding_fwd({.tokens = dctx.get(), .wte = dwte.get(), .wpe = nullptr, .out = dout.get(), .B = rows,
                               .T = 1, .C = c.E, .V = c.V, .maxT = 1, .pos0 = nullptr},
                              nullptr);
    const auto wted = to_double(wte);
    std::vector<double> ref(rows * c.E);
    loom::ref::context_embedding_fwd<double>({.tokens = tokens.data(), .wte = wted.data(), .out = ref.data(), .B = c.B,
                                              .seq = c.T, .E = c.E, .V = c.V, .n = c.n, .pad = pad});
    EXPECT_TRUE(all_close("out", dout.download(), ref, Tolerance{0, 0}));  // copies of rows: exact

    const auto dy = random_bf16(rows * c.E, rng, 0.f, 1.f);
    const auto g0 = random_grad(c.V * c.E, rng);
    DeviceBuffer<bf16> ddy(dy);
    DeviceBuffer<float> dg(g0);
    DeviceBuffer<int32_t> scratch(loom::cuda::embedding_bwd_scratch_ints(rows, c.V));
    scratch.poison();
    loom::cuda::embedding_bwd({.dout = ddy.get(), .tokens = dctx.get(), .dwte = dg.get(), .dwpe = nullptr,
                               .scratch = scratch.get(), .B = rows, .T = 1, .C = c.E, .V = c.V, .maxT = 1,
                               .pos0 = nullptr},
                              nullptr);
    // The reference on the values, then on their magnitudes (the scale of each f32 sum).
    auto context_bwd = [&](const std::vector<double>& d, std::vector<double>& g) {
      loom::ref::context_embedding_bwd<double>({.dout = d.data(), .tokens = tokens.data(), .dwte = g.data(), .B = c.B,
                                                .seq = c.T, .E = c.E, .V = c.V, .n = c.n, .pad = pad});
    };
    const auto dyd = to_double(dy);
    auto gref = to_double(g0), gmag = abs_of(to_double(g0));
    context_bwd(dyd, gref);
    context_bwd(abs_of(dyd), gmag);
    for (auto& m : gmag) m *= kF32SumScale;
    EXPECT_TRUE(all_close("dwte", dg.download(), gref, gmag, kF32SumRtol));
  }
}

}  // namespace
