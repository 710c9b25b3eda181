// matmul.h: linear layers y = x W^T + b on the CPU reference (BLAS), and the gemm wrapper
// every CPU reference uses. W is stored [out, in] (row-major), as PyTorch's nn.Linear.
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "kernels/common/stream.h"

namespace loom::ref {

// C[M,N] = alpha * op(A) op(B) + beta * C, row-major; op = transpose when ta/tb. Outside a
// parallel region C is cut into one slab per OpenMP thread (matmul_ref.cpp says why).
template <typename T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc);

// The same product threaded by the BLAS itself, as any caller of the library would run it:
// the other half of the CPU's sgemm ceiling (engine/backend/peak.cpp takes the faster).
void gemm_blas_threads(int64_t M, int64_t N, int64_t K, const float* A, const float* B, float* C);

template <typename T>
struct LinearArgs {
  const T* x;   // [N, K]
  const T* w;   // [M, K]
  const T* b;   // [M] or nullptr
  T* y;         // [N, M]
  int64_t N, K, M;
};
template <typename T>
void linear_fwd(const LinearArgs<T>& a);
// The linear_gelu op: a.y = x W^T + b (the pre-activation, saved for backward) and
// out = gelu(a.y), each thread's slab of rows through the GELU right after its product.
// The same bits as linear_fwd then gelu_fwd.
template <typename T>
void linear_gelu_fwd(const LinearArgs<T>& a, T* out);

template <typename T>
struct LinearBwdArgs {
  const T* dy;  // [N, M]
  const T* x;   // [N, K]
  const T* w;   // [M, K]
  T* dx;        // [N, K] written, or nullptr
  T* dw;        // [M, K] accumulated (+=), or nullptr
  T* db;        // [M] accumulated (+=), or nullptr
  int64_t N, K, M;
};
template <typename T>
void linear_bwd(const LinearBwdArgs<T>& a);

}  // namespace loom::ref

// CUDA kernels (matmul.cu). The products themselves go through cuBLASLt in the CUDA backend;
// what lives here is the deterministic bias-gradient reduction (column sums of dy, two
// stages through a bounded partial buffer, no float atomics).
namespace loom::cuda {
size_t bias_grad_scratch_floats(int64_t N, int64_t M);
// db[m] += sum_n dy[n, m]; dy [N, M] bf16, db [M] f32.
void bias_grad(const bf16* dy, float* db, float* scratch, int64_t N, int64_t M, Stream s);
}  // namespace loom::cuda
