// bench_cudnn.h: library baselines for `loom bench kernels` (bench_kernels.cpp), compiled into
// the real CUDA backend only, and only where CMake found cuDNN (LOOM_HAVE_CUDNN=1):
//  - attention: cuDNN's fused flash attention, built with the backend graph API from matmul,
//    pointwise and reduction operations (causal, bf16 in/out, f32 softmax statistics), forward
//    and backward, on loom's packed qkv layout through strides;
//  - lstm: cudnnRNNForward (training) + cudnnRNNBackwardData_v8 + cudnnRNNBackwardWeights_v8, one
//    unidirectional layer.
// Nothing here aborts: every cuDNN and CUDA status is checked with the throwing members of the
// check family (CUDNN_TRY, CUDA_TRY: kernels/common/cuda_check.h) and a failure comes back as
// `why` (the call, cudnnGetErrorString and cudnnGetLastErrorString), which the bench prints as
// "n/a (why)".
#pragma once
#include <cstdint>
#include <string>

struct CUstream_st;  // cudaStream_t is CUstream_st*

namespace loom::cudnn_bench {

// "cuDNN 9.19.0 (headers 9.19.0)"; "" where cuDNN is not built in.
std::string version();

// Device buffers in loom's layouts (kernels/attention/attention.h): qkv and dqkv [B, T, 3C]
// bf16, out and dout [B, T, C] bf16, stats [B, H, T] f32 (cuDNN's log-sum-exp of the scaled
// scores, written by the forward and read by the backward).
struct AttnBuffers {
  const void* qkv;
  void* out;
  float* stats;
  const void* dout;
  void* dqkv;
};
struct AttnResult {
  bool fwd_ok = false, bwd_ok = false;
  std::string why;                // what failed, where either part did
  double fwd_ms = 0, bwd_ms = 0;  // medians of `reps` timed runs after `warm` untimed ones
  double build_s = 0;             // wall time to build both graphs and plans (runtime compilation)
  std::string engines;            // "fwd engine N, bwd engine M" (global indices of the chosen engines)
};
// Causal attention, scale 1/sqrt(D), D = C / H: times the forward, then the backward (which reads
// the forward's out and stats), on stream s. The two parts succeed or fail separately.
AttnResult attention(const AttnBuffers& buf, int64_t B, int64_t T, int64_t C, int64_t H, CUstream_st* s,
                     int warm, int reps);

struct LstmResult {
  bool ok = false;
  std::string why;
  double fwd_ms = 0, fwdbwd_ms = 0;
  std::string dtype;  // "bf16" (cuDNN >= 9.13) or "fp16" (fallback); math is f32 either way
};
// One layer, input size = hidden size = H, batch B, sequence T, zero initial states.
LstmResult lstm(int64_t H, int64_t B, int64_t T, CUstream_st* s, int warm, int reps);

// Forward FLOPs of an LSTM layer, counting the gate GEMMs only: 2 * 4H * (I + H) * B * T.
// Forward + backward counts 3x that.
inline double lstm_fwd_flops(int64_t H, int64_t I, int64_t B, int64_t T) {
  return 2.0 * 4 * H * double(I + H) * B * T;
}

}  // namespace loom::cudnn_bench
