// peak_test.cpp: the device peak table behind MFU (engine/backend/peak.h): the datasheet
// numbers for the usual names, the more specific name winning, an unknown device having no
// peak, and MFU never reported above 100%.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/backend/backend.h"
#include "engine/backend/peak.h"

namespace loom {
namespace {

TEST(Peak, KnownGpusByTheirDriverNames) {
  EXPECT_DOUBLE_EQ(gpu_peak_bf16_flops("NVIDIA H200"), 989.5e12);
  EXPECT_DOUBLE_EQ(gpu_peak_bf16_flops("NVIDIA H200 NVL"), 835.5e12);
  EXPECT_DOUBLE_EQ(gpu_peak_bf16_flops("NVIDIA H100 80GB HBM3"), 989.5e12);
  EXPECT_DOUBLE_EQ(gpu_peak_bf16_flops("NVIDIA H100 PCIe"), 756.5e12);
  EXPECT_DOUBLE_EQ(gpu_peak_bf16_flops("NVIDIA H100 NVL"), 835.5e12);
  EXPECT_DOUBLE_EQ(gpu_peak_bf16_flops("NVIDIA A100-SXM4-80GB"), 312e12);
  EXPECT_DOUBLE_EQ(gpu_peak_bf16_flops("NVIDIA A100 80GB PCIe"), 312e12);
  EXPECT_DOUBLE_EQ(gpu_peak_bf16_flops("NVIDIA L40S"), 362.05e12);
  EXPECT_DOUBLE_EQ(gpu_peak_bf16_flops("NVIDIA L40"), 181.05e12);
  EXPECT_DOUBLE_EQ(gpu_peak_bf16_flops("NVIDIA L4"), 121e12);
}

TEST(Peak, UnknownDeviceHasNoPeakAndNoMfu) {
  for (const char* name : {"NVIDIA GeForce GTX 1080", "SIMT emulator", "", "Tesla K80"}) {
    EXPECT_EQ(gpu_peak_bf16_flops(name), 0) << name;
    EXPECT_TRUE(std::isnan(mfu(1e9, 1e4, Peak{gpu_peak_bf16_flops(name), name}))) << name;
  }
}

TEST(Peak, MfuIsTheShareOfThePeakAndNeverAboveOne) {
  const Peak h200{gpu_peak_bf16_flops("NVIDIA H200"), "h200"};
  // GPT-2 124M at ~1e9 FLOP/token: 400k tokens/s on one H200 is ~40%.
  EXPECT_NEAR(mfu(1e9, 4e5, h200), 4e14 / 989.5e12, 1e-12);
  EXPECT_NEAR(mfu(1e9, 8e5, h200, 2), 4e14 / 989.5e12, 1e-12);  // per device
  EXPECT_TRUE(std::isnan(mfu(1e9, 2e6, h200)));  // 2e15 FLOP/s on 989 TFLOP/s: the peak is wrong
  EXPECT_TRUE(std::isnan(mfu(1e9, 0, h200)));
}

TEST(Peak, CpuPeakIsMeasuredNow) {
  auto be = make_cpu_backend();
  const Peak p = device_peak(*be);
  EXPECT_GT(p.flops, 1e8);  // any machine that runs the tests multiplies faster than 0.1 GFLOP/s
  EXPECT_NE(p.what.find("measured"), std::string::npos) << p.what;
}

}  // namespace
}  // namespace loom
