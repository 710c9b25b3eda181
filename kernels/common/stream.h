// stream.h: the stream type of kernel launchers, without including CUDA: cudaStream_t is
// `CUstream_st*` in the real runtime and in the emulator (cuda_compat.h) alike.
#pragma once
struct CUstream_st;
namespace loom::cuda {
using Stream = CUstream_st*;
}  // namespace loom::cuda
