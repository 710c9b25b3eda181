// softmax_xent_test.cpp: the classifier-loss kernels (softmax_xent.cu) against the CPU
// reference in double, on the same bf16-rounded logits. One source for the emulator, its TSan
// and ASan builds, and a real GPU (cmake/LoomKernel.cmake).
//
// The shapes are chosen for the code paths, not for size: V = 256 and 300 take the
// warp-per-row kernels (300: rows alternate between 16-byte aligned and not, so heads and
// tails run), 4097 / 8192 / 50304 the block-per-row kernels, and an offset base pointer
// misaligns every row. Outputs start as NaN; inputs are random and never zero.
#include "kernels/common/cuda_compat.h"
#include "kernels/softmax_xent/softmax_xent.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace loom {
namespace {

#define ASSERT_CUDA(expr)                                                                 \
  do {                                                                                    \
    const cudaError_t e_ = (expr);                                                        \
    ASSERT_EQ(e_, cudaSuccess) << #expr << ": " << cudaGetErrorString(e_);               \
  } while (0)

// Device memory for one test, copied in and out whole.
template <class T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n) : n_(n) {
    if (cudaMalloc(&p_, std::max<size_t>(n, 1) * sizeof(T)) != cudaSuccess) p_ = nullptr;
  }
  explicit DeviceBuffer(const std::vector<T>& h) : DeviceBuffer(h.size()) { upload(h); }
  ~DeviceBuffer() { cudaFree(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  T* get() const { return p_; }
  void upload(const std::vector<T>& h) { cudaMemcpy(p_, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice); }
  // 0xFF bytes: NaN in f32 and bf16, so an element the kernel forgot reads as wrong.
  void poison() { cudaMemset(p_, 0xFF, n_ * sizeof(T)); }
  std::vector<T> download() const {
    std::vector<T> h(n_);
    cudaDeviceSynchronize();
    cudaMemcpy(h.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost);
    return h;
  }

 private:
  T* p_ = nullptr;
  size_t n_;
};

// The worst element under max |got - ref| <= atol + rtol |ref| (DESIGN.md §6); NaN never
// passes.
struct Worst {
  double ratio = 0, got = 0, ref = 0;
  int64_t index = -1;
  void add(int64_t i, double g, double r, double atol, double rtol) {
    const double q = std::isnan(g) || std::isnan(r) ? INFINITY : std::fabs(g - r) / (atol + rtol * std::fabs(r));
    if (index < 0 || q > ratio || std::isnan(q)) {
      ratio = q;
      index = i;
      got = g;
      ref = r;
    }
  }
  // Printed for passing checks too, so the logs show each margin.
  bool ok(const char* what) const {
    std::printf("[ worst    ] %s: %s\n", what, str().c_str());
    return index >= 0 && ratio <= 1.0;
  }
  std::string str() const {
    char b[160];
    std::snprintf(b, sizeof b, "worst element %lld: got %.9g ref %.9g (%.3g x tolerance)", static_cast<long long>(index),
                  got, ref, ratio);
    return b;
  }
};

// Tolerances per dtype. f32: the kernels' single-precision exp/log against double. bf16:
// one rounding of the output (half an ulp, 2^-9 relative) plus the f32 error, with margin.
constexpr double kF32Atol = 1e-5, kF32Rtol = 1e-5;
constexpr double kBf16Rtol = 1.0 / 128;

struct Shape {
  int64_t N, V;
  int64_t offset;  // elements between the allocation and the first logit: misaligns rows
};

std::string name(const Shape& s) {
  return "N=" + std::to_string(s.N) + " V=" + std::to_string(s.V) + " offset=" + std::to_string(s.offset);
}

// Sanitizer builds run one shape per code path (warp rows aligned and not, block rows
// unaligned by V and by the base pointer) on fewer rows: each launch there costs about half a
// second of thread start-up under TSan.
std::vector<Shape> shapes() {
  if (LOOM_SANITIZED) return {{9, 256, 0}, {5, 300, 0}, {2, 4097, 0}, {2, 8192, 3}};
  return {{37, 256, 0}, {19, 300, 0}, {9, 5, 0}, {4, 4097, 0}, {5, 8192, 0}, {3, 50304, 0}, {4, 8192, 3}, {11, 256, 1}};
}

struct Problem {
  std::vector<bf16> logits;   // offset + N * V, the first `offset` unused
  std::vector<int32_t> targets;
  std::vector<double> z;      // the bf16 logits as double, [N, V]
};

Problem make_problem(const Shape& s, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 2.5f);
  std::uniform_int_distribution<int32_t> ud(0, int32_t(s.V - 1));
  Problem p;
  p.logits.resize(size_t(s.offset + s.N * s.V));
  p.z.resize(size_t(s.N * s.V));
  for (size_t i = 0; i < p.logits.size(); ++i) {
    float x = nd(rng);
    if (to_bf16(x).bits == 0 || to_bf16(x).bits == 0x8000) x = 0.5f;  // never zero
    p.logits[i] = to_bf16(x);
  }
  for (size_t i = 0; i < p.z.size(); ++i) p.z[i] = from_bf16(p.logits[size_t(s.offset) + i]);
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
  ref::softmax_xent_fwd<double>({p.z.data(), p.targets.data(), &loss, lse.data(), s.N, s.V});
}

TEST(SoftmaxXent, ForwardMatchesReference) {
  uint32_t seed = 1;
  for (const Shape& s : shapes()) {
    SCOPED_TRACE(name(s));
    const Problem p = make_problem(s, seed++);
    DeviceBuffer<bf16> logits(p.logits);
    DeviceBuffer<int32_t> targets(p.targets);
    DeviceBuffer<float> lse(size_t(s.N)), loss(1), scratch(cuda::softmax_xent_scratch_floats(s.N));
    lse.poison();
    loss.poison();
    scratch.poison();
    cuda::softmax_xent_fwd({logits.get() + s.offset, targets.get(), lse.get(), loss.get(), scratch.get(), s.N, s.V},
                           nullptr);
    ASSERT_CUDA(cudaDeviceSynchronize());

    std::vector<double> ref_lse;
    double ref_loss = 0;
    reference_fwd(s, p, ref_lse, ref_loss);
    const auto got_lse = lse.download();
    Worst w;
    for (int64_t n = 0; n < s.N; ++n) w.add(n, got_lse[size_t(n)], ref_lse[size_t(n)], kF32Atol, kF32Rtol);
    EXPECT_TRUE(w.ok("lse")) << "lse: " << w.str();
    Worst wl;
    wl.add(0, loss.download()[0], ref_loss, kF32Atol, kF32Rtol);
    EXPECT_TRUE(wl.ok("loss")) << "loss: " << wl.str();
  }
}

// The mean is reduced in a fixed order: two runs give the same bits.
TEST(SoftmaxXent, ForwardIsDeterministic) {
  const Shape s{LOOM_SANITIZED ? 40 : 300, 64, 0};
  const Problem p = make_problem(s, 99);
  DeviceBuffer<bf16> logits(p.logits);
  DeviceBuffer<int32_t> targets(p.targets);
  DeviceBuffer<float> lse(size_t(s.N)), loss(1), scratch(cuda::softmax_xent_scratch_floats(s.N));
  uint32_t bits[2];
  for (int run = 0; run < 2; ++run) {
    loss.poison();
    cuda::softmax_xent_fwd({logits.get(), targets.get(), lse.get(), loss.get(), scratch.get(), s.N, s.V}, nullptr);
    const float l = loss.download()[0];
    ASSERT_FALSE(std::isnan(l));
    std::memcpy(&bits[run], &l, 4);
  }
  EXPECT_EQ(bits[0], bits[1]);
}

// A target outside the vocabulary must show, not read out of bounds.
TEST(SoftmaxXent, BadTargetGivesNaN) {
  const Shape s{4, 256, 0};
  Problem p = make_problem(s, 7);
  p.targets[2] = int32_t(s.V);
  DeviceBuffer<bf16> logits(p.logits);
  DeviceBuffer<int32_t> targets(p.targets);
  DeviceBuffer<float> lse(size_t(s.N)), loss(1), scratch(cuda::softmax_xent_scratch_floats(s.N));
  cuda::softmax_xent_fwd({logits.get(), targets.get(), lse.get(), loss.get(), scratch.get(), s.N, s.V}, nullptr);
  EXPECT_TRUE(std::isnan(loss.download()[0]));
}

// Backward out of place and in place (dlogits over the logits), from the reference lse so
// that a forward bug cannot hide a backward one.
TEST(SoftmaxXent, BackwardMatchesReference) {
  uint32_t seed = 100;
  for (const Shape& s : shapes()) {
    for (const bool in_place : {false, true}) {
      SCOPED_TRACE(name(s) + (in_place ? " in place" : " out of place"));
      const Problem p = make_problem(s, seed++);
      std::vector<double> ref_lse;
      double ref_loss = 0;
      reference_fwd(s, p, ref_lse, ref_loss);
      const double dloss = 1.75 * double(s.N);  // scale = dloss / N = 1.75
      std::vector<double> ref_d(size_t(s.N * s.V));
      ref::softmax_xent_bwd<double>({&dloss, p.z.data(), p.targets.data(), ref_lse.data(), ref_d.data(), s.N, s.V});

      std::vector<float> lse_f(ref_lse.begin(), ref_lse.end());
      DeviceBuffer<bf16> logits(p.logits), out(p.logits.size());
      DeviceBuffer<int32_t> targets(p.targets);
      DeviceBuffer<float> lse(lse_f), dl(std::vector<float>{float(dloss)});
      out.poison();
      bf16* d = (in_place ? logits.get() : out.get()) + s.offset;
      cuda::softmax_xent_bwd({dl.get(), logits.get() + s.offset, targets.get(), lse.get(), d, s.N, s.V}, nullptr);
      ASSERT_CUDA(cudaDeviceSynchronize());
      const auto got = (in_place ? logits : out).download();
      Worst w;
      for (int64_t i = 0; i < s.N * s.V; ++i)
        w.add(i, from_bf16(got[size_t(s.offset + i)]), ref_d[size_t(i)], 1e-7, kBf16Rtol);
      EXPECT_TRUE(w.ok("dlogits")) << "dlogits: " << w.str();
    }
  }
}

TEST(SoftmaxXent, SoftmaxMatchesReference) {
  uint32_t seed = 200;
  for (const Shape& s : shapes()) {
    SCOPED_TRACE(name(s));
    const Problem p = make_problem(s, seed++);
    std::vector<double> ref_y(size_t(s.N * s.V));
    ref::softmax_rows<double>(p.z.data(), ref_y.data(), s.N, s.V);
    DeviceBuffer<bf16> x(p.logits), y(p.logits.size());
    y.poison();
    cuda::softmax_fwd(x.get() + s.offset, y.get() + s.offset, s.N, s.V, nullptr);
    ASSERT_CUDA(cudaDeviceSynchronize());
    const auto got = y.download();
    Worst w;
    for (int64_t i = 0; i < s.N * s.V; ++i)
      w.add(i, from_bf16(got[size_t(s.offset + i)]), ref_y[size_t(i)], 1e-9, kBf16Rtol);
    EXPECT_TRUE(w.ok("softmax")) << "softmax: " << w.str();
  }
}

}  // namespace
}  // namespace loom
