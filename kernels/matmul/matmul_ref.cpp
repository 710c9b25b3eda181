// matmul_ref.cpp: CPU reference linear layers on OpenBLAS (float and double, for gradient
// checks). Parameter gradients accumulate (beta = 1) so that micro-batches and tied weights
// add up in the flat gradient buffer.
#include "kernels/matmul/matmul.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>

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
    // Column sums of dy. Each thread owns a block of columns and walks the rows in order
    // (contiguous, vectorised), so the sum order is fixed whatever the thread count.
    constexpr int64_t kCols = 64;
    const int64_t blocks = (a.M + kCols - 1) / kCols;
#pragma omp parallel for schedule(static)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t m0 = blk * kCols, m1 = std::min(a.M, m0 + kCols);
      T acc[kCols] = {};
      for (int64_t n = 0; n < a.N; ++n) {
        const T* row = a.dy + n * a.M;
#pragma omp simd
        for (int64_t m = m0; m < m1; ++m) acc[m - m0] += row[m];
      }
      for (int64_t m = m0; m < m1; ++m) a.db[m] += acc[m - m0];
    }
  }
}

template void linear_fwd<float>(const LinearArgs<float>&);
template void linear_fwd<double>(const LinearArgs<double>&);
template void linear_bwd<float>(const LinearBwdArgs<float>&);
template void linear_bwd<double>(const LinearBwdArgs<double>&);

}  // namespace loom::ref
