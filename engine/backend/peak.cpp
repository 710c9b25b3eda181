// peak.cpp: see peak.h. The table holds NVIDIA's datasheet numbers for dense BF16 tensor-core
// math with FP32 accumulation (the sparsity figures halved), per GPU, and the memory total the
// driver reports for it (nvidia-smi's MiB; e.g. 143771 MiB for the 141 GB H200).
#include "engine/backend/peak.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <regex>
#include <vector>

#include "core/check.h"
#include "engine/backend/backend.h"
#include "kernels/matmul/matmul.h"

namespace loom {

namespace {

struct PeakRow {
  const char* pattern;  // matched against the device name, first match wins
  GpuSpec spec;
};
constexpr uint64_t kMiB = uint64_t{1} << 20;
// More specific names first ("H100 PCIe" before "H100", "A100 40GB" before "A100").
const std::vector<PeakRow>& peak_table() {
  static const std::vector<PeakRow> rows = {
      {R"(B200)", {"b200", "NVIDIA B200", 2250.0e12, 183359 * kMiB}},                  // Blackwell HGX B200
      {R"(H200 NVL)", {"h200-nvl", "NVIDIA H200 NVL", 835.5e12, 143771 * kMiB}},      // H200 NVL (PCIe card)
      {R"(H200)", {"h200", "NVIDIA H200 SXM", 989.5e12, 143771 * kMiB}},              // H200 SXM, GH200: 141 GB
      {R"(H100 PCIe)", {"h100-pcie", "NVIDIA H100 PCIe", 756.5e12, 81559 * kMiB}},    // H100 PCIe 80 GB
      {R"(H100 NVL)", {"h100-nvl", "NVIDIA H100 NVL", 835.5e12, 95830 * kMiB}},       // H100 NVL 94 GB
      {R"(H100|H800)", {"h100", "NVIDIA H100 SXM5", 989.5e12, 81559 * kMiB}},         // "NVIDIA H100 80GB HBM3", H800
      {R"(A100.*40GB)", {"a100-40gb", "NVIDIA A100 40GB", 312.0e12, 40960 * kMiB}},   // A100 SXM4 and PCIe, 40 GB
      {R"(A100|A800)", {"a100", "NVIDIA A100 80GB", 312.0e12, 81920 * kMiB}},         // A100 SXM4 and PCIe, 80 GB
      {R"(L40S)", {"l40s", "NVIDIA L40S", 362.05e12, 46068 * kMiB}},                  // L40S 48 GB
      {R"(L40\b)", {"l40", "NVIDIA L40", 181.05e12, 46068 * kMiB}},                   // L40 48 GB
      {R"(L4\b)", {"l4", "NVIDIA L4", 121.0e12, 23034 * kMiB}},                       // L4 24 GB
      {R"(A10\b)", {"a10", "NVIDIA A10", 125.0e12, 23028 * kMiB}},                    // A10 24 GB
  };
  return rows;
}

}  // namespace

double gpu_peak_bf16_flops(const std::string& name) {
  for (const PeakRow& r : peak_table())
    if (std::regex_search(name, std::regex(r.pattern))) return r.spec.bf16_flops;
  return 0;
}

const GpuSpec* find_gpu(const std::string& key) {
  std::string k = key;
  for (char& c : k) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const PeakRow& r : peak_table())
    if (k == r.spec.key) return &r.spec;
  return nullptr;
}

std::vector<std::string> gpu_keys() {
  std::vector<std::string> keys;
  for (const PeakRow& r : peak_table()) keys.emplace_back(r.spec.key);
  return keys;
}

double measure_cpu_sgemm_flops() {
  const int n = 1024;
  std::vector<float> a(static_cast<size_t>(n) * n, 0.5f), b(a.size(), 0.25f), c(a.size());
  auto now = [] { return std::chrono::steady_clock::now(); };
  // The best of loom's slabs and the BLAS's own threading, alternated so that a busy moment
  // of the machine does not favour either: the ceiling is the faster way to run the product.
  auto slabs = [&] { ref::gemm<float>(false, false, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n); };
  auto blas = [&] { ref::gemm_blas_threads(n, n, n, a.data(), b.data(), c.data()); };
  slabs();  // warm-up
  blas();
  double best = 1e30;
  for (int r = 0; r < 5; ++r) {
    for (int way = 0; way < 2; ++way) {
      const auto t0 = now();
      way == 0 ? slabs() : blas();
      best = std::min(best, std::chrono::duration<double>(now() - t0).count());
    }
  }
  return 2.0 * n * n * n / best;
}

double measure_cpu_stream_bytes_per_s() {
  const int64_t n = int64_t{16} << 20;  // 64 MiB a array: far past any last-level cache
  std::vector<float> a(n), b(n), c(n);
  auto now = [] { return std::chrono::steady_clock::now(); };
  // First touch on the threads that use the pages, as the run's buffers are written.
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    a[i] = 0;
    b[i] = 1.0f + static_cast<float>(i & 7);
    c[i] = 0.5f;
  }
  double best = 1e30;
  for (int r = 0; r < 5; ++r) {
    const auto t0 = now();
    const float s = 0.25f + r;
    float* pa = a.data();
    const float *pb = b.data(), *pc = c.data();
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) pa[i] = pb[i] + s * pc[i];
    best = std::min(best, std::chrono::duration<double>(now() - t0).count());
  }
  LOOM_CHECK(a[n - 1] == b[n - 1] + 4.25f * c[n - 1], "stream triad: wrong result");
  return 12.0 * static_cast<double>(n) / best;
}

Peak device_peak(Backend& be) {
  char b[160];
  if (be.name() == "cpu") {
    const double f = measure_cpu_sgemm_flops();
    std::snprintf(b, sizeof b, "this CPU's sgemm ceiling measured now: %.1f GFLOP/s", f / 1e9);
    return {f, b, true};
  }
  const std::string dev = be.device_name();
  const double f = gpu_peak_bf16_flops(dev);
  if (f > 0)
    std::snprintf(b, sizeof b, "%s: %.1f TFLOP/s dense bf16 (datasheet)", dev.c_str(), f / 1e12);
  else
    std::snprintf(b, sizeof b, "%s: not in the peak table (engine/backend/peak.cpp), no MFU", dev.c_str());
  return {f, b};
}

double mfu(double flops_per_s, const Peak& peak, int devices) {
  if (!(peak.flops > 0) || devices < 1) return NAN;
  const double u = flops_per_s / (peak.flops * devices);
  return u > 0 && u <= 1.0 ? u : NAN;
}

double mfu(double flops_per_token, double tokens_per_s, const Peak& peak, int devices) {
  return mfu(flops_per_token * tokens_per_s, peak, devices);
}

std::string remeasure_if_beaten(Peak& peak, double flops_per_s) {
  if (!peak.measured || !(flops_per_s > peak.flops) || peak.remeasures >= kMaxRemeasures) return "";
  ++peak.remeasures;
  const double was = peak.flops;
  peak.flops = std::max(peak.flops, measure_cpu_sgemm_flops());
  char b[256];
  std::snprintf(b, sizeof b,
                "MFU: the model ran at %.1f GFLOP/s, above the sgemm ceiling measured at %.1f (other work held the "
                "cores then); measured again (%d of %d): %.1f GFLOP/s",
                flops_per_s / 1e9, was / 1e9, peak.remeasures, kMaxRemeasures, peak.flops / 1e9);
  const std::string line = b;
  std::snprintf(b, sizeof b, "this CPU's sgemm ceiling measured again during the run: %.1f GFLOP/s", peak.flops / 1e9);
  peak.what = b;
  return line;
}

}  // namespace loom
