// matmul_ref.cpp: CPU reference linear layers on OpenBLAS (float and double, for gradient
// checks). Parameter gradients accumulate (beta = 1) so that micro-batches and tied weights
// add up in the flat gradient buffer.
#include "kernels/matmul/matmul.h"

#include <cblas.h>
#include <omp.h>

namespace loom::ref {

template <>
void gemm<float>(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                 const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A,
              lda, B, ldb, beta, C, ldc);
}
template <>
void gemm<double>(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A,
                  int64_t lda, const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A,
              lda, B, ldb, beta, C, ldc);
}

template <typename T>
void linear_fwd(const LinearArgs<T>& a) {
  if (a.b) {
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < a.N; ++n)
      for (int64_t m = 0; m < a.M; ++m) a.y[n * a.M + m] = a.b[m];
  }
  gemm<T>(false, true, a.N, a.M, a.K, T(1), a.x, a.K, a.w, a.K, a.b ? T(1) : T(0), a.y, a.M);
}

template <typename T>
void linear_bwd(const LinearBwdArgs<T>& a) {
  if (a.dx) gemm<T>(false, false, a.N, a.K, a.M, T(1), a.dy, a.M, a.w, a.K, T(0), a.dx, a.K);
  if (a.dw) gemm<T>(true, false, a.M, a.K, a.N, T(1), a.dy, a.M, a.x, a.K, T(1), a.dw, a.K);
  if (a.db) {
    // Column sums of dy, parallel over columns so each thread owns its outputs.
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < a.M; ++m) {
      T s = 0;
      for (int64_t n = 0; n < a.N; ++n) s += a.dy[n * a.M + m];
      a.db[m] += s;
    }
  }
}

template void linear_fwd<float>(const LinearArgs<float>&);
template void linear_fwd<double>(const LinearArgs<double>&);
template void linear_bwd<float>(const LinearBwdArgs<float>&);
template void linear_bwd<double>(const LinearBwdArgs<double>&);

}  // namespace loom::ref
