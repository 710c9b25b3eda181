// cuda_backend.h: the CUDA backend's entry points. cuda_backend.cpp is compiled twice, as
// OBJECT libraries (real runtime, SIMT emulator); a binary links at most one of them, so
// make_cuda_backend is declared weak here, the one place: device.cpp tests it before calling.
#pragma once
#include <memory>
#include <string>

#include "engine/backend/backend.h"
#include "kernels/common/stream.h"
#include "kernels/rnn/rnn.h"

namespace loom {

// A backend on the current device, or null (with the reason in *why) when none answers.
std::unique_ptr<Backend> make_cuda_backend(std::string* why) __attribute__((weak));

// For benchmarks that drive kernels directly: the backend's compute stream and its general
// matrix product (cuBLASLt; the CPU reference under the emulator), which the recurrent
// launchers call in that stream. `be` must come from make_cuda_backend.
cuda::Stream cuda_backend_stream(Backend& be);
cuda::Gemm cuda_backend_gemm(Backend& be);

}  // namespace loom
