// peak.h: the matrix-product peak of the device a run is on, for model FLOPs utilisation
// (MFU = FLOPs a token costs x tokens per second / peak). A GPU's peak is its vendor's dense
// bf16 tensor-core rate, from a table keyed by the device's name; a device not in the table
// has no MFU (and the run says so). The CPU's peak is the f32 matrix-product rate measured in
// the same run (a square sgemm), so a CPU MFU is "the share of the BLAS ceiling this machine
// reaches now", never a number from another machine.
#pragma once
#include <string>

namespace loom {

class Backend;

struct Peak {
  double flops = 0;    // FLOP/s; 0: unknown
  std::string what;    // where the number comes from, for banners ("NVIDIA H200: 989.5 TFLOP/s dense bf16 ...")
};

// Dense bf16 tensor-core peak (FLOP/s) of a GPU by its name as cudaGetDeviceProperties gives
// it ("NVIDIA H200", "NVIDIA H100 PCIe", "NVIDIA A100-SXM4-80GB", ...); 0 when not in the table.
double gpu_peak_bf16_flops(const std::string& device_name);
// The CPU's f32 matrix-product rate now: the best of five 1024^3 sgemms (about 0.1 s).
double measure_cpu_sgemm_flops();
// The peak of a backend's device: the table for a GPU, the measured sgemm rate for the CPU.
Peak device_peak(Backend& be);
// MFU of `devices` devices of `peak` FLOP/s each; NaN when the peak is unknown or the rate
// comes out above it (then the peak, not the run, is wrong: never report above 100%).
double mfu(double flops_per_token, double tokens_per_s, const Peak& peak, int devices = 1);

}  // namespace loom
