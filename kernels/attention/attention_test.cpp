// attention_test.cpp: the CUDA attention kernels (attention.cu) against the CPU reference
// (attention_ref.cpp, run in double on the same bf16-rounded inputs). Built four ways by
// cmake/LoomKernel.cmake: emulated ("emu"), emulated under TSan and ASan/UBSan, and for a real
// GPU ("gpu", skipped without one). Emulated shapes stay small (the emulator runs a thread per
// CUDA thread) but still cover several query and key tiles, partial last tiles and every
// head dim; the GPU variant adds long sequences at D = 64 and 128 and prints timings.
//
// Tolerances, |got - ref| <= atol + rtol * |ref| per element (NaN never passes):
//  - out (bf16): atol 2e-2, rtol 2e-2. P is rounded to bf16 before P V, as on tensor cores,
//    and the output itself to bf16 (2^-9 relative).
//  - lse (f32): atol 1e-3, rtol 1e-3: f32 sums of exact bf16 products.
//  - dq, dk, dv (bf16): rtol 2e-2 and atol 5e-2 times the RMS of that part of the reference
//    gradient: P and dS are rounded to bf16 before their products, so the error scales with
//    the typical gradient, not with each element (elements near zero would otherwise fail).
//    A double-precision model of exactly those roundings reaches 0.2 (T = 130) to 0.53
//    (T = 2048, D = 128) of this tolerance; the kernels add only f32 summation order.
//  - and for every output: the RMS of the error over the RMS of the reference <= 1e-2 (the
//    rounding model: 0.0023 at every T), which catches a small systematic error that the
//    per-element bound would let through.
// Loops: T > 64 gives every forward block several key tiles and every backward block several
// query tiles (the double-buffered pipelines and their barriers), and the decode tests run
// several positions a call, more cache rows than the block has threads, and two key chunks.
//
// Document mask: the reference against a naive masked softmax (and a finite-difference check
// of its backward), then the kernels against the reference on windows cut into documents of
// random lengths, length 1 and a whole-window document among them, at the same tolerances.
//
// Bidirectional attention, key padding, cross-attention and its decode against the cached
// encoder keys/values: the reference against a naive masked softmax (its backward has
// finite-difference checks in tests/grad), then the kernels against the reference at the same
// tolerances, with NaN in every padded key row so that reading one fails.
//
// Deterministic dQ: every backward check also runs it (expect_deterministic_dq).
//
// Two forward kernels: every forward check runs the mma.sync kernel and, on an sm_90 device
// (the emulator reports one), the warp-specialised sm_90a kernel (attention_sm90.cuh), each
// forced in turn. Two backward kernels likewise: every backward check at D = 64 and 128 also
// runs the sm_90a backward (attention_sm90_bwd.cuh: 128 keys a block, 64-query stages), whose
// shapes below cover every mode with several key blocks, a wrapping stage ring and partial
// last tiles.
#include "kernels/common/cuda_compat.h"
#include "kernels/common/test_util.h"

#include "kernels/attention/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace {

using loom::bf16;
using namespace loom::test;

// One attention problem; C = H * D as the kernels require.
struct Shape {
  int64_t B, T, H, D;
  int64_t C() const { return H * D; }
  std::string str() const {
    return "B=" + std::to_string(B) + " T=" + std::to_string(T) + " H=" + std::to_string(H) + " D=" + std::to_string(D);
  }
};

using FwdKernel = loom::cuda::AttentionFwdKernel;

// The forward kernels every forward check runs: the mma.sync kernel, and the warp-specialised
// sm_90a one where the device is an sm_90 one (the emulator reports one, so CI runs both).
std::vector<FwdKernel> fwd_kernels() {
  int major = 0;
  EXPECT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0), cudaSuccess);
  if (major == 9) return {FwdKernel::kMmaSync, FwdKernel::kSm90};
  return {FwdKernel::kMmaSync};
}
const char* name(FwdKernel k) { return k == FwdKernel::kSm90 ? "sm90 forward" : "mma.sync forward"; }
// Forces one forward kernel for a scope; back to the architecture's choice after it.
struct ForceFwdKernel {
  explicit ForceFwdKernel(FwdKernel k) { loom::cuda::set_attention_fwd_kernel(k); }
  ~ForceFwdKernel() { loom::cuda::set_attention_fwd_kernel(FwdKernel::kAuto); }
};

using BwdKernel = loom::cuda::AttentionBwdKernel;

// The backward kernels every backward check runs: the mma.sync kernel, and the sm_90a one at
// the head dims it has (64, 128) where the device is an sm_90 one.
std::vector<BwdKernel> bwd_kernels(int64_t D) {
  int major = 0;
  EXPECT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0), cudaSuccess);
  if (major == 9 && (D == 64 || D == 128)) return {BwdKernel::kMmaSync, BwdKernel::kSm90};
  return {BwdKernel::kMmaSync};
}
const char* name(BwdKernel k) { return k == BwdKernel::kSm90 ? "sm90 backward" : "mma.sync backward"; }
struct ForceBwdKernel {
  explicit ForceBwdKernel(BwdKernel k) { loom::cuda::set_attention_bwd_kernel(k); }
  ~ForceBwdKernel() { loom::cuda::set_attention_bwd_kernel(BwdKernel::kAuto); }
};

// The deterministic dQ (AttentionBwd::deterministic), checked beside every default backward
// (`run(deterministic)` returns the gradient's bits). On a GPU, two runs give the same bits.
// Under the emulator, where blocks run in index order and so the default path's atomics add in
// key-block order already, it gives the default run's bits; and a counter target that is wrong
// for some mode hangs the ordered adds, which the emulator's watchdog reports.
template <class Run>
void expect_deterministic_dq(const std::vector<bf16>& default_grads, Run&& run, const std::string& what) {
  const std::vector<bf16> a = run(true);
  if (LOOM_SIMT_EMULATION) {
    EXPECT_TRUE(same_bits("deterministic dq vs in block order " + what, a, default_grads));
  } else {
    EXPECT_TRUE(same_bits("deterministic dq twice " + what, a, run(true)));
  }
}

constexpr Tolerance kBf16Out{2e-2, 2e-2};
constexpr Tolerance kF32Lse{1e-3, 1e-3};

// N(0, stddev) from a seed of its own (never zero: test_util.h).
std::vector<bf16> random_bf16(size_t n, float stddev, uint32_t seed) {
  std::mt19937 rng(seed);
  return loom::test::random_bf16(n, rng, 0.f, stddev);
}

double rms(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x * x;
  return std::sqrt(s / double(v.size()));
}

// all_close, then the RMS of the error over the RMS of the reference (a small systematic error
// passes every element's bound but not this).
::testing::AssertionResult close_and_unbiased(const std::string& what, const std::vector<double>& got,
                                              const std::vector<double>& ref, Tolerance tol,
                                              double max_rel_rms = 1e-2) {
  ::testing::AssertionResult elements = all_close(what, got, ref, tol);
  if (!elements) return elements;
  double err2 = 0;
  for (size_t i = 0; i < got.size(); ++i) err2 += (got[i] - ref[i]) * (got[i] - ref[i]);
  const double ref_rms = rms(ref);
  const double rel_rms = ref_rms > 0 ? std::sqrt(err2 / double(got.size())) / ref_rms : std::sqrt(err2);
  std::printf("[ rms      ] %s: relative RMS error %.2g\n", what.c_str(), rel_rms);
  if (rel_rms > max_rel_rms)
    return ::testing::AssertionFailure() << what << ": relative RMS error " << rel_rms << " > " << max_rel_rms;
  return ::testing::AssertionSuccess();
}

// Gradient rows [rows, n C] packing n parts (dq, dk, dv) compared part by part, each at its own
// scale: the tolerance is relative to the part's RMS. The floor keeps a part that is exactly
// zero (dq, dk at T = 1) from needing exact zeros.
void expect_gradient_parts(const std::vector<double>& got, const std::vector<double>& ref, int64_t rows, int64_t C,
                           const std::vector<std::string>& names, const std::string& what) {
  const int64_t n = int64_t(names.size());
  for (int64_t part = 0; part < n; ++part) {
    std::vector<double> g, r;
    for (int64_t row = 0; row < rows; ++row)
      for (int64_t c = 0; c < C; ++c) {
        g.push_back(got[size_t(row * n * C + part * C + c)]);
        r.push_back(ref[size_t(row * n * C + part * C + c)]);
      }
    EXPECT_TRUE(close_and_unbiased(names[size_t(part)] + what, g, r, Tolerance{5e-2 * rms(r) + 1e-6, 2e-2}));
  }
}

// Inputs of one case: qkv with q scaled up a little so that the softmax is peaked, not flat.
std::vector<bf16> make_qkv(const Shape& s, uint32_t seed) {
  std::vector<bf16> qkv = random_bf16(size_t(s.B * s.T * 3 * s.C()), 1.f, seed);
  const std::vector<bf16> q = random_bf16(size_t(s.B * s.T * s.C()), 2.f, seed + 1);
  for (int64_t r = 0; r < s.B * s.T; ++r)
    std::copy_n(q.begin() + r * s.C(), s.C(), qkv.begin() + r * 3 * s.C());
  return qkv;
}

struct RefFwd {
  std::vector<double> out, lse;
};
RefFwd ref_forward(const Shape& s, const std::vector<double>& qkv, const int32_t* doc_start = nullptr) {
  RefFwd r{std::vector<double>(size_t(s.B * s.T * s.C())), std::vector<double>(size_t(s.B * s.H * s.T))};
  loom::ref::attention_fwd<double>({.qkv = qkv.data(), .out = r.out.data(), .lse = r.lse.data(), .B = s.B, .seq = s.T,
                                    .C = s.C(), .H = s.H, .doc_start = doc_start});
  return r;
}

constexpr int32_t kEot = 3;  // the end-of-text id of the document tests' token streams

// Tokens [B, T] cut into documents by kEot, which starts each document: row 0 is one document
// over the whole window (no kEot) when `whole_row0`; the other rows hold documents of random
// lengths, a quarter of them of length 1 (two kEot in a row), some starting at position 0.
std::vector<int32_t> document_tokens(int64_t B, int64_t T, uint32_t seed, bool whole_row0) {
  std::mt19937 rng(seed);
  std::vector<int32_t> tok(size_t(B * T));
  for (auto& x : tok) x = int32_t(kEot + 1 + rng() % 50);
  for (int64_t b = whole_row0 ? 1 : 0; b < B; ++b) {
    int64_t t = int64_t(rng() % 3 == 0 ? 0 : rng() % std::max<int64_t>(T / 4, 1));
    while (t < T) {
      tok[size_t(b * T + t)] = kEot;
      t += rng() % 4 == 0 ? 1 : 1 + int64_t(rng() % std::max<int64_t>(T / 3, 2));
    }
  }
  return tok;
}

std::vector<int32_t> document_starts(int64_t B, int64_t T, const std::vector<int32_t>& tokens) {
  std::vector<int32_t> starts(tokens.size(), -1);
  loom::ref::document_starts(tokens.data(), starts.data(), B, T, kEot);
  return starts;
}

// doc: doc_start [B, T] for the masked kernels, empty for plain causal attention.
void check_forward(const Shape& s, uint32_t seed, const std::vector<int32_t>& doc = {}) {
  SCOPED_TRACE(s.str() + (doc.empty() ? "" : " with documents"));
  const std::vector<bf16> qkv = make_qkv(s, seed);
  const RefFwd ref = ref_forward(s, to_double(qkv), doc.empty() ? nullptr : doc.data());

  DeviceBuffer<bf16> d_qkv(qkv), d_out(size_t(s.B * s.T * s.C()));
  DeviceBuffer<float> d_lse(size_t(s.B * s.H * s.T));
  DeviceBuffer<int32_t> d_doc(doc.empty() ? std::vector<int32_t>{0} : doc);
  for (const FwdKernel k : fwd_kernels()) {
    SCOPED_TRACE(name(k));
    const ForceFwdKernel force(k);
    d_out.poison();
    d_lse.poison();
    cudaStream_t stream;
    ASSERT_CUDA(cudaStreamCreate(&stream));
    loom::cuda::attention_fwd({.qkv = d_qkv.get(), .out = d_out.get(), .lse = d_lse.get(), .B = s.B, .T = s.T,
                               .C = s.C(), .H = s.H, .doc_start = doc.empty() ? nullptr : d_doc.get()},
                              stream);
    ASSERT_CUDA(cudaStreamSynchronize(stream));
    ASSERT_CUDA(cudaStreamDestroy(stream));
    EXPECT_TRUE(close_and_unbiased("out " + s.str(), to_double(d_out.download()), ref.out, kBf16Out));
    EXPECT_TRUE(close_and_unbiased("lse " + s.str(), to_double(d_lse.download()), ref.lse, kF32Lse, 1e-5));
  }
}

// Backward on inputs shared with the reference: out and lse come from the reference forward
// (rounded to bf16 / f32 as the kernels store them), so this test does not depend on the
// forward kernel.
void check_backward(const Shape& s, uint32_t seed, const std::vector<int32_t>& doc = {}) {
  SCOPED_TRACE(s.str() + (doc.empty() ? "" : " with documents"));
  const int64_t C = s.C(), rows = s.B * s.T;
  const int32_t* ref_doc = doc.empty() ? nullptr : doc.data();
  const std::vector<bf16> qkv = make_qkv(s, seed);
  const std::vector<bf16> dout = random_bf16(size_t(rows * C), 1.f, seed + 7);
  const RefFwd fwd = ref_forward(s, to_double(qkv), ref_doc);
  std::vector<bf16> out(fwd.out.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = loom::to_bf16(float(fwd.out[i]));
  std::vector<float> lse(fwd.lse.begin(), fwd.lse.end());

  std::vector<double> ref_dqkv(size_t(rows * 3 * C));
  const std::vector<double> qkv_d = to_double(qkv), dout_d = to_double(dout), out_d = to_double(out),
                            lse_d = to_double(lse);
  loom::ref::attention_bwd<double>({.dout = dout_d.data(), .qkv = qkv_d.data(), .out = out_d.data(),
                                    .lse = lse_d.data(), .dqkv = ref_dqkv.data(), .B = s.B, .seq = s.T, .C = C,
                                    .H = s.H, .doc_start = ref_doc});

  DeviceBuffer<bf16> d_qkv(qkv), d_dout(dout), d_out(out), d_dqkv(size_t(rows * 3 * C));
  DeviceBuffer<float> d_lse(lse), d_scratch(loom::cuda::attention_bwd_scratch_floats(s.B, s.T, C, s.H));
  DeviceBuffer<int32_t> d_doc(doc.empty() ? std::vector<int32_t>{0} : doc);
  for (const BwdKernel k : bwd_kernels(s.D)) {
    SCOPED_TRACE(name(k));
    const ForceBwdKernel force(k);
    auto run = [&](bool deterministic) {
      // Scratch poisoned too: the kernels must initialise the dQ accumulator themselves.
      d_dqkv.poison();
      d_scratch.poison();
      loom::cuda::attention_bwd({.dout = d_dout.get(), .qkv = d_qkv.get(), .out = d_out.get(), .lse = d_lse.get(),
                                 .dqkv = d_dqkv.get(), .scratch = d_scratch.get(), .B = s.B, .T = s.T, .C = C,
                                 .H = s.H, .doc_start = doc.empty() ? nullptr : d_doc.get(),
                                 .deterministic = deterministic},
                                nullptr);
      return d_dqkv.download();
    };
    const std::vector<bf16> got = run(false);
    expect_gradient_parts(to_double(got), ref_dqkv, rows, C, {"dq ", "dk ", "dv "}, s.str());
    expect_deterministic_dq(got, run, s.str());
  }
}

// Emulated shapes: tens of blocks at most. Tiles are 128 (D <= 64) or 64 (D = 128) queries in
// forward, 64 keys and 64 (or 32) queries in backward: these T leave partial last tiles and
// give several query tiles per (b, h).
std::vector<Shape> emulated_shapes() {
  if (LOOM_SANITIZED) return {{1, 70, 2, 16}, {1, 130, 1, 32}, {1, 40, 1, 64}, {1, 33, 1, 128}};
  return {{1, 1, 1, 16},  {3, 5, 2, 32},   {2, 37, 2, 16},  {1, 200, 2, 16},
          {2, 150, 3, 32}, {2, 130, 2, 64}, {1, 90, 2, 128}, {1, 257, 1, 64}};
}

TEST(AttentionFwd, MatchesReference) {
  uint32_t seed = 1;
  for (const Shape& s : emulated_shapes()) check_forward(s, seed++);
}

TEST(AttentionBwd, MatchesReference) {
  uint32_t seed = 100;
  for (const Shape& s : emulated_shapes()) check_backward(s, seed++);
}

// ---- document mask ----
// Shapes for the masked kernels: several query and key tiles (documents crossing tile edges),
// partial last tiles, every head dim; B = 2 puts a whole-window document beside a cut row.
std::vector<Shape> document_shapes() {
  if (LOOM_SANITIZED) return {{2, 70, 1, 16}, {1, 130, 1, 32}, {1, 33, 1, 128}};
  return {{2, 1, 1, 16}, {2, 37, 2, 16}, {2, 200, 1, 16}, {2, 150, 2, 32}, {2, 130, 1, 64}, {2, 90, 1, 128}};
}

TEST(AttentionDocuments, StartsFromTokens) {
  // eot starts a document: positions before the first eot belong to a document from 0.
  const std::vector<int32_t> tok = {5, kEot, 6, 7, kEot, kEot, 8, 5, 9, kEot};
  const std::vector<int32_t> want = {0, 1, 1, 1, 4, 5, 5, 5, 5, 9};
  EXPECT_EQ(document_starts(1, int64_t(tok.size()), tok), want);
  // The device kernel agrees with the reference, rows independent of each other.
  const int64_t B = 5, T = 300;
  const std::vector<int32_t> many = document_tokens(B, T, 41, true);
  DeviceBuffer<int32_t> d_tok(many), d_starts(many.size());
  d_starts.poison();
  loom::cuda::document_starts(d_tok.get(), d_starts.get(), B, T, kEot, nullptr);
  EXPECT_EQ(d_starts.download(), document_starts(B, T, many));
}

// The reference's masked attention is softmax over [doc_start, i] computed the naive way.
TEST(AttentionDocuments, ReferenceMatchesNaiveMaskedSoftmax) {
  const Shape s{2, 23, 2, 4};
  const int64_t C = s.C(), D = s.D;
  const std::vector<int32_t> doc = document_starts(s.B, s.T, document_tokens(s.B, s.T, 7, false));
  const std::vector<double> qkv = to_double(make_qkv(s, 8));
  const RefFwd ref = ref_forward(s, qkv, doc.data());
  std::vector<double> want(ref.out.size()), want_lse(ref.lse.size());
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t h = 0; h < s.H; ++h)
      for (int64_t i = 0; i < s.T; ++i) {
        const double* q = &qkv[size_t((b * s.T + i) * 3 * C + h * D)];
        std::vector<double> w(size_t(s.T), 0.0);
        double sum = 0;
        for (int64_t j = doc[size_t(b * s.T + i)]; j <= i; ++j) {
          double dot = 0;
          for (int64_t e = 0; e < D; ++e) dot += q[e] * qkv[size_t((b * s.T + j) * 3 * C + C + h * D + e)];
          w[size_t(j)] = std::exp(dot / std::sqrt(double(D)));
          sum += w[size_t(j)];
        }
        want_lse[size_t((b * s.H + h) * s.T + i)] = std::log(sum);
        for (int64_t j = 0; j < s.T; ++j)
          for (int64_t e = 0; e < D; ++e)
            want[size_t((b * s.T + i) * C + h * D + e)] +=
                w[size_t(j)] / sum * qkv[size_t((b * s.T + j) * 3 * C + 2 * C + h * D + e)];
      }
  EXPECT_TRUE(all_close("masked out", ref.out, want, Tolerance{1e-12, 1e-10}));
  EXPECT_TRUE(all_close("masked lse", ref.lse, want_lse, Tolerance{1e-12, 1e-10}));
  // The mask changes something (else this test could not fail): the unmasked output differs.
  const RefFwd plain = ref_forward(s, qkv);
  EXPECT_FALSE(all_close("unmasked out", plain.out, want, Tolerance{1e-6, 1e-6}));
}

// The reference's masked backward against central differences of L = sum(w * out).
TEST(AttentionDocuments, ReferenceBackwardMatchesFiniteDifferences) {
  const Shape s{2, 10, 1, 4};
  const int64_t C = s.C();
  const std::vector<int32_t> doc = document_starts(s.B, s.T, document_tokens(s.B, s.T, 9, false));
  std::vector<double> qkv = to_double(make_qkv(s, 10));
  const std::vector<double> w = to_double(random_bf16(size_t(s.B * s.T * C), 1.f, 11));
  auto loss = [&](const std::vector<double>& x) {
    const RefFwd f = ref_forward(s, x, doc.data());
    double l = 0;
    for (size_t i = 0; i < w.size(); ++i) l += w[i] * f.out[i];
    return l;
  };
  const RefFwd f = ref_forward(s, qkv, doc.data());
  std::vector<double> dqkv(qkv.size(), std::nan(""));
  loom::ref::attention_bwd<double>({.dout = w.data(), .qkv = qkv.data(), .out = f.out.data(), .lse = f.lse.data(),
                                    .dqkv = dqkv.data(), .B = s.B, .seq = s.T, .C = C, .H = s.H,
                                    .doc_start = doc.data()});
  std::vector<double> fd(qkv.size());
  const double eps = 1e-5;
  for (size_t i = 0; i < qkv.size(); ++i) {
    const double x = qkv[i];
    qkv[i] = x + eps;
    const double up = loss(qkv);
    qkv[i] = x - eps;
    const double down = loss(qkv);
    qkv[i] = x;
    fd[i] = (up - down) / (2 * eps);
  }
  EXPECT_TRUE(all_close("masked dqkv", dqkv, fd, Tolerance{1e-7, 1e-6}));
}

TEST(AttentionDocuments, ForwardMatchesReference) {
  uint32_t seed = 300;
  for (const Shape& s : document_shapes()) {
    check_forward(s, seed, document_starts(s.B, s.T, document_tokens(s.B, s.T, seed, true)));
    ++seed;
  }
}

TEST(AttentionDocuments, BackwardMatchesReference) {
  uint32_t seed = 400;
  for (const Shape& s : document_shapes()) {
    check_backward(s, seed, document_starts(s.B, s.T, document_tokens(s.B, s.T, seed, true)));
    ++seed;
  }
}

// ---- bidirectional attention, key padding, cross-attention ----
// Key padding: the k and v rows of padded keys hold NaN on input, in the reference's copy and
// the kernels' alike, so reading one fails the comparison (NaN never passes); the padded keys'
// gradient rows must come out exactly zero and every query row (past the length too) finite.

// A problem of the new modes: Tq queries over Tk keys (self-attention: Tq = Tk), key lengths
// (empty: no padding) drawn in [1, Tk] with one row unpadded and one of length 1 when B > 2.
struct Modes {
  int64_t B, Tq, Tk, H, D;
  bool causal = false;
  bool padded = true;
  int64_t C() const { return H * D; }
  std::string str() const {
    return "B=" + std::to_string(B) + " Tq=" + std::to_string(Tq) + " Tk=" + std::to_string(Tk) + " H=" +
           std::to_string(H) + " D=" + std::to_string(D) + (causal ? " causal" : "") + (padded ? " padded" : "");
  }
};

std::vector<int32_t> key_lengths(const Modes& m, uint32_t seed) {
  if (!m.padded) return {};
  std::mt19937 rng(seed);
  std::vector<int32_t> len(size_t(m.B));
  for (int64_t b = 0; b < m.B; ++b) len[size_t(b)] = int32_t(1 + rng() % uint32_t(m.Tk));
  len[0] = int32_t(m.Tk);
  if (m.B > 2) len[2] = 1;
  return len;
}

// NaN into the k and v columns (at k_col and k_col + C, row stride ld) of keys past the lengths.
void poison_padded_keys(std::vector<bf16>& x, const Modes& m, const std::vector<int32_t>& len, int64_t ld,
                        int64_t k_col) {
  for (int64_t b = 0; b < int64_t(len.size()); ++b)
    for (int64_t t = len[size_t(b)]; t < m.Tk; ++t)
      for (int64_t c = 0; c < 2 * m.C(); ++c) x[size_t((b * m.Tk + t) * ld + k_col + c)] = loom::to_bf16(NAN);
}

const int32_t* or_null(const std::vector<int32_t>& v) { return v.empty() ? nullptr : v.data(); }

// Self-attention (bidirectional or causal) with key padding: forward and backward on the
// device against the reference.
void check_self_modes(const Modes& m, uint32_t seed) {
  SCOPED_TRACE(m.str());
  const Shape s{m.B, m.Tq, m.H, m.D};
  const int64_t C = m.C(), rows = m.B * m.Tq;
  const std::vector<int32_t> len = key_lengths(m, seed);
  std::vector<bf16> qkv = make_qkv(s, seed);
  poison_padded_keys(qkv, m, len, 3 * C, C);
  const std::vector<double> qkv_d = to_double(qkv);
  RefFwd ref{std::vector<double>(size_t(rows * C)), std::vector<double>(size_t(m.B * m.H * m.Tq))};
  loom::ref::attention_fwd<double>({.qkv = qkv_d.data(), .out = ref.out.data(), .lse = ref.lse.data(), .B = m.B,
                                    .seq = m.Tq, .C = C, .H = m.H, .key_len = or_null(len), .causal = m.causal});
  DeviceBuffer<bf16> d_qkv(qkv), d_out(size_t(rows * C));
  DeviceBuffer<float> d_lse(ref.lse.size());
  DeviceBuffer<int32_t> d_len(len.empty() ? std::vector<int32_t>{0} : len);
  const int32_t* dev_len = len.empty() ? nullptr : d_len.get();
  for (const FwdKernel k : fwd_kernels()) {
    SCOPED_TRACE(name(k));
    const ForceFwdKernel force(k);
    d_out.poison();
    d_lse.poison();
    loom::cuda::attention_fwd({.qkv = d_qkv.get(), .out = d_out.get(), .lse = d_lse.get(), .B = m.B, .T = m.Tq,
                               .C = C, .H = m.H, .key_len = dev_len, .causal = m.causal},
                              nullptr);
    EXPECT_TRUE(close_and_unbiased("out " + m.str(), to_double(d_out.download()), ref.out, kBf16Out));
    EXPECT_TRUE(close_and_unbiased("lse " + m.str(), to_double(d_lse.download()), ref.lse, kF32Lse, 1e-5));
  }

  // Backward from the reference's out and lse, as check_backward does.
  const std::vector<bf16> dout = random_bf16(size_t(rows * C), 1.f, seed + 7);
  std::vector<bf16> out(ref.out.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = loom::to_bf16(float(ref.out[i]));
  const std::vector<float> lse(ref.lse.begin(), ref.lse.end());
  const std::vector<double> dout_d = to_double(dout), out_d = to_double(out), lse_d = to_double(lse);
  std::vector<double> ref_dqkv(qkv.size(), std::nan(""));
  loom::ref::attention_bwd<double>({.dout = dout_d.data(), .qkv = qkv_d.data(), .out = out_d.data(),
                                    .lse = lse_d.data(), .dqkv = ref_dqkv.data(), .B = m.B, .seq = m.Tq, .C = C,
                                    .H = m.H, .key_len = or_null(len), .causal = m.causal});
  DeviceBuffer<bf16> d_dout(dout), d_out2(out), d_dqkv(qkv.size());
  DeviceBuffer<float> d_lse2(lse), d_scratch(loom::cuda::attention_bwd_scratch_floats(m.B, m.Tq, C, m.H));
  for (const BwdKernel k : bwd_kernels(m.D)) {
    SCOPED_TRACE(name(k));
    const ForceBwdKernel force(k);
    auto run = [&](bool deterministic) {
      d_dqkv.poison();
      d_scratch.poison();
      loom::cuda::attention_bwd({.dout = d_dout.get(), .qkv = d_qkv.get(), .out = d_out2.get(), .lse = d_lse2.get(),
                                 .dqkv = d_dqkv.get(), .scratch = d_scratch.get(), .B = m.B, .T = m.Tq, .C = C,
                                 .H = m.H, .key_len = dev_len, .causal = m.causal, .deterministic = deterministic},
                                nullptr);
      return d_dqkv.download();
    };
    const std::vector<bf16> got = run(false);
    expect_gradient_parts(to_double(got), ref_dqkv, rows, C, {"dq ", "dk ", "dv "}, m.str());
    expect_deterministic_dq(got, run, m.str());
  }
}

struct CrossInputs {
  std::vector<bf16> q, kv;
  std::vector<int32_t> len;
};
CrossInputs cross_inputs(const Modes& m, uint32_t seed) {
  CrossInputs in{random_bf16(size_t(m.B * m.Tq * m.C()), 2.f, seed),
                 random_bf16(size_t(m.B * m.Tk * 2 * m.C()), 1.f, seed + 1), key_lengths(m, seed + 2)};
  poison_padded_keys(in.kv, m, in.len, 2 * m.C(), 0);
  return in;
}

// Cross-attention forward and backward on the device against the reference.
void check_cross(const Modes& m, uint32_t seed) {
  SCOPED_TRACE(m.str());
  const int64_t C = m.C();
  const CrossInputs in = cross_inputs(m, seed);
  const std::vector<double> q_d = to_double(in.q), kv_d = to_double(in.kv);
  RefFwd ref{std::vector<double>(in.q.size()), std::vector<double>(size_t(m.B * m.H * m.Tq))};
  loom::ref::cross_attention_fwd<double>({.q = q_d.data(), .kv = kv_d.data(), .out = ref.out.data(),
                                          .lse = ref.lse.data(), .B = m.B, .Tq = m.Tq, .Tk = m.Tk, .C = C, .H = m.H,
                                          .key_len = or_null(in.len)});
  DeviceBuffer<bf16> d_q(in.q), d_kv(in.kv), d_out(in.q.size());
  DeviceBuffer<float> d_lse(ref.lse.size());
  DeviceBuffer<int32_t> d_len(in.len.empty() ? std::vector<int32_t>{0} : in.len);
  const int32_t* dev_len = in.len.empty() ? nullptr : d_len.get();
  for (const FwdKernel k : fwd_kernels()) {
    SCOPED_TRACE(name(k));
    const ForceFwdKernel force(k);
    d_out.poison();
    d_lse.poison();
    loom::cuda::cross_attention_fwd({.q = d_q.get(), .kv = d_kv.get(), .out = d_out.get(), .lse = d_lse.get(),
                                     .B = m.B, .Tq = m.Tq, .Tk = m.Tk, .C = C, .H = m.H, .key_len = dev_len},
                                    nullptr);
    EXPECT_TRUE(close_and_unbiased("out " + m.str(), to_double(d_out.download()), ref.out, kBf16Out));
    EXPECT_TRUE(close_and_unbiased("lse " + m.str(), to_double(d_lse.download()), ref.lse, kF32Lse, 1e-5));
  }

  const std::vector<bf16> dout = random_bf16(in.q.size(), 1.f, seed + 7);
  std::vector<bf16> out(ref.out.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = loom::to_bf16(float(ref.out[i]));
  const std::vector<float> lse(ref.lse.begin(), ref.lse.end());
  const std::vector<double> dout_d = to_double(dout), out_d = to_double(out), lse_d = to_double(lse);
  std::vector<double> ref_dq(in.q.size(), std::nan("")), ref_dkv(in.kv.size(), std::nan(""));
  loom::ref::cross_attention_bwd<double>({.dout = dout_d.data(), .q = q_d.data(), .kv = kv_d.data(),
                                          .out = out_d.data(), .lse = lse_d.data(), .dq = ref_dq.data(),
                                          .dkv = ref_dkv.data(), .B = m.B, .Tq = m.Tq, .Tk = m.Tk, .C = C, .H = m.H,
                                          .key_len = or_null(in.len)});
  DeviceBuffer<bf16> d_dout(dout), d_out2(out), d_dq(in.q.size()), d_dkv(in.kv.size());
  DeviceBuffer<float> d_lse2(lse), d_scratch(loom::cuda::attention_bwd_scratch_floats(m.B, m.Tq, C, m.H));
  for (const BwdKernel k : bwd_kernels(m.D)) {
    SCOPED_TRACE(name(k));
    const ForceBwdKernel force(k);
    auto run = [&](bool deterministic) {
      d_dq.poison();
      d_dkv.poison();
      d_scratch.poison();
      loom::cuda::cross_attention_bwd({.dout = d_dout.get(), .q = d_q.get(), .kv = d_kv.get(), .out = d_out2.get(),
                                       .lse = d_lse2.get(), .dq = d_dq.get(), .dkv = d_dkv.get(),
                                       .scratch = d_scratch.get(), .B = m.B, .Tq = m.Tq, .Tk = m.Tk, .C = C,
                                       .H = m.H, .key_len = dev_len, .deterministic = deterministic},
                                      nullptr);
      return d_dq.download();
    };
    const std::vector<bf16> got = run(false);
    expect_gradient_parts(to_double(got), ref_dq, m.B * m.Tq, C, {"dq "}, m.str());
    expect_gradient_parts(to_double(d_dkv.download()), ref_dkv, m.B * m.Tk, C, {"dk ", "dv "}, m.str());
    expect_deterministic_dq(got, run, m.str());
  }
}

// Shapes: query and key tiles several and partial, keys fewer and more than queries, every
// head dim; lengths crossing key tiles, a length of 1, and whole key tiles past the length.
std::vector<Modes> self_mode_shapes() {
  if (LOOM_SANITIZED) return {{2, 70, 70, 1, 16, false}, {2, 40, 40, 1, 32, true}, {3, 70, 70, 1, 64, false}};
  return {{1, 37, 37, 2, 16, false, false}, {3, 150, 150, 2, 16, false}, {3, 130, 130, 1, 32, true},
          {2, 90, 90, 1, 64, false},         {2, 70, 70, 1, 128, true},   {2, 200, 200, 1, 64, true, false},
          {3, 150, 150, 1, 128, false}};
}
std::vector<Modes> cross_shapes() {
  if (LOOM_SANITIZED) return {{3, 20, 70, 1, 16}, {2, 70, 9, 1, 32, false, false}, {2, 20, 70, 1, 64}};
  return {{2, 9, 140, 2, 16, false, false}, {3, 140, 70, 1, 16}, {3, 33, 200, 2, 32}, {2, 1, 65, 1, 64},
          {3, 70, 40, 1, 128},              {3, 70, 260, 1, 64}, {2, 130, 150, 1, 128, false, false}};
}

TEST(AttentionModes, SelfMatchesReference) {
  uint32_t seed = 500;
  for (const Modes& m : self_mode_shapes()) check_self_modes(m, seed++);
}

TEST(AttentionModes, CrossMatchesReference) {
  uint32_t seed = 600;
  for (const Modes& m : cross_shapes()) check_cross(m, seed++);
}

// The reference's masks against a naive softmax: bidirectional and causal key padding (query
// rows past the length attend over the valid keys), and cross-attention with padding.
TEST(AttentionModes, ReferenceMatchesNaiveMaskedSoftmax) {
  for (int mode = 0; mode < 3; ++mode) {
    const bool cross = mode == 2, causal = mode == 1;
    const Modes m{3, 7, cross ? 11 : 7, 2, 4, causal};
    SCOPED_TRACE(m.str());
    const int64_t C = m.C(), D = m.D;
    const CrossInputs in = cross_inputs(m, 70 + uint32_t(mode));
    std::vector<double> q = to_double(in.q), kv = to_double(in.kv), qkv(size_t(m.B * m.Tq * 3 * C));
    if (!cross)  // self-attention: q, k, v packed per row
      for (int64_t r = 0; r < m.B * m.Tq; ++r) {
        std::copy_n(q.begin() + r * C, C, qkv.begin() + r * 3 * C);
        std::copy_n(kv.begin() + r * 2 * C, 2 * C, qkv.begin() + r * 3 * C + C);
      }
    std::vector<double> out(q.size()), lse(size_t(m.B * m.H * m.Tq));
    if (cross)
      loom::ref::cross_attention_fwd<double>({.q = q.data(), .kv = kv.data(), .out = out.data(), .lse = lse.data(),
                                              .B = m.B, .Tq = m.Tq, .Tk = m.Tk, .C = C, .H = m.H,
                                              .key_len = in.len.data()});
    else
      loom::ref::attention_fwd<double>({.qkv = qkv.data(), .out = out.data(), .lse = lse.data(), .B = m.B,
                                        .seq = m.Tq, .C = C, .H = m.H, .key_len = in.len.data(), .causal = causal});
    std::vector<double> want(out.size()), want_lse(lse.size());
    for (int64_t b = 0; b < m.B; ++b)
      for (int64_t h = 0; h < m.H; ++h)
        for (int64_t i = 0; i < m.Tq; ++i) {
          const int64_t len = in.len[size_t(b)], hi = causal ? std::min(i, len - 1) : len - 1;
          std::vector<double> w(size_t(hi + 1));
          double sum = 0;
          for (int64_t j = 0; j <= hi; ++j) {
            double dot = 0;
            for (int64_t e = 0; e < D; ++e) dot += q[size_t((b * m.Tq + i) * C + h * D + e)] * kv[size_t((b * m.Tk + j) * 2 * C + h * D + e)];
            sum += (w[size_t(j)] = std::exp(dot / std::sqrt(double(D))));
          }
          want_lse[size_t((b * m.H + h) * m.Tq + i)] = std::log(sum);
          for (int64_t j = 0; j <= hi; ++j)
            for (int64_t e = 0; e < D; ++e)
              want[size_t((b * m.Tq + i) * C + h * D + e)] += w[size_t(j)] / sum * kv[size_t((b * m.Tk + j) * 2 * C + C + h * D + e)];
        }
    EXPECT_TRUE(all_close("out", out, want, Tolerance{1e-12, 1e-10}));
    EXPECT_TRUE(all_close("lse", lse, want_lse, Tolerance{1e-12, 1e-10}));
  }
}

// Long sequences in every mode at the head dims models use: GPU only.
TEST(AttentionModes, LongSequencesGpu) {
  if (LOOM_SIMT_EMULATION) GTEST_SKIP() << "GPU variant only";
  check_self_modes({4, 1000, 1000, 4, 64, false}, 51);
  check_self_modes({3, 515, 515, 3, 128, true}, 52);
  check_cross({4, 300, 1000, 4, 64}, 53);
  check_cross({3, 1000, 515, 3, 128, false, false}, 54);
}

// Decoding against the cached encoder keys/values: new queries a few at a time, two beams per
// source row (query row b reads kv row b / 2), against the reference decode and against the
// reference cross-attention forward of the same rows; more keys than the block's 128 threads.
TEST(AttentionModes, CrossDecodeMatchesForward) {
  const Modes m = LOOM_SANITIZED ? Modes{2, 3, 40, 2, 16} : Modes{3, 5, 150, 2, 32};
  const int64_t C = m.C(), beams = 2, Bq = m.B * beams;
  const CrossInputs in = cross_inputs(m, 90);
  const std::vector<bf16> q = random_bf16(size_t(Bq * m.Tq * C), 2.f, 91);
  const std::vector<double> q_d = to_double(q), kv_d = to_double(in.kv);
  std::vector<double> want(q.size(), std::nan(""));
  loom::ref::cross_attention_decode<double>({.q = q_d.data(), .kv = kv_d.data(), .out = want.data(), .Bq = Bq,
                                             .Tn = m.Tq, .Bk = m.B, .Tk = m.Tk, .C = C, .H = m.H,
                                             .key_len = in.len.data()});
  // The forward of beam k's rows: the same queries over their source's keys.
  for (int64_t k = 0; k < beams; ++k) {
    std::vector<double> qk, out(size_t(m.B * m.Tq * C)), lse(size_t(m.B * m.H * m.Tq)), got_k;
    for (int64_t b = 0; b < m.B; ++b) {
      qk.insert(qk.end(), q_d.begin() + (b * beams + k) * m.Tq * C, q_d.begin() + (b * beams + k + 1) * m.Tq * C);
      got_k.insert(got_k.end(), want.begin() + (b * beams + k) * m.Tq * C, want.begin() + (b * beams + k + 1) * m.Tq * C);
    }
    loom::ref::cross_attention_fwd<double>({.q = qk.data(), .kv = kv_d.data(), .out = out.data(), .lse = lse.data(),
                                            .B = m.B, .Tq = m.Tq, .Tk = m.Tk, .C = C, .H = m.H,
                                            .key_len = in.len.data()});
    EXPECT_TRUE(all_close("reference decode vs forward", got_k, out, Tolerance{1e-12, 1e-10}));
  }
  DeviceBuffer<bf16> d_kv(in.kv);
  DeviceBuffer<int32_t> d_len(in.len);
  std::vector<double> got(q.size());
  for (int64_t t0 = 0; t0 < m.Tq;) {
    const int64_t tn = t0 == 0 ? 2 : 1;  // two positions, then one a call
    std::vector<bf16> step(size_t(Bq * tn * C));
    for (int64_t b = 0; b < Bq; ++b)
      std::copy_n(q.begin() + (b * m.Tq + t0) * C, tn * C, step.begin() + b * tn * C);
    DeviceBuffer<bf16> d_step(step), d_out(step.size());
    d_out.poison();
    loom::cuda::cross_attention_decode({.q = d_step.get(), .kv = d_kv.get(), .out = d_out.get(), .Bq = Bq, .Tn = tn,
                                        .Bk = m.B, .Tk = m.Tk, .C = C, .H = m.H, .key_len = d_len.get()},
                                       nullptr);
    const std::vector<double> o = to_double(d_out.download());
    for (int64_t b = 0; b < Bq; ++b)
      std::copy_n(o.begin() + b * tn * C, tn * C, got.begin() + (b * m.Tq + t0) * C);
    t0 += tn;
  }
  EXPECT_TRUE(close_and_unbiased("cross decode", got, want, kBf16Out));
}

// Long sequences at the head dims models use: GPU only (minutes under the emulator).
TEST(AttentionFwd, LongSequencesGpu) {
  if (LOOM_SIMT_EMULATION) GTEST_SKIP() << "GPU variant only";
  check_forward({2, 1000, 4, 64}, 11);
  check_forward({1, 2048, 4, 128}, 12);
  check_forward({3, 515, 3, 128}, 13);
}
TEST(AttentionBwd, LongSequencesGpu) {
  if (LOOM_SIMT_EMULATION) GTEST_SKIP() << "GPU variant only";
  check_backward({2, 1000, 4, 64}, 21);
  check_backward({1, 2048, 4, 128}, 22);
  check_backward({3, 515, 3, 128}, 23);
}
TEST(AttentionDocuments, LongSequencesGpu) {
  if (LOOM_SIMT_EMULATION) GTEST_SKIP() << "GPU variant only";
  for (const Shape& s : {Shape{2, 1000, 4, 64}, Shape{3, 515, 3, 128}}) {
    const std::vector<int32_t> doc = document_starts(s.B, s.T, document_tokens(s.B, s.T, uint32_t(s.T), true));
    check_forward(s, 31, doc);
    check_backward(s, 32, doc);
  }
}

// Decoding position by position reproduces the full causal forward, and the caches hold
// exactly the k and v rows. A prefill of several positions in one call is covered too, long
// enough (Tn * D > 128) that the kernel's cache-writing loop goes round its 128 threads twice.
TEST(AttentionDecode, MatchesFullForward) {
  const Shape s = LOOM_SANITIZED ? Shape{1, 11, 2, 16} : Shape{2, 13, 2, 32};
  const int64_t C = s.C(), maxT = s.T + 3, prefill = 128 / s.D + 1;
  const std::vector<bf16> qkv = make_qkv(s, 77);
  const RefFwd ref = ref_forward(s, to_double(qkv));

  // The full forward on the device, for the comparison the decode path must meet.
  DeviceBuffer<bf16> d_qkv(qkv), d_full(size_t(s.B * s.T * C));
  DeviceBuffer<float> d_lse(size_t(s.B * s.H * s.T));
  d_full.poison();
  loom::cuda::attention_fwd(
      {.qkv = d_qkv.get(), .out = d_full.get(), .lse = d_lse.get(), .B = s.B, .T = s.T, .C = C, .H = s.H}, nullptr);
  const std::vector<double> full = to_double(d_full.download());

  // Caches larger than the sequence, poisoned: only rows 0..T-1 may be written and read.
  DeviceBuffer<bf16> d_kc(size_t(s.B * s.H * maxT * s.D)), d_vc(size_t(s.B * s.H * maxT * s.D));
  DeviceBuffer<int32_t> d_pos(1);
  d_kc.poison();
  d_vc.poison();
  std::vector<double> got(size_t(s.B * s.T * C)), want_ref(got.size()), want_full(got.size());
  for (int64_t p = 0; p < s.T;) {
    // A prefill of several positions first (the prompt), then one position a call.
    const int64_t tn = p == 0 ? prefill : 1;
    // This call's rows of qkv, [B, tn, 3C].
    std::vector<bf16> step(size_t(s.B * tn * 3 * C));
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t k = 0; k < tn; ++k)
        std::copy_n(qkv.begin() + (b * s.T + p + k) * 3 * C, 3 * C, step.begin() + (b * tn + k) * 3 * C);
    DeviceBuffer<bf16> d_step(step), d_out(size_t(s.B * tn * C));
    d_out.poison();
    d_pos.upload({int32_t(p)});
    loom::cuda::attention_decode({.qkv = d_step.get(), .kcache = d_kc.get(), .vcache = d_vc.get(), .out = d_out.get(),
                                  .B = s.B, .Tn = tn, .C = C, .H = s.H, .maxT = maxT, .pos0 = d_pos.get()},
                                 nullptr);
    const std::vector<bf16> o = d_out.download();
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t k = 0; k < tn; ++k)
        for (int64_t c = 0; c < C; ++c) {
          const size_t dst = size_t((b * s.T + p + k) * C + c);
          got[dst] = loom::from_bf16(o[size_t((b * tn + k) * C + c)]);
          want_ref[dst] = ref.out[dst];
          want_full[dst] = full[dst];
        }
    p += tn;
  }
  EXPECT_TRUE(close_and_unbiased("decode vs reference", got, want_ref, kBf16Out));
  EXPECT_TRUE(close_and_unbiased("decode vs full forward", got, want_full, kBf16Out));

  // Cache rows 0..T-1 are the k and v columns of each head, bit for bit.
  const std::vector<bf16> kc = d_kc.download(), vc = d_vc.download();
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t h = 0; h < s.H; ++h)
      for (int64_t t = 0; t < s.T; ++t)
        for (int64_t d = 0; d < s.D; ++d) {
          const size_t c = size_t(((b * s.H + h) * maxT + t) * s.D + d);
          const size_t q = size_t((b * s.T + t) * 3 * C + h * s.D + d);
          ASSERT_EQ(kc[c].bits, qkv[q + size_t(C)].bits) << "kcache b" << b << " h" << h << " t" << t << " d" << d;
          ASSERT_EQ(vc[c].bits, qkv[q + size_t(2 * C)].bits) << "vcache b" << b << " h" << h << " t" << t << " d" << d;
        }
}

// More than one 128-key chunk per query (the decode kernel's online softmax across chunks):
// the caches are filled directly up to pos0, then one call decodes the last positions.
TEST(AttentionDecode, LongCacheMatchesReference) {
  const Shape s{1, 141, 2, 32};
  const int64_t C = s.C(), maxT = 160, pos0 = 137, tn = s.T - pos0;
  const std::vector<bf16> qkv = make_qkv(s, 78);
  const RefFwd ref = ref_forward(s, to_double(qkv));
  std::vector<bf16> kc(size_t(s.B * s.H * maxT * s.D)), vc(kc.size());
  for (int64_t h = 0; h < s.H; ++h)
    for (int64_t t = 0; t < pos0; ++t)
      for (int64_t d = 0; d < s.D; ++d) {
        kc[size_t((h * maxT + t) * s.D + d)] = qkv[size_t(t * 3 * C + C + h * s.D + d)];
        vc[size_t((h * maxT + t) * s.D + d)] = qkv[size_t(t * 3 * C + 2 * C + h * s.D + d)];
      }
  const std::vector<bf16> step(qkv.begin() + pos0 * 3 * C, qkv.end());
  DeviceBuffer<bf16> d_kc(kc), d_vc(vc), d_step(step), d_out(size_t(tn * C));
  DeviceBuffer<int32_t> d_pos(std::vector<int32_t>{int32_t(pos0)});
  d_out.poison();
  loom::cuda::attention_decode({.qkv = d_step.get(), .kcache = d_kc.get(), .vcache = d_vc.get(), .out = d_out.get(),
                                .B = s.B, .Tn = tn, .C = C, .H = s.H, .maxT = maxT, .pos0 = d_pos.get()},
                               nullptr);
  const std::vector<double> want(ref.out.begin() + pos0 * C, ref.out.end());
  EXPECT_TRUE(close_and_unbiased("decode, 2 chunks", to_double(d_out.download()), want, kBf16Out));
}

// A cache position out of range (a caller's bug the device cannot report) gives NaN outputs and
// leaves the caches alone. Tn * D > 128: the kernel's NaN-writing loop goes round twice.
TEST(AttentionDecode, OutOfRangePositionGivesNaN) {
  const Shape s{2, 5, 2, 32};
  const int64_t C = s.C(), maxT = 8;
  const std::vector<bf16> qkv = make_qkv(s, 79), cache = random_bf16(size_t(s.B * s.H * maxT * s.D), 1.f, 80);
  for (const int32_t pos0 : {int32_t(maxT - s.T + 1), int32_t(-1)}) {
    SCOPED_TRACE("pos0=" + std::to_string(pos0));
    // Outputs start as numbers (poison would be NaN already).
    DeviceBuffer<bf16> d_qkv(qkv), d_kc(cache), d_vc(cache);
    DeviceBuffer<bf16> d_out(std::vector<bf16>(size_t(s.B * s.T * C), loom::to_bf16(1.f)));
    DeviceBuffer<int32_t> d_pos(std::vector<int32_t>{pos0});
    loom::cuda::attention_decode({.qkv = d_qkv.get(), .kcache = d_kc.get(), .vcache = d_vc.get(), .out = d_out.get(),
                                  .B = s.B, .Tn = s.T, .C = C, .H = s.H, .maxT = maxT, .pos0 = d_pos.get()},
                                 nullptr);
    const std::vector<bf16> out = d_out.download();
    EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](bf16 v) { return std::isnan(loom::from_bf16(v)); }));
    EXPECT_TRUE(same_bits("kcache", d_kc.download(), cache));
    EXPECT_TRUE(same_bits("vcache", d_vc.download(), cache));
  }
}

// Launchers refuse what the kernels cannot do, with a message naming the problem.
TEST(AttentionDeathTest, RejectsUnsupportedShapes) {
  if (LOOM_SANITIZED) GTEST_SKIP() << "death tests fork; not under the sanitizers";
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  DeviceBuffer<bf16> qkv(3 * 96 * 4), out(96 * 4);
  DeviceBuffer<float> lse(4 * 2);
  EXPECT_DEATH(loom::cuda::attention_fwd(
                   {.qkv = qkv.get(), .out = out.get(), .lse = lse.get(), .B = 1, .T = 4, .C = 96, .H = 2}, nullptr),
               "head dim 48 not in");
  EXPECT_DEATH(loom::cuda::attention_fwd(
                   {.qkv = qkv.get() + 1, .out = out.get(), .lse = lse.get(), .B = 1, .T = 4, .C = 64, .H = 2},
                   nullptr),
               "qkv is not 16-byte aligned");
}

// Emulator cost, printed (not asserted): the numbers that size the shapes above.
TEST(AttentionTiming, Emulated) {
  if (!LOOM_SIMT_EMULATION) GTEST_SKIP() << "emulator timing only";
  const Shape s{1, 128, 2, 32};
  const std::vector<bf16> qkv = make_qkv(s, 5);
  DeviceBuffer<bf16> d_qkv(qkv), d_out(size_t(s.T * s.C()));
  DeviceBuffer<float> d_lse(size_t(s.H * s.T));
  for (const FwdKernel k : fwd_kernels()) {
    const ForceFwdKernel force(k);
    const auto t0 = std::chrono::steady_clock::now();
    loom::cuda::attention_fwd(
        {.qkv = d_qkv.get(), .out = d_out.get(), .lse = d_lse.get(), .B = s.B, .T = s.T, .C = s.C(), .H = s.H},
        nullptr);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::printf("[ timing   ] attention_fwd %s, %s (%d blocks of %d threads): %.0f ms\n", s.str().c_str(), name(k),
                int(s.H), k == FwdKernel::kSm90 ? 384 : 128, ms);
  }
}

// Throughput on the device (printed): FLOPs 4 B H T^2 D / 2 forward (causal), 2.5x backward;
// each forward kernel, then each backward kernel with dQ by atomics and deterministic.
TEST(AttentionTiming, Gpu) {
  if (LOOM_SIMT_EMULATION) GTEST_SKIP() << "GPU variant only";
  for (int64_t D : {64, 128}) {
    const Shape s{4, 4096, 2048 / D, D};
    const int64_t C = s.C();
    const std::vector<bf16> qkv = make_qkv(s, 9), dout = random_bf16(size_t(s.B * s.T * C), 1.f, 10);
    DeviceBuffer<bf16> d_qkv(qkv), d_out(size_t(s.B * s.T * C)), d_dout(dout), d_dqkv(qkv.size());
    DeviceBuffer<float> d_lse(size_t(s.B * s.H * s.T)), d_scratch(loom::cuda::attention_bwd_scratch_floats(s.B, s.T, C, s.H));
    const loom::cuda::AttentionFwd f{
        .qkv = d_qkv.get(), .out = d_out.get(), .lse = d_lse.get(), .B = s.B, .T = s.T, .C = C, .H = s.H};
    loom::cuda::AttentionBwd bw{.dout = d_dout.get(), .qkv = d_qkv.get(), .out = d_out.get(), .lse = d_lse.get(),
                                .dqkv = d_dqkv.get(), .scratch = d_scratch.get(), .B = s.B, .T = s.T, .C = C,
                                .H = s.H};
    cudaEvent_t e0, e1;
    ASSERT_CUDA(cudaEventCreate(&e0));
    ASSERT_CUDA(cudaEventCreate(&e1));
    const int iters = 10;
    const double flops = 4.0 * s.B * s.H * double(s.T) * double(s.T) * double(D) / 2;
    // Milliseconds a call of `call` (after one warm-up call).
    auto time = [&](auto&& call) {
      call();
      EXPECT_EQ(cudaEventRecord(e0), cudaSuccess);
      for (int i = 0; i < iters; ++i) call();
      EXPECT_EQ(cudaEventRecord(e1), cudaSuccess);
      EXPECT_EQ(cudaEventSynchronize(e1), cudaSuccess);
      float ms = 0;
      EXPECT_EQ(cudaEventElapsedTime(&ms, e0, e1), cudaSuccess);
      return ms / iters;
    };
    for (const FwdKernel k : fwd_kernels()) {
      const ForceFwdKernel force(k);
      const double ms = time([&] { loom::cuda::attention_fwd(f, nullptr); });
      std::printf("[ timing   ] %s causal, %s: %.3f ms %.0f TFLOP/s\n", s.str().c_str(), name(k), ms,
                  flops / (ms * 1e-3) / 1e12);
    }
    for (const BwdKernel k : bwd_kernels(D))
      for (const bool deterministic : {false, true}) {
        const ForceBwdKernel force(k);
        bw.deterministic = deterministic;
        const double ms = time([&] { loom::cuda::attention_bwd(bw, nullptr); });
        std::printf("[ timing   ] %s causal, %s%s: %.3f ms %.0f TFLOP/s\n", s.str().c_str(), name(k),
                    deterministic ? " (deterministic dQ)" : "", ms, 2.5 * flops / (ms * 1e-3) / 1e12);
      }
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
  }
}

}  // namespace
