// lt_matmul.h: loom's one cuBLASLt plan cache (real runtime only). Every matrix product that
// loom sends to cuBLASLt goes through an LtMatmul: the CUDA backend's linear forward and
// backward, linear + GELU (the GELU_AUX(_BIAS) epilogue), the general strided products of the
// recurrent layers, and the GEMM ceiling of `loom bench kernels`.
//
// A plan is the matmul descriptor, the three matrix layouts and the algorithm the heuristic
// picked; the heuristic costs more than a small product, so it runs once per key, the key
// being everything that shapes a plan (transposes, m, n, k, leading dimensions, A/B/C types,
// epilogue, beta). Under the SIMT emulator there is no cuBLASLt: the backend multiplies with
// the CPU reference instead, and this file is not compiled.
#pragma once
#include <cublasLt.h>

#include <compare>
#include <cstddef>
#include <cstdint>
#include <map>

namespace loom {

// What the product's epilogue adds (cuBLASLt's CUBLASLT_EPILOGUE_*).
enum class LtEpilogue {
  None,
  Bias,         // D += bias[m] broadcast over n
  GeluAuxBias,  // D = GELU(op(A) op(B) + bias), aux = the pre-activation
  GeluAux,      // D = GELU(op(A) op(B)), aux = the pre-activation
};

// D[m, n] = alpha op(A) op(B) + beta C in cuBLASLt's column-major terms, C and D the same
// memory; op(X) = X^T when tX. A row-major caller swaps the operands (C^T = op(B)^T op(A)^T).
struct LtProduct {
  bool ta = false, tb = false;
  int64_t m = 0, n = 0, k = 0;
  const void* A = nullptr;  // op(A) is [m, k]: stored [m, k] (ld >= m), or [k, m] (ld >= k) when ta
  int64_t lda = 0;
  cudaDataType_t a_type = CUDA_R_16BF;
  const void* B = nullptr;  // op(B) is [k, n]: stored [k, n] (ld >= k), or [n, k] (ld >= n) when tb
  int64_t ldb = 0;
  cudaDataType_t b_type = CUDA_R_16BF;
  void* C = nullptr;  // [m, n], ld >= m: read (beta != 0) and written
  int64_t ldc = 0;
  cudaDataType_t c_type = CUDA_R_16BF;
  float alpha = 1.0f, beta = 0.0f;
  LtEpilogue epilogue = LtEpilogue::None;
  const void* bias = nullptr;  // [m] bf16: Bias, GeluAuxBias
  void* aux = nullptr;         // bf16 shaped as C (ld = ldc): GeluAux, GeluAuxBias
};

class LtMatmul {
 public:
  // The cuBLASLt handle and the workspace every product may use (kWorkspaceBytes).
  LtMatmul();
  ~LtMatmul();
  LtMatmul(const LtMatmul&) = delete;
  LtMatmul& operator=(const LtMatmul&) = delete;

  // Queues p on stream s, building its plan first if this key is new. Plans are built during
  // eager steps; a captured CUDA graph replays products whose plans already exist.
  void run(const LtProduct& p, cudaStream_t s);

  static constexpr size_t kWorkspaceBytes = size_t(32) << 20;

 private:
  struct Key {
    bool ta, tb;
    int64_t m, n, k, lda, ldb, ldc;
    cudaDataType_t a_type, b_type, c_type;
    LtEpilogue epilogue;
    float beta;
    auto operator<=>(const Key&) const = default;
  };
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  Plan& plan(const LtProduct& p);
  static Plan make_plan(cublasLtHandle_t lt, const LtProduct& p);

  cublasLtHandle_t lt_ = nullptr;
  void* workspace_ = nullptr;
  std::map<Key, Plan> plans_;
};

}  // namespace loom
