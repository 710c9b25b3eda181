// bench_kernels.h: `loom bench kernels`. Implemented by bench_kernels.cpp against the emulated
// or the real CUDA backend, and by bench_kernels_none.cpp in a build without CUDA kernels;
// every binary links exactly one of the three.
#pragma once

namespace loom {

// Prints the table; returns the exit code.
int bench_kernels_main();

}  // namespace loom
