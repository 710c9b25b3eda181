// peak_test.cpp: the device peak table behind MFU (engine/backend/peak.h): the datasheet
// numbers for the usual names, the more specific name winning, an unknown device having no
// peak, MFU never reported above 100%, and a CPU ceiling that a run beats (measured while other
// work held the cores) measured again, at most kMaxRemeasures times; a table peak never.
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
  EXPECT_TRUE(p.measured);
}

TEST(Peak, AMeasuredCeilingThatARunBeatsIsMeasuredAgain) {
  auto be = make_cpu_backend();
  Peak p = device_peak(*be);
  const double real = p.flops;
  EXPECT_EQ(remeasure_if_beaten(p, 0.5 * real), "");  // below the ceiling: nothing to do
  EXPECT_EQ(p.remeasures, 0);
  // As if the first measurement had been slowed 100-fold by other work on the cores.
  p.flops = real / 100;
  const std::string line = remeasure_if_beaten(p, real / 50);
  EXPECT_NE(line.find("measured again (1 of 3)"), std::string::npos) << line;
  EXPECT_GT(p.flops, real / 10) << line;  // a quiet moment gives near the real ceiling again
  EXPECT_NE(p.what.find("measured again"), std::string::npos) << p.what;
  EXPECT_FALSE(std::isnan(mfu(1, real / 50, p))) << line;
  // A rate no ceiling can reach: measured at most kMaxRemeasures times, then MFU stays unknown.
  for (int i = 0; i < 5; ++i) remeasure_if_beaten(p, 1e18);
  EXPECT_EQ(p.remeasures, kMaxRemeasures);
  EXPECT_EQ(remeasure_if_beaten(p, 1e18), "");
  EXPECT_TRUE(std::isnan(mfu(1, 1e18, p)));
}

TEST(Peak, ATablePeakIsNeverMeasuredAgain) {
  Peak h200{gpu_peak_bf16_flops("NVIDIA H200"), "h200"};
  EXPECT_EQ(remeasure_if_beaten(h200, 2e15), "");
  EXPECT_EQ(h200.flops, 989.5e12);
}

}  // namespace
}  // namespace loom
