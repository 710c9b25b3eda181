// device.cpp: device selection. The CUDA backend registers itself here when it is built.
#include "engine/backend/device.h"

namespace loom {

std::unique_ptr<Backend> make_backend(const std::string& device) {
  if (device == "cpu" || device == "auto") return make_cpu_backend(DType::F32);
  if (device == "cuda")
    user_error("device: cuda: this build of loom has no CUDA backend; use --device cpu (or auto)");
  user_error("device: '", device, "' is not one of auto, cpu, cuda");
}

}  // namespace loom
