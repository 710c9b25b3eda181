// embedding_test.cpp: the CUDA embedding (embedding.cu) against the CPU reference
// (loom::ref::embedding_fwd/bwd, run in double on the same bf16-rounded inputs). One source
// for the emulator, TSan, ASan and real-GPU builds (cmake/LoomKernel.cmake).
// Cases cover the 16-byte pack path and the scalar path (C not a multiple of 8, or a
// misaligned table), a device-side pos0, ragged 256-column tiles, skewed token counts so that
// both the warp-per-run and the block-per-run sums run, and more than 2048 positions so that
// the sort's global merge steps run. Forward output is NaN-poisoned, gradients start nonzero
// (they accumulate), the int scratch is exactly the advertised size and poisoned, and two
// backward runs must agree bit for bit.
#include "kernels/common/cuda_compat.h"

#include <gtest/gtest.h>

#include <algorithm>
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
  void poison() { cudaMemset(get(), 0xFF, n_ * sizeof(T)); }  // NaN in bf16/f32, -1 in int
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

struct Case {
  int64_t B, T, C, V, maxT;
  int pos0;       // -1: no pos0 pointer (position 0); else a device int holding it
  double skew;    // probability that a position gets token 3 (long runs)
  int misalign;   // elements of offset on the bf16 tables/gradients: forces the scalar path
};

std::string name(const Case& c) {
  std::ostringstream os;
  os << "B=" << c.B << " T=" << c.T << " C=" << c.C << " V=" << c.V << " maxT=" << c.maxT << " pos0=" << c.pos0
     << " skew=" << c.skew << (c.misalign ? " misaligned" : "");
  return os.str();
}

std::vector<Case> cases() {
  std::vector<Case> v = {
      {2, 9, 64, 40, 16, -1, 0.0, 0},     // vector, one partial tile, short runs
      {4, 40, 300, 20, 48, 5, 0.5, 0},    // scalar (C % 8), 2 tiles, long runs, pos0
      {3, 50, 512, 10, 50, -1, 0.6, 0},   // vector, 2 whole tiles, long runs
      {2, 17, 48, 30, 20, 3, 0.3, 1},     // scalar: misaligned tables
      {1, 1, 8, 5, 4, 2, 0.0, 0},         // one position
      {5, 500, 16, 300, 512, -1, 0.1, 0}, // 2500 positions: global sort steps
  };
  if (LOOM_SANITIZED)
    v = {{2, 9, 64, 40, 16, -1, 0.0, 0}, {3, 30, 100, 12, 40, 4, 0.6, 0}, {2, 13, 48, 30, 20, 3, 0.3, 1}};
  if (!LOOM_SIMT_EMULATION) {
    v.push_back({8, 1024, 768, 50257, 1024, -1, 0.03, 0});  // GPT-2 small, a frequent token
    v.push_back({4, 1024, 768, 50257, 2048, 700, 0.0, 0});
    v.push_back({64, 1024, 768, 50257, 1024, -1, 0.3, 0});  // 65536 positions, a very long run
  }
  return v;
}

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
std::vector<float> random_f32(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> v(n);
  for (auto& e : v) e = d(rng) + 2.f;
  return v;
}
std::vector<int32_t> random_tokens(const Case& c, std::mt19937& rng) {
  std::uniform_int_distribution<int32_t> tok(0, int32_t(c.V - 1));
  std::bernoulli_distribution frequent(c.skew);
  std::vector<int32_t> t(c.B * c.T);
  for (auto& e : t) e = frequent(rng) ? 3 % int32_t(c.V) : tok(rng);
  return t;
}
std::vector<double> to_double(const std::vector<bf16>& v) {
  std::vector<double> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = loom::from_bf16(v[i]);
  return r;
}

// The comparison of DESIGN.md §6 with a per-element atol: |got - ref| <= atol[i] + rtol|ref|.
::testing::AssertionResult all_close(const std::string& what, const std::vector<double>& got,
                                     const std::vector<double>& ref, const std::vector<double>& atol, double rtol) {
  size_t worst = 0, nans = 0, bad = 0;
  double worst_ratio = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) {
      if (nans++ == 0) worst = i;
      worst_ratio = INFINITY;
      continue;
    }
    const double ratio = std::fabs(got[i] - ref[i]) / (atol[i] + rtol * std::fabs(ref[i]));
    bad += ratio > 1;
    if (ratio > worst_ratio) worst_ratio = ratio, worst = i;
  }
  std::ostringstream os;
  os << what << ": worst element " << worst << " got " << got[worst] << " ref " << ref[worst] << " (error "
     << worst_ratio << "x tolerance); " << nans << " NaN/inf, " << bad << " out of tolerance, of " << got.size();
  if (nans || bad) return ::testing::AssertionFailure() << os.str();
  return ::testing::AssertionSuccess();
}

// ---- forward ---------------------------------------------------------------------------

TEST(EmbeddingFwd, MatchesReference) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(name(c));
    std::mt19937 rng(uint32_t(c.B * 1000 + c.T * 10 + c.C));
    const auto tokens = random_tokens(c, rng);
    const auto wte = random_bf16(c.V * c.C, rng, 1.f), wpe = random_bf16(c.maxT * c.C, rng, 0.5f);
    const size_t o = size_t(c.misalign);
    DeviceBuffer<int32_t> dtok(tokens), dpos0(std::vector<int32_t>{c.pos0});
    DeviceBuffer<bf16> dwte(wte, o), dwpe(wpe, o), dout(c.B * c.T * c.C, o);
    dout.poison();
    loom::cuda::EmbeddingFwd a{dtok.get(), dwte.get(), dwpe.get(), dout.get(), c.B, c.T, c.C, c.V, c.maxT,
                               c.pos0 >= 0 ? dpos0.get() : nullptr};
    loom::cuda::embedding_fwd(a, nullptr);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);

    const auto wted = to_double(wte), wped = to_double(wpe);
    std::vector<double> ref(c.B * c.T * c.C);
    loom::ref::EmbeddingArgs<double> ra{tokens.data(), wted.data(), wped.data(), ref.data(), c.B, c.T, c.C, c.V,
                                        c.maxT, std::max(c.pos0, 0)};
    loom::ref::embedding_fwd(ra);
    // bf16 output of an exact f32 sum of two bf16 values: one rounding, 2^-9 relative.
    EXPECT_TRUE(all_close("out", to_double(dout.download()), ref, std::vector<double>(ref.size(), 1e-4), 4e-3));
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
  in.dout = random_bf16(c.B * c.T * c.C, rng, 1.f);
  in.dwte0 = random_f32(c.V * c.C, rng);
  in.dwpe0 = random_f32(c.maxT * c.C, rng);
  return in;
}

struct BwdOutputs {
  std::vector<float> dwte, dwpe;
};

BwdOutputs run_backward(const Case& c, const BwdInputs& in) {
  const size_t o = size_t(c.misalign);
  DeviceBuffer<int32_t> dtok(in.tokens), dpos0(std::vector<int32_t>{c.pos0});
  DeviceBuffer<bf16> ddout(in.dout, o);
  DeviceBuffer<float> ddwte(in.dwte0, o), ddwpe(in.dwpe0, o);
  // Exactly the advertised size, filled with -1: an overrun is an ASan report, and a kernel
  // that relied on zeroed scratch would go wrong.
  DeviceBuffer<int32_t> scratch(loom::cuda::embedding_bwd_scratch_ints(c.B * c.T, c.V));
  scratch.poison();
  loom::cuda::EmbeddingBwd a{ddout.get(), dtok.get(), ddwte.get(), ddwpe.get(), scratch.get(), c.B, c.T, c.C, c.V,
                             c.maxT,      c.pos0 >= 0 ? dpos0.get() : nullptr};
  loom::cuda::embedding_bwd(a, nullptr);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  return {ddwte.download(), ddwpe.download()};
}

TEST(EmbeddingBwd, MatchesReference) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(name(c));
    const BwdInputs in = make_bwd_inputs(c);
    const BwdOutputs out = run_backward(c, in);

    const auto dout = to_double(in.dout);
    std::vector<double> dwte(in.dwte0.begin(), in.dwte0.end()), dwpe(in.dwpe0.begin(), in.dwpe0.end());
    const int64_t p0 = std::max(c.pos0, 0);
    loom::ref::EmbeddingBwdArgs<double> ra{dout.data(), in.tokens.data(), dwte.data(), dwpe.data(), c.B, c.T, c.C,
                                           c.V,         c.maxT,           p0};
    loom::ref::embedding_bwd(ra);
    // The scale of each f32 sum: the same reference on |terms|. A float sum's error is bounded
    // by its depth times eps times that scale; 1e-5 leaves room for a few hundred sequential
    // adds (a long run summed by one warp is the deepest).
    std::vector<double> adout(dout.size()), mte(dwte.size()), mpe(dwpe.size());
    for (size_t i = 0; i < dout.size(); ++i) adout[i] = std::fabs(dout[i]);
    for (size_t i = 0; i < mte.size(); ++i) mte[i] = std::fabs(in.dwte0[i]);
    for (size_t i = 0; i < mpe.size(); ++i) mpe[i] = std::fabs(in.dwpe0[i]);
    loom::ref::EmbeddingBwdArgs<double> rm{adout.data(), in.tokens.data(), mte.data(), mpe.data(), c.B, c.T, c.C,
                                           c.V,          c.maxT,           p0};
    loom::ref::embedding_bwd(rm);
    for (auto& m : mte) m *= 1e-5;
    for (auto& m : mpe) m *= 1e-5;
    EXPECT_TRUE(all_close("dwte", std::vector<double>(out.dwte.begin(), out.dwte.end()), dwte, mte, 1e-6));
    EXPECT_TRUE(all_close("dwpe", std::vector<double>(out.dwpe.begin(), out.dwpe.end()), dwpe, mpe, 1e-6));
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
    EXPECT_EQ(0, std::memcmp(a.dwte.data(), b.dwte.data(), a.dwte.size() * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(a.dwpe.data(), b.dwpe.data(), a.dwpe.size() * sizeof(float)));
  }
}

}  // namespace

// ---- context embedding (feed-forward LM) --------------------------------------------------
// context_tokens + embedding_fwd/bwd without a position table against the reference
// context_embedding_fwd/bwd, with padding before the window and a padding token inside it.
TEST(ContextEmbedding, MatchesReference) {
  struct Ctx {
    int64_t B, T, E, V;
    int n;
  };
  for (const Ctx& c : {Ctx{2, 7, 16, 11, 3}, Ctx{3, 5, 24, 9, 1}, Ctx{1, 4, 8, 6, 5}}) {
    SCOPED_TRACE("B=" + std::to_string(c.B) + " T=" + std::to_string(c.T) + " n=" + std::to_string(c.n));
    std::mt19937 rng(uint32_t(c.B * 31 + c.T * 7 + c.n));
    const int pad = int(c.V) - 1;
    std::uniform_int_distribution<int32_t> tok(0, pad);  // pad itself can occur in the window
    std::vector<int32_t> tokens(c.B * c.T);
    for (auto& t : tokens) t = tok(rng);
    const auto wte = random_bf16(c.V * c.E, rng, 1.f);
    const int64_t rows = c.B * c.T * c.n;
    DeviceBuffer<int32_t> dtok(tokens), dctx(rows);
    DeviceBuffer<bf16> dwte(wte), dout(rows * c.E);
    dout.poison();
    loom::cuda::context_tokens(dtok.get(), dctx.get(), c.B, c.T, c.n, pad, nullptr);
    loom::cuda::embedding_fwd({dctx.get(), dwte.get(), nullptr, dout.get(), rows, 1, c.E, c.V, 1, nullptr}, nullptr);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    const auto wted = to_double(wte);
    std::vector<double> ref(rows * c.E);
    loom::ref::context_embedding_fwd<double>({tokens.data(), wted.data(), ref.data(), c.B, c.T, c.E, c.V, c.n, pad});
    EXPECT_TRUE(all_close("out", to_double(dout.download()), ref, std::vector<double>(ref.size(), 1e-6), 1e-6));

    const auto dy = random_bf16(rows * c.E, rng, 1.f);
    const auto g0 = random_f32(c.V * c.E, rng);
    DeviceBuffer<bf16> ddy(dy);
    DeviceBuffer<float> dg(g0);
    DeviceBuffer<int32_t> scratch(loom::cuda::embedding_bwd_scratch_ints(rows, c.V));
    scratch.poison();
    loom::cuda::embedding_bwd({ddy.get(), dctx.get(), dg.get(), nullptr, scratch.get(), rows, 1, c.E, c.V, 1, nullptr},
                              nullptr);
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    const auto dyd = to_double(dy);
    std::vector<double> gref(g0.begin(), g0.end());
    loom::ref::context_embedding_bwd<double>({dyd.data(), tokens.data(), gref.data(), c.B, c.T, c.E, c.V, c.n, pad});
    const auto got = dg.download();
    EXPECT_TRUE(all_close("dwte", std::vector<double>(got.begin(), got.end()), gref,
                          std::vector<double>(gref.size(), 1e-4), 1e-5));
  }
}
