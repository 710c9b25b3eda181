// nccl.h: the NCCL communicator's entry points. nccl_comm.cpp is compiled into the real CUDA
// backend only (where CMake found NCCL), so a CPU-only binary simply lacks them: they are
// declared weak here, the one place, and a caller tests the function before calling it.
#pragma once
#include <memory>

#include "engine/comm/comm.h"

namespace loom {

// The communicator of GPU ranks (one device each).
std::unique_ptr<Comm> make_nccl_comm(const DistEnv& env) __attribute__((weak));
// CUDA devices this process can see (0 without a driver).
int nccl_device_count() __attribute__((weak));

}  // namespace loom
