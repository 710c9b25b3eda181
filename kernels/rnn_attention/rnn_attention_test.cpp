// rnn_attention_test.cpp: the CUDA attention step of the recurrent decoder (rnn_attention.cu)
// against the CPU reference (loom::ref::rnn_attention_*, run in double on the same
// bf16-rounded inputs), both score forms, with and without key padding (including a batch row
// with no key at all), and with gradients left out. One source for the emulator, TSan, ASan
// and real-GPU builds (cmake/LoomKernel.cmake). Shapes make every loop of the kernels go round
// more than once: rows beyond one wave of blocks (the emulator's 4 SMs, or 1), and Tk, A and C
// beyond the 128 threads of a block in the larger cases. Outputs are NaN-poisoned (dv starts
// from random values: it accumulates); inputs are random, never zero.
#include "kernels/common/cuda_compat.h"
#include "kernels/common/test_util.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "kernels/rnn_attention/rnn_attention.h"

namespace {

using loom::AttnScore;
using loom::bf16;
using namespace loom::test;

struct Case {
  int64_t B, Tq, Tk, A, C;
  bool padded;
  int sms = 0;  // emulated SM count (0: LOOM_SIMT_SM_COUNT, default 4)
};

std::string name(const Case& c, AttnScore s) {
  return std::string(s == AttnScore::Dot ? "dot" : "additive") + " B=" + std::to_string(c.B) +
         " Tq=" + std::to_string(c.Tq) + " Tk=" + std::to_string(c.Tk) + " A=" + std::to_string(c.A) +
         " C=" + std::to_string(c.C) + (c.padded ? " padded" : "") + (c.sms ? " on " + std::to_string(c.sms) + " SM" : "");
}

std::vector<Case> cases() {
  // One SM holds 16 blocks of 128 threads: 3 x 7 = 21 query rows and 3 x 9 key rows go round twice.
  if (LOOM_SANITIZED) return {{3, 7, 9, 8, 12, true, 1}, {2, 3, 5, 6, 4, false}};
  std::vector<Case> v = {{3, 7, 9, 8, 12, true, 1}, {2, 3, 5, 6, 4, false}, {5, 17, 13, 16, 24, true},
                         {2, 3, 131, 136, 130, true}};
  if (!LOOM_SIMT_EMULATION) v.push_back({32, 64, 80, 256, 512, true});
  return v;
}

std::vector<double> round_trip(const std::vector<bf16>& v) { return to_double(v); }

void check(AttnScore score, bool want_dq, bool want_dk) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(name(c, score));
    EmulatedSms sms(c.sms);
    std::mt19937 rng(uint32_t(c.B * 131 + c.Tk * 7 + c.A) + uint32_t(score));
    const bool add = score == AttnScore::Additive;
    // Dot scores of A terms: sd 1/sqrt(A) per side keeps the softmax away from one-hot.
    const float sd = add ? 0.7f : 1.f / std::sqrt(std::sqrt(float(c.A)));
    const auto q = random_bf16(c.B * c.Tq * c.A, rng, 0.f, sd);
    const auto k = random_bf16(c.B * c.Tk * c.A, rng, 0.f, sd);
    const auto val = random_bf16(c.B * c.Tk * c.C, rng, 0.f, 1.f);
    const auto v = random_bf16(c.A, rng, 0.f, 1.f);
    const auto dctx = random_bf16(c.B * c.Tq * c.C, rng, 0.f, 1.f);
    const auto dv0 = random_f32(c.A, rng, 0.f, 1.f);
    std::vector<int32_t> len(c.B, int32_t(c.Tk));
    if (c.padded) {
      std::uniform_int_distribution<int32_t> u(1, int32_t(c.Tk));
      for (auto& l : len) l = u(rng);
      len[0] = 0;  // a row with no key: ctx = 0, no gradient
      if (c.B > 2) len[2] = int32_t(c.Tk) + 3;  // beyond Tk: every key
    }
    DeviceBuffer<bf16> dq_(q), dk_(k), dval_(val), dv_(v), ddctx(dctx), dctxo(c.B * c.Tq * c.C);
    DeviceBuffer<float> dprobs(c.B * c.Tq * c.Tk), ddv(dv0);
    DeviceBuffer<int32_t> dlen(len);
    DeviceBuffer<bf16> gq(q.size()), gk(k.size()), gval(val.size());
    DeviceBuffer<float> scratch(loom::cuda::rnn_attention_bwd_scratch_floats(score, c.B, c.Tq, c.Tk, c.A));
    for (auto* b : {&dctxo, &gq, &gk, &gval}) b->poison();
    dprobs.poison();
    scratch.poison();
    const int32_t* lp = c.padded ? dlen.get() : nullptr;
    loom::cuda::rnn_attention_fwd({.score = score, .q = dq_.get(), .keys = dk_.get(), .values = dval_.get(),
                                   .v = add ? dv_.get() : nullptr, .key_len = lp, .ctx = dctxo.get(),
                                   .probs = dprobs.get(), .B = c.B, .Tq = c.Tq, .Tk = c.Tk, .A = c.A, .C = c.C},
                                  nullptr);
    loom::cuda::rnn_attention_bwd({.score = score, .dctx = ddctx.get(), .q = dq_.get(), .keys = dk_.get(),
                                   .values = dval_.get(), .v = add ? dv_.get() : nullptr, .key_len = lp,
                                   .probs = dprobs.get(), .dq = want_dq ? gq.get() : nullptr,
                                   .dkeys = want_dk ? gk.get() : nullptr, .dvalues = gval.get(),
                                   .dv = add ? ddv.get() : nullptr, .scratch = scratch.get(), .B = c.B, .Tq = c.Tq,
                                   .Tk = c.Tk, .A = c.A, .C = c.C},
                                  nullptr);
    // The reference reads the same bf16 inputs; its backward reads the GPU's probabilities, so
    // each comparison measures one kernel's error.
    const auto qd = round_trip(q), kd = round_trip(k), vald = round_trip(val), vd = round_trip(v),
               dctxd = round_trip(dctx);
    std::vector<double> ctx(c.B * c.Tq * c.C), probs(c.B * c.Tq * c.Tk);
    loom::ref::rnn_attention_fwd<double>({.score = score, .q = qd.data(), .keys = kd.data(), .values = vald.data(),
                                          .v = vd.data(), .key_len = c.padded ? len.data() : nullptr,
                                          .ctx = ctx.data(), .probs = probs.data(), .B = c.B, .Tq = c.Tq, .Tk = c.Tk,
                                          .A = c.A, .C = c.C});
    EXPECT_TRUE(all_close("ctx", dctxo.download(), ctx, kBf16Tol));
    EXPECT_TRUE(all_close("probs", dprobs.download(), probs, Tolerance{1e-5, 1e-4}));
    const auto gprobs = to_double(dprobs.download());
    std::vector<double> rq(q.size()), rk(k.size()), rval(val.size()), rdv = to_double(dv0);
    loom::ref::rnn_attention_bwd<double>({.score = score, .dctx = dctxd.data(), .q = qd.data(), .keys = kd.data(),
                                          .values = vald.data(), .v = vd.data(),
                                          .key_len = c.padded ? len.data() : nullptr,
                                          .probs = gprobs.data(), .dq = rq.data(), .dkeys = rk.data(),
                                          .dvalues = rval.data(), .dv = rdv.data(), .B = c.B, .Tq = c.Tq,
                                          .Tk = c.Tk, .A = c.A, .C = c.C});
    // Gradients are sums over keys or queries of products that partly cancel: an absolute
    // allowance of 2^-9 of the largest reference element on top of bf16's relative one.
    auto tol = [](const std::vector<double>& ref) {
      double m = 0;
      for (double x : ref) m = std::max(m, std::fabs(x));
      return Tolerance{1e-3 + m / 512, 1.0 / 128};
    };
    if (want_dq) {
      EXPECT_TRUE(all_close("dq", gq.download(), rq, tol(rq)));
    }
    if (want_dk) {
      EXPECT_TRUE(all_close("dkeys", gk.download(), rk, tol(rk)));
    }
    EXPECT_TRUE(all_close("dvalues", gval.download(), rval, tol(rval)));
    if (add) {
      EXPECT_TRUE(all_close("dv", ddv.download(), rdv, tol(rdv)));
    }
  }
}

TEST(RnnAttention, DotMatchesReference) { check(AttnScore::Dot, true, true); }
TEST(RnnAttention, AdditiveMatchesReference) { check(AttnScore::Additive, true, true); }
// Frozen or input-side operands: the kernels skip what is not wanted and still write the rest.
TEST(RnnAttention, DotWithoutQueryGradient) { check(AttnScore::Dot, false, true); }
TEST(RnnAttention, AdditiveWithoutKeyGradient) { check(AttnScore::Additive, true, false); }

// The backward is deterministic: no atomics, each element summed in a fixed order.
TEST(RnnAttention, BackwardIsSameBitsTwice) {
  const Case c{3, 7, 9, 8, 12, true};
  std::mt19937 rng(5);
  const auto q = random_bf16(c.B * c.Tq * c.A, rng, 0.f, 0.7f), k = random_bf16(c.B * c.Tk * c.A, rng, 0.f, 0.7f);
  const auto val = random_bf16(c.B * c.Tk * c.C, rng, 0.f, 1.f), v = random_bf16(c.A, rng, 0.f, 1.f);
  const auto dctx = random_bf16(c.B * c.Tq * c.C, rng, 0.f, 1.f);
  std::vector<int32_t> len = {9, 4, 7};
  DeviceBuffer<bf16> dq_(q), dk_(k), dval_(val), dv_(v), ddctx(dctx), ctx(c.B * c.Tq * c.C);
  DeviceBuffer<float> probs(c.B * c.Tq * c.Tk);
  DeviceBuffer<int32_t> dlen(len);
  std::vector<std::vector<float>> dvs;
  std::vector<std::vector<bf16>> dks;
  for (int run = 0; run < 2; ++run) {
    DeviceBuffer<bf16> gq(q.size()), gk(k.size()), gval(val.size());
    DeviceBuffer<float> dv(std::vector<float>(c.A, 0.5f));
    DeviceBuffer<float> scratch(loom::cuda::rnn_attention_bwd_scratch_floats(AttnScore::Additive, c.B, c.Tq, c.Tk, c.A));
    loom::cuda::rnn_attention_fwd({.score = AttnScore::Additive, .q = dq_.get(), .keys = dk_.get(),
                                   .values = dval_.get(), .v = dv_.get(), .key_len = dlen.get(), .ctx = ctx.get(),
                                   .probs = probs.get(), .B = c.B, .Tq = c.Tq, .Tk = c.Tk, .A = c.A, .C = c.C},
                                  nullptr);
    loom::cuda::rnn_attention_bwd({.score = AttnScore::Additive, .dctx = ddctx.get(), .q = dq_.get(),
                                   .keys = dk_.get(), .values = dval_.get(), .v = dv_.get(), .key_len = dlen.get(),
                                   .probs = probs.get(), .dq = gq.get(), .dkeys = gk.get(),
                                   .dvalues = gval.get(), .dv = dv.get(), .scratch = scratch.get(), .B = c.B,
                                   .Tq = c.Tq, .Tk = c.Tk, .A = c.A, .C = c.C},
                                  nullptr);
    dvs.push_back(dv.download());
    dks.push_back(gk.download());
  }
  EXPECT_TRUE(same_bits("dv", dvs[0], dvs[1]));
  EXPECT_TRUE(same_bits("dkeys", dks[0], dks[1]));
}

}  // namespace
