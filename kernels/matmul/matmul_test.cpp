// matmul_test.cpp: the CUDA bias gradient (matmul.cu, bias_grad) against the CPU reference
// (loom::ref::linear_bwd's db, run in double on the same bf16-rounded dy). One source for the
// emulator, TSan, ASan and real-GPU builds (cmake/LoomKernel.cmake). Shapes cover the 16-byte
// pack path, the scalar path (M not a multiple of 8, or a misaligned dy), ragged column tiles,
// one and many row chunks; db starts nonzero (the kernel accumulates), the scratch is exactly
// the advertised size and NaN-filled, and two runs must agree bit for bit.
#include "kernels/common/cuda_compat.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "kernels/matmul/matmul.h"

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
  void poison() { cudaMemset(get(), 0xFF, n_ * sizeof(T)); }  // NaN in bf16 and f32
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
  std::normal_distribution<float> d(0.2f, 1.f);
  Inputs in;
  in.dy.resize(sh.N * sh.M);
  for (auto& e : in.dy) {
    float f = d(rng);
    if (std::fabs(f) < 1e-3f) f = 1e-3f;  // never zero
    e = loom::to_bf16(f);
  }
  in.db0.resize(sh.M);
  for (auto& e : in.db0) e = d(rng) + 3.f;
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
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  return db.download();
}

TEST(BiasGrad, MatchesReference) {
  for (const Shape& sh : shapes()) {
    SCOPED_TRACE(name(sh));
    const Inputs in = make_inputs(sh);
    const std::vector<float> got = run(sh, in);

    std::vector<double> dy(in.dy.size()), db(in.db0.begin(), in.db0.end());
    for (size_t i = 0; i < dy.size(); ++i) dy[i] = loom::from_bf16(in.dy[i]);
    loom::ref::LinearBwdArgs<double> ra{dy.data(), nullptr, nullptr, nullptr, nullptr, db.data(), sh.N, 0, sh.M};
    loom::ref::linear_bwd(ra);

    // f32 sums against a double reference: the error of a float sum is bounded by its
    // depth times eps times the sum of |terms|, hence the per-column atol; 1e-5 leaves room
    // for a few hundred sequential adds.
    size_t worst = 0, bad = 0, nans = 0;
    double worst_ratio = 0;
    for (int64_t m = 0; m < sh.M; ++m) {
      double mag = std::fabs(double(in.db0[m]));
      for (int64_t n = 0; n < sh.N; ++n) mag += std::fabs(dy[n * sh.M + m]);
      if (!std::isfinite(got[m])) {
        if (nans++ == 0) worst = m;
        worst_ratio = INFINITY;
        continue;
      }
      const double ratio = std::fabs(got[m] - db[m]) / (1e-5 * mag);
      bad += ratio > 1;
      if (ratio > worst_ratio) worst_ratio = ratio, worst = m;
    }
    EXPECT_TRUE(nans == 0 && bad == 0) << "db: worst column " << worst << " got " << got[worst] << " ref "
                                       << db[worst] << " (error " << worst_ratio << "x tolerance); " << nans
                                       << " NaN/inf, " << bad << " out of tolerance, of " << sh.M;
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
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
}

TEST(BiasGrad, ScratchIsBounded) {
  EXPECT_LE(loom::cuda::bias_grad_scratch_floats(int64_t(1) << 24, 768), size_t(1024) * 768);
  EXPECT_GE(loom::cuda::bias_grad_scratch_floats(1, 768), size_t(768));
  loom::cuda::bias_grad(nullptr, nullptr, nullptr, 0, 768, nullptr);  // nothing to do: no launch
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

}  // namespace
