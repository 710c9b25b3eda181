// device.h: picks the backend for `device = auto | cpu | cuda`.
#pragma once
#include <memory>
#include <string>

#include "engine/backend/backend.h"

namespace loom {

// auto: CUDA when a device answers, else CPU. cuda: UserError when no backend/device exists.
std::unique_ptr<Backend> make_backend(const std::string& device);
// Host memory the kernel could give this process now (/proc/meminfo's MemAvailable).
uint64_t host_available_bytes();

}  // namespace loom
