// gloo_none.cpp: make_gloo_comm for builds without Gloo (GPU-only builds, LOOM_GPU_ONLY, which
// leave out everything that serves CPU ranks): a multi-rank cpu run stops with a clear error
// instead of failing to link or hanging. engine/CMakeLists.txt picks this or gloo_comm.cpp.
#include "core/check.h"
#include "engine/comm/comm.h"

namespace loom {

std::unique_ptr<Comm> make_gloo_comm(int /*rank*/, int world, const std::string& /*addr*/, int /*port*/) {
  user_error("device = cpu with ", world,
             " ranks needs Gloo, and this build of loom has none (a GPU-only build, LOOM_GPU_ONLY=ON): "
             "use --device cuda, or a build configured without LOOM_GPU_ONLY");
}

}  // namespace loom
