// device.cpp: device selection. The CUDA backend lives in a separate object library (real
// runtime, or the SIMT emulator with LOOM_CUDA_EMULATION=ON) linked into `loom` when built;
// its header declares it weak, so every other binary links without it.
#include "engine/backend/device.h"

#include "engine/backend/cuda/cuda_backend.h"

#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <string>

namespace loom {

uint64_t Backend::free_memory() const { return host_available_bytes(); }

uint64_t host_available_bytes() {
  // MemAvailable counts what the kernel can give without swapping; sysconf's free pages do not
  // count the page cache it would drop.
  std::ifstream f("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  while (f >> key >> kib) {
    if (key == "MemAvailable:") return kib * 1024;
    f.ignore(256, '\n');
  }
  const long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : UINT64_MAX;
}

std::unique_ptr<Backend> make_backend(const std::string& device) {
  if (device == "cpu") return make_cpu_backend(DType::F32);
  if (device == "auto") {
    // A real device when one answers; never the (slow) emulator unless asked for by name.
    if (make_cuda_backend) {
      std::string why;
      auto be = make_cuda_backend(&why);
      if (be && be->name() == "cuda") return be;
    }
    return make_cpu_backend(DType::F32);
  }
  if (device == "cuda") {
    if (!make_cuda_backend)
      user_error("device: cuda: this build of loom has no CUDA backend (nvcc was not found at configure time, or "
                 "-DLOOM_CUDA=OFF); use --device cpu, or rebuild with -DLOOM_CUDA_EMULATION=ON to run the kernels "
                 "on the CPU");
    std::string why;
    auto be = make_cuda_backend(&why);
    if (!be) user_error("device: cuda: no usable CUDA device (", why, "); use --device cpu or auto");
    return be;
  }
  user_error("device: '", device, "' is not one of auto, cpu, cuda");
}

}  // namespace loom
