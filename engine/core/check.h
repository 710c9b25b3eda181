// check.h: the one error family of loom.
//
// Two kinds of failure, kept apart on purpose:
//  - LOOM_CHECK(cond, msg...): an internal invariant. Prints the statement, file:line and
//    the message, then aborts: a bug in loom, never the user's fault.
//  - loom::UserError (thrown by LOOM_USER_CHECK / user_error): bad input from the user
//    (config, data shard, checkpoint, prompt, flags). The CLI prints it as one line
//    "loom: error: <file or key>: <problem>" and exits with code 2.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>

namespace loom {

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
