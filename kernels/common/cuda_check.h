// cuda_check.h: CUDA_CHECK / CUBLAS_CHECK, members of the one LOOM_CHECK family: print the
// statement, file:line and the library's own error name, then abort.
#pragma once
#include "core/check.h"

#define CUDA_CHECK(expr)                                                                  \
  do {                                                                                    \
    const cudaError_t loom_cuda_err_ = (expr);                                            \
    LOOM_CHECK(loom_cuda_err_ == cudaSuccess, #expr, ": ", cudaGetErrorString(loom_cuda_err_)); \
  } while (0)

#define CUBLAS_CHECK(expr)                                                              \
  do {                                                                                  \
    const cublasStatus_t loom_cublas_st_ = (expr);                                      \
    LOOM_CHECK(loom_cublas_st_ == CUBLAS_STATUS_SUCCESS, #expr, ": cublas status ",    \
               static_cast<int>(loom_cublas_st_));                                      \
  } while (0)
