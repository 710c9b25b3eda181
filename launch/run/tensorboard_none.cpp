// tensorboard_none.cpp: TensorBoard event files in a build without protobuf
// (cmake/Dependencies.cmake; launch/run/CMakeLists.txt picks this or tensorboard.cpp): none are
// written, and the run says so once, so that an empty tb/ is not a surprise.
#include <cstdio>

#include "launch/run/tensorboard.h"

namespace loom {

std::unique_ptr<TensorBoardLog> open_tensorboard_log(const std::string& dir, const std::string&, int64_t) {
  std::fprintf(stderr, "loom: note: %s: no TensorBoard event files: this build of loom has no protobuf "
               "(scripts/install_deps.sh; log.tensorboard = false silences this)\n", dir.c_str());
  return nullptr;
}

}  // namespace loom
