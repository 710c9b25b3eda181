// simt_emu_neg_test.cpp: kernel bugs the emulator and the sanitizers must catch, one per
// mode (argv[1]), each beside a control that differs only by the bug.
//
// ctest (kernels/common/CMakeLists.txt) runs every mode and matches its output: a bug mode
// passes only if the expected report names the expected source lines (found by the
// "// @line:" markers below), and fails if the run gets to print "NOT DETECTED"; a control
// must exit 0 with no report. So a test here cannot pass by crashing for another reason,
// nor if the check it exercises were removed.
//
//   mode               build   expected report
//   divergent_sync     plain   "divergent __syncthreads" with both barrier lines
//   shfl_vs_barrier    plain   warp op vs __syncthreads deadlock, both lines, at once
//   deadlock           plain   watchdog: every thread's line (LOOM_SIMT_TIMEOUT_S=1)
//   host_pointer       plain   "not device memory"
//   smem_no_optin      plain   "cudaFuncSetAttribute"
//   misaligned_pack    plain   "not 16-byte aligned"
//   race               tsan    "ThreadSanitizer: data race" at the kernel's lines
//   shfl_race          tsan    the same, where a shuffle stood in for __syncwarp
//   oob                asan    "AddressSanitizer: heap-buffer-overflow" at the kernel's line
//   *_ok               any     control: exits 0
#include "kernels/common/cuda_compat.h"
#include "kernels/common/neg_test_main.h"
#include "kernels/common/vec.cuh"

#include <atomic>
#include <cstdio>
#include <cstring>
#include <vector>

namespace {

// Barriers on two different lines: the hardware counts arrivals and lets this through on
// sm_70+, but it is undefined behaviour and usually a bug.
__global__ void divergent_sync_kernel(float* out, int divergent) {
  __shared__ float s[64];
  s[threadIdx.x] = float(threadIdx.x);
  if (divergent && threadIdx.x >= 32) {
    __syncthreads();  // @line:divergent_b
  } else {
    __syncthreads();  // @line:divergent_a
  }
  out[threadIdx.x] = s[63 - threadIdx.x];
}

// Half a warp shuffles with the full mask while the other half waits at a barrier: each
// waits for the other forever.
__global__ void shfl_vs_barrier_kernel(float* out, int divergent) {
  float v = float(threadIdx.x);
  if (!divergent || threadIdx.x % 32 < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);  // @line:shfl
  __syncthreads();  // @line:shfl_barrier
  out[threadIdx.x] = v;
}

// Thread 0 spins for a flag that thread 1 sets only after a barrier thread 0 never reaches.
__global__ void deadlock_kernel(int* flag, float* out, int buggy) {
  if (threadIdx.x == 0 && buggy) {
    while (atomicAdd(flag, 0) == 0) __nanosleep(1000);  // @line:spin
  }
  __syncthreads();  // @line:deadlock_barrier
  if (threadIdx.x == 1) atomicExch(flag, 1);
  out[threadIdx.x] = 1.f;
}

// Reverses through shared memory; without the barrier, thread t reads s[127 - t] before (or
// while) its owner writes it.
__global__ void reverse_kernel(float* out, int use_barrier) {
  __shared__ float s[128];
  s[threadIdx.x] = float(threadIdx.x) * 2.f;  // @line:race_write
  if (use_barrier) __syncthreads();
  out[threadIdx.x] = s[127 - threadIdx.x];  // @line:race_read
}

// Warp-synchronous exchange through shared memory. A shuffle is a rendezvous but orders no
// memory (only __syncwarp and __syncthreads do), so with it in place of __syncwarp the read
// of the neighbour's slot races with the neighbour's write.
__global__ void warp_exchange_kernel(float* out, int use_syncwarp) {
  __shared__ float s[32];
  s[threadIdx.x] = float(threadIdx.x);  // @line:shfl_race_write
  float v = 0.f;
  if (use_syncwarp) __syncwarp();
  else v = __shfl_xor_sync(0xffffffffu, 1.f, 1);
  out[threadIdx.x] = s[threadIdx.x ^ 1] + v;  // @line:shfl_race_read
}

// Off by one: the last thread writes one element past the end of the buffer.
__global__ void shift_kernel(float* out, int offset) {
  out[threadIdx.x + offset] = 1.f;  // @line:oob
}

__global__ void fill_kernel(float* out) {
  LOOM_DYNAMIC_SMEM(float, buf);
  buf[threadIdx.x] = 1.f;
  out[threadIdx.x] = buf[threadIdx.x];
}

__global__ void pack_kernel(const float* in, float* out, int offset) {
  const loom::Pack128<float> p = loom::load_128(in + offset);  // @line:misaligned
  out[threadIdx.x] = p[0];
}

bool run(const char* mode) {
  float* out = nullptr;
  cudaMalloc(&out, 256 * sizeof(float));
  const auto is = [&](const char* m) { return std::strcmp(mode, m) == 0; };
  if (is("divergent_sync") || is("divergent_sync_ok")) {
    LOOM_LAUNCH(divergent_sync_kernel, 2, 64, 0, 0, out, int(is("divergent_sync")));
  } else if (is("shfl_vs_barrier") || is("shfl_vs_barrier_ok")) {
    LOOM_LAUNCH(shfl_vs_barrier_kernel, 1, 64, 0, 0, out, int(is("shfl_vs_barrier")));
  } else if (is("deadlock") || is("deadlock_ok")) {
    int* flag = nullptr;
    cudaMalloc(&flag, sizeof(int));
    cudaMemset(flag, 0, sizeof(int));
    LOOM_LAUNCH(deadlock_kernel, 1, 64, 0, 0, flag, out, int(is("deadlock")));
    cudaFree(flag);
  } else if (is("race") || is("race_ok")) {
    LOOM_LAUNCH(reverse_kernel, 1, 128, 0, 0, out, int(is("race_ok")));
  } else if (is("shfl_race") || is("shfl_race_ok")) {
    LOOM_LAUNCH(warp_exchange_kernel, 1, 32, 0, 0, out, int(is("shfl_race_ok")));
  } else if (is("oob") || is("oob_ok")) {
    float* small = nullptr;
    cudaMalloc(&small, 64 * sizeof(float));
    LOOM_LAUNCH(shift_kernel, 1, 64, 0, 0, small, int(is("oob")));
    cudaFree(small);
  } else if (is("host_pointer") || is("host_pointer_ok")) {
    std::vector<float> host(64);
    LOOM_LAUNCH(fill_kernel, 1, 64, 64 * sizeof(float), 0, is("host_pointer") ? host.data() : out);
  } else if (is("smem_no_optin") || is("smem_no_optin_ok")) {
    const size_t smem = 64 * 1024;
    if (is("smem_no_optin_ok"))
      cudaFuncSetAttribute(fill_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    LOOM_LAUNCH(fill_kernel, 1, 64, smem, 0, out);
  } else if (is("misaligned_pack") || is("misaligned_pack_ok")) {
    LOOM_LAUNCH(pack_kernel, 1, 32, 0, 0, out, out, is("misaligned_pack") ? 1 : 4);
  } else {
    return false;
  }
  cudaFree(out);
  return true;
}

}  // namespace

int main(int argc, char** argv) { return loom::test::neg_test_main(argc, argv, run); }
