// check.h: the one error family of loom.
//
// Three kinds of failure, kept apart on purpose (launch/main.cpp turns them into exit codes):
//  - LOOM_CHECK(cond, msg...): an internal invariant. Prints the statement, file:line and
//    the message, then aborts: a bug in loom, never the user's fault.
//  - loom::UserError (thrown by LOOM_USER_CHECK / user_error): bad input from the user
//    (config, data shard, checkpoint, prompt, flags). The CLI prints it as one line
//    "loom: error: <file or key>: <problem>" and exits with code 2 (kUserErrorExit).
//  - loom::CommError (engine/comm/comm.h): a collective failed because another rank of a
//    data-parallel job was lost or hung; exit code 3 (kCommLostExit), so that `loom launch`
//    can tell the rank that failed first from the ones that only noticed.
// Library errors keep their own text: CUDA_CHECK and CUBLAS_CHECK (kernels/common/cuda_check.h)
// are LOOM_CHECKs that add the library's error string; CUDA_TRY and CUDNN_TRY throw it as a
// LibraryError where the caller goes on without the call (benchmark baselines), and NCCL_CHECK
// (engine/comm/nccl_check.h) throws it as a CommError.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>

namespace loom {

inline constexpr int kUserErrorExit = 2;
inline constexpr int kCommLostExit = 3;

// Bad input. what() is the whole one-line message, naming the file or key.
struct UserError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
template <typename... A>
std::string concat(const A&... a) {
  std::ostringstream os;
  (os << ... << a);
  return os.str();
}
[[noreturn]] inline void check_fail(const char* expr, const char* file, int line, const std::string& msg) {
  std::fprintf(stderr, "loom: internal check failed: %s at %s:%d%s%s\n", expr, file, line,
               msg.empty() ? "" : ": ", msg.c_str());
  std::fflush(stderr);
  std::abort();
}
}  // namespace detail

// Throws a UserError whose message is the concatenation of the arguments.
template <typename... A>
[[noreturn]] void user_error(const A&... a) {
  throw UserError(detail::concat(a...));
}

}  // namespace loom

#define LOOM_CHECK(cond, ...)                                                              \
  do {                                                                                     \
    if (!(cond)) ::loom::detail::check_fail(#cond, __FILE__, __LINE__,                     \
                                            ::loom::detail::concat("" __VA_OPT__(, ) __VA_ARGS__)); \
  } while (0)

#define LOOM_USER_CHECK(cond, ...)                   \
  do {                                               \
    if (!(cond)) ::loom::user_error(__VA_ARGS__);    \
  } while (0)
