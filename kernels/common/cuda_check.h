// cuda_check.h: the CUDA-library members of loom's one check family (core/check.h), each
// naming the statement and keeping the library's own error text.
//
// Two ways to fail, chosen by who is at fault:
//  - CUDA_CHECK(expr), CUBLAS_CHECK(expr) abort, as LOOM_CHECK does: a failed runtime or
//    cuBLAS(Lt) call in loom's own code is a bug (or a dead device), not bad input. They print
//    the statement, file:line, the current device and the library's text: cudaGetErrorString,
//    and for cuBLAS the status name and its meaning.
//  - CUDA_TRY(expr), CUDNN_TRY(expr) throw loom::LibraryError instead, for code that must go
//    on without the call: the cuDNN baselines of `loom bench kernels` catch it and print
//    "n/a (why)". CUDA_TRY_AS(E, expr) throws E, for callers whose failures have their own
//    type (the NCCL communicator's CommError; NCCL_CHECK, engine/comm/nccl_check.h, is built
//    the same way). what() is the call's name and the library's text, e.g.
//    "cudnnBackendFinalize: CUDNN_STATUS_NOT_SUPPORTED [<cuDNN's last message>]": short enough
//    for a table cell, and the call says where. CUDNN_TRY_NAMED(name, expr) names the failure
//    itself where the call alone says too little.
// Bad input is neither: it is a loom::UserError (exit 2), raised where the input is read.
//
// The macros name library functions only when expanded, so this header includes no CUDA
// header: a file uses the members whose library it includes (cuda_runtime.h or the emulator's
// cuda_compat.h, cublasLt.h, cudnn.h).
#pragma once
#include <cstring>
#include <stdexcept>
#include <string>

#include "core/check.h"

namespace loom {

// A library call failed where the caller can go on without it (thrown by the *_TRY members).
struct LibraryError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {

// "cudnnBackendFinalize(d)" -> "cudnnBackendFinalize": the call, without its arguments.
inline std::string call_name(const char* expr) {
  const char* p = std::strchr(expr, '(');
  return p ? std::string(expr, static_cast<size_t>(p - expr)) : std::string(expr);
}

// Library messages may span lines (cuDNN's last error does); a one-line error wants one.
inline std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

// Throws E("<name>: <status>[ [<detail>]]"), the one message of the throwing members.
template <typename E>
[[noreturn]] void library_fail(const std::string& name, const std::string& status, const std::string& detail = "") {
  std::string m = name + ": " + status;
  const std::string d = one_line(detail);
  if (!d.empty()) m += " [" + d + "]";
  throw E(m);
}

}  // namespace detail
}  // namespace loom

// The aborting members' failure: the statement, file:line, the library's text (the
// arguments, concatenated) and the current device.
#define LOOM_LIBRARY_CHECK_FAIL_(expr_text, ...)                                                  \
  do {                                                                                            \
    int loom_check_dev_ = -1;                                                                     \
    cudaGetDevice(&loom_check_dev_);                                                              \
    ::loom::detail::check_fail(expr_text, __FILE__, __LINE__,                                     \
                               ::loom::detail::concat(__VA_ARGS__, " (device ", loom_check_dev_, ")")); \
  } while (0)

#define CUDA_CHECK(expr)                                                                          \
  do {                                                                                            \
    const cudaError_t loom_cuda_err_ = (expr);                                                    \
    if (loom_cuda_err_ != cudaSuccess) LOOM_LIBRARY_CHECK_FAIL_(#expr, cudaGetErrorString(loom_cuda_err_)); \
  } while (0)

// cuBLASLt's own names for the status: loom links cuBLASLt only, and cublasGetStatusString
// lives in libcublas. The status enum is the one cuBLAS uses, so this serves both libraries.
#define CUBLAS_CHECK(expr)                                                                        \
  do {                                                                                            \
    const cublasStatus_t loom_cublas_st_ = (expr);                                                \
    if (loom_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                                 \
      LOOM_LIBRARY_CHECK_FAIL_(#expr, cublasLtGetStatusName(loom_cublas_st_), ": ",               \
                               cublasLtGetStatusString(loom_cublas_st_));                         \
  } while (0)

#define CUDA_TRY_AS(E, expr)                                                                      \
  do {                                                                                            \
    const cudaError_t loom_cuda_err_ = (expr);                                                    \
    if (loom_cuda_err_ != cudaSuccess)                                                            \
      ::loom::detail::library_fail<E>(::loom::detail::call_name(#expr), cudaGetErrorString(loom_cuda_err_)); \
  } while (0)

#define CUDA_TRY(expr) CUDA_TRY_AS(::loom::LibraryError, expr)

// The status name plus cuDNN's own last message, which names the check that failed.
// CUDNN_TRY_NAMED(name, expr) says `name` (a std::string) instead of the call's name: which
// descriptor, which graph.
#define CUDNN_TRY_NAMED(name, expr)                                                               \
  do {                                                                                            \
    const cudnnStatus_t loom_cudnn_st_ = (expr);                                                  \
    if (loom_cudnn_st_ != CUDNN_STATUS_SUCCESS) {                                                 \
      char loom_cudnn_last_[1024] = {0};                                                          \
      cudnnGetLastErrorString(loom_cudnn_last_, sizeof loom_cudnn_last_);                         \
      ::loom::detail::library_fail<::loom::LibraryError>((name), cudnnGetErrorString(loom_cudnn_st_), \
                                                         loom_cudnn_last_);                       \
    }                                                                                             \
  } while (0)

#define CUDNN_TRY(expr) CUDNN_TRY_NAMED(::loom::detail::call_name(#expr), expr)
