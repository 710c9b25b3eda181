// gpu_skip_test.cpp: linked into every "gpu"-labelled test binary (cmake/LoomKernel.cmake).
// Without a usable CUDA device the binary exits 77 before its first test, which ctest
// (SKIP_RETURN_CODE 77) reports as skipped: CI machines have no GPU, and a GPU test there
// must neither fail nor claim to have passed. Listing the tests (--gtest_list_tests, which
// gtest_discover_tests runs) never calls CUDA, so discovery works without a device.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>

namespace {

class RequireDevice : public ::testing::Environment {
 public:
  void SetUp() override {
    // Without a driver the call fails with cudaErrorInsufficientDriver (35) and leaves the
    // count unwritten, hence the initial 0.
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
      std::printf("SKIP: no CUDA device (%s)\n", e != cudaSuccess ? cudaGetErrorName(e) : "0 devices");
      std::fflush(stdout);
      std::exit(77);
    }
  }
};

const ::testing::Environment* const g_require_device = ::testing::AddGlobalTestEnvironment(new RequireDevice);

}  // namespace
