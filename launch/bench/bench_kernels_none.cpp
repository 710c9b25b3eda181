// bench_kernels_none.cpp: `loom bench kernels` in a build without CUDA kernels.
#include "launch/bench/bench_kernels.h"

#include "core/check.h"

namespace loom {

int bench_kernels_main() {
  user_error("bench kernels: this build of loom has no CUDA kernels (configure with nvcc present, or "
             "-DLOOM_CUDA_EMULATION=ON to run them on the CPU)");
}

}  // namespace loom
