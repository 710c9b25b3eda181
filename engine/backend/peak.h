// peak.h: the matrix-product peak of the device a run is on, for model FLOPs utilisation
// (MFU = FLOPs a token costs x tokens per second / peak). A GPU's peak is its vendor's dense
// bf16 tensor-core rate, from a table keyed by the device's name; a device not in the table
// has no MFU (and the run says so). The CPU's peak is the f32 matrix-product rate measured in
// the same run (a square sgemm), so a CPU MFU is "the share of the BLAS ceiling this machine
// reaches now", never a number from another machine.
//
// The same table gives `loom plan --device h200|h100|a100|...` a GPU's peak and memory by a
// short name, for planning on a machine that does not have the GPU.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace loom {

class Backend;

struct Peak {
  double flops = 0;       // FLOP/s; 0: unknown
  std::string what;       // where the number comes from, for banners ("NVIDIA H200: 989.5 TFLOP/s dense bf16 ...")
  bool measured = false;  // measured in this run (the CPU's sgemm), not from the table
  int remeasures = 0;     // times remeasure_if_beaten measured it again
};

// A GPU of the table.
struct GpuSpec {
  const char* key;        // the short name `loom plan --device` takes: "h200", "h100-pcie", "a100-40gb", ...
  const char* name;       // for reports: "NVIDIA H200 SXM"
  double bf16_flops;      // dense bf16 tensor-core FLOP/s (datasheet)
  uint64_t memory_bytes;  // device memory as the driver reports its total (nvidia-smi's MiB)
};
// By short name, case-insensitive; null when not in the table.
const GpuSpec* find_gpu(const std::string& key);
// Every short name, for help text and errors.
std::vector<std::string> gpu_keys();
// Memory that the CUDA context and the libraries' handles take before a run allocates anything
// (cudaMemGetInfo's free at start is about this much below the total): what `loom plan`
// subtracts from a table GPU's memory, where `loom train` reads the free memory itself.
inline constexpr uint64_t kCudaContextBytes = uint64_t{1} << 30;
// cuBLASLt's workspace, allocated once by the real CUDA backend (engine/backend/cuda/lt_matmul.h,
// LtMatmul::kWorkspaceBytes): part of a GPU run's memory.
inline constexpr size_t kGpuLibraryWorkspaceBytes = size_t{32} << 20;

// Dense bf16 tensor-core peak (FLOP/s) of a GPU by its name as cudaGetDeviceProperties gives
// it ("NVIDIA H200", "NVIDIA H100 PCIe", "NVIDIA A100-SXM4-80GB", ...); 0 when not in the table.
double gpu_peak_bf16_flops(const std::string& device_name);
// The CPU's f32 matrix-product rate now: the best of ten 1024^3 sgemms, five threaded by
// loom's slabs and five by the BLAS (about 0.15 s).
double measure_cpu_sgemm_flops();
// The CPU's memory bandwidth now, bytes/s: STREAM's triad (a = b + s c, 12 bytes an element
// counted, as STREAM counts them) over 64 MiB arrays on every OpenMP thread, best of five.
// What the work a step cannot run from cache (the optimizer's pass over the flat buffers) is
// bound by.
double measure_cpu_stream_bytes_per_s();
// The peak of a backend's device: the table for a GPU, the measured sgemm rate for the CPU.
Peak device_peak(Backend& be);
// MFU of `devices` devices of `peak` FLOP/s each; NaN when the peak is unknown or the rate
// comes out above it (then the peak, not the run, is wrong: never report above 100%).
double mfu(double flops_per_token, double tokens_per_s, const Peak& peak, int devices = 1);
// The same from the model FLOPs per second of all `devices` together.
double mfu(double flops_per_s, const Peak& peak, int devices = 1);
// A measured peak that a run's rate (FLOP/s a device) beats was measured while other work held
// the cores, so it came out low: measures it again and keeps the larger, at most
// kMaxRemeasures times a run. Returns the line to print when the peak moved (else empty).
inline constexpr int kMaxRemeasures = 3;
std::string remeasure_if_beaten(Peak& peak, double flops_per_s);

}  // namespace loom
