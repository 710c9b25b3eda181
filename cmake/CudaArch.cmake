# CudaArch.cmake: the GPU architectures nvcc compiles every kernel for. Included by the
# top-level CMakeLists.txt before enable_language(CUDA), which would otherwise pick its own
# default. Override with -DCMAKE_CUDA_ARCHITECTURES=... (e.g. "native" on a GPU machine for
# a quicker build of just that card).
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "")
  set(CMAKE_CUDA_ARCHITECTURES
      # H100/H200 (Hopper), with the arch-specific instructions: wgmma, TMA, setmaxnreg.
      90a
      # A100 (Ampere): the oldest card we support; bf16 tensor cores, cp.async, __reduce_*_sync.
      80
      CACHE STRING "GPU architectures nvcc compiles for (default: 90a;80)")
endif()
message(STATUS "loom: CUDA architectures: ${CMAKE_CUDA_ARCHITECTURES}")
