// neg_test_main.h: the driver shared by the emulator's negative-test binaries
// (simt_emu_neg_test.cpp, hopper_emu_neg_test.cpp): one mode per run, named on the command
// line; a mode ending in "_ok" is a control without the bug.
#pragma once
#include <cstdio>
#include <cstring>

namespace loom::test {

inline bool is_control(const char* mode) {
  const size_t n = std::strlen(mode);
  return n > 3 && std::strcmp(mode + n - 3, "_ok") == 0;
}

// run(mode) launches the mode's kernel and returns false for an unknown mode. Getting back
// here means nothing stopped the run: right for a control, a miss for a bug, which prints the
// "NOT DETECTED" that ctest fails on.
inline int neg_test_main(int argc, char** argv, bool (*run)(const char* mode)) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s MODE\n", argv[0]);
    return 2;
  }
  const char* mode = argv[1];
  if (!run(mode)) {
    std::fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
  }
  const bool control = is_control(mode);
  std::printf(control ? "mode %s: ok\n" : "mode %s: NOT DETECTED\n", mode);
  return control ? 0 : 1;
}

}  // namespace loom::test
