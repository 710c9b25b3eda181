// peak.cpp: see peak.h. The table holds NVIDIA's datasheet numbers for dense BF16 tensor-core
// math with FP32 accumulation (the sparsity figures halved), per GPU.
#include "engine/backend/peak.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <regex>
#include <vector>

#include "engine/backend/backend.h"
#include "kernels/matmul/matmul.h"

namespace loom {

namespace {

struct PeakRow {
  const char* pattern;  // matched against the device name, first match wins
  double tflops;
};
// More specific names first ("H100 PCIe" before "H100").
const std::vector<PeakRow>& peak_table() {
  static const std::vector<PeakRow> rows = {
      {R"(B200)", 2250.0},       // Blackwell HGX B200
      {R"(H200 NVL)", 835.5},    // H200 NVL (PCIe card)
      {R"(H200)", 989.5},        // H200 SXM, GH200
      {R"(H100 PCIe)", 756.5},   // H100 PCIe
      {R"(H100 NVL)", 835.5},    // H100 NVL
      {R"(H100|H800)", 989.5},   // H100 SXM5 ("NVIDIA H100 80GB HBM3"), H800
      {R"(A100|A800)", 312.0},   // A100 SXM4 and PCIe, 40 and 80 GB
      {R"(L40S)", 362.05},       // L40S
      {R"(L40\b)", 181.05},      // L40
      {R"(L4\b)", 121.0},        // L4
      {R"(A10\b)", 125.0},       // A10
  };
  return rows;
}

}  // namespace

double gpu_peak_bf16_flops(const std::string& name) {
  for (const PeakRow& r : peak_table())
    if (std::regex_search(name, std::regex(r.pattern))) return r.tflops * 1e12;
  return 0;
}

double measure_cpu_sgemm_flops() {
  const int n = 1024;
  std::vector<float> a(static_cast<size_t>(n) * n, 0.5f), b(a.size(), 0.25f), c(a.size());
  auto now = [] { return std::chrono::steady_clock::now(); };
  ref::gemm<float>(false, false, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n);  // warm-up
  double best = 1e30;
  for (int r = 0; r < 5; ++r) {
    const auto t0 = now();
    ref::gemm<float>(false, false, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n);
    best = std::min(best, std::chrono::duration<double>(now() - t0).count());
  }
  return 2.0 * n * n * n / best;
}

Peak device_peak(Backend& be) {
  char b[160];
  if (be.name() == "cpu") {
    const double f = measure_cpu_sgemm_flops();
    std::snprintf(b, sizeof b, "this CPU's sgemm ceiling measured now: %.1f GFLOP/s", f / 1e9);
    return {f, b};
  }
  const std::string dev = be.device_name();
  const double f = gpu_peak_bf16_flops(dev);
  if (f > 0)
    std::snprintf(b, sizeof b, "%s: %.1f TFLOP/s dense bf16 (datasheet)", dev.c_str(), f / 1e12);
  else
    std::snprintf(b, sizeof b, "%s: not in the peak table (engine/backend/peak.cpp), no MFU", dev.c_str());
  return {f, b};
}

double mfu(double flops_per_token, double tokens_per_s, const Peak& peak, int devices) {
  if (!(peak.flops > 0) || devices < 1) return NAN;
  const double u = flops_per_token * tokens_per_s / (peak.flops * devices);
  return u > 0 && u <= 1.0 ? u : NAN;
}

}  // namespace loom
