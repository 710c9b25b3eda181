// matmul_ref.cpp: CPU reference linear layers on OpenBLAS (float and double, for gradient
// checks). Parameter gradients accumulate (beta = 1) so that micro-batches and tied weights
// add up in the flat gradient buffer.
#include "kernels/matmul/matmul.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <utility>

#include "kernels/gelu/gelu.h"

namespace loom::ref {

namespace {
void blas_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
               const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda,
              B, ldb, beta, C, ldc);
}
void blas_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
               const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda,
              B, ldb, beta, C, ldc);
}

// Rows of a thread's share are a multiple of this (the widest register tile of OpenBLAS's
// kernels), so no thread ends on a ragged edge tile.
constexpr int64_t kRowGrain = 16;

// Rows [lo, hi) of part `i` of `parts` of `extent` rows, cut at multiples of kRowGrain.
inline std::pair<int64_t, int64_t> grain_part(int64_t extent, int64_t parts, int64_t i) {
  const int64_t grains = (extent + kRowGrain - 1) / kRowGrain, share = (grains + parts - 1) / parts * kRowGrain;
  const int64_t lo = std::min(extent, i * share);
  return {lo, std::min(extent, lo + share)};
}

// Rows [lo, hi) of C = alpha op(A) op(B) + beta C as one BLAS call: rows of A, or columns of a
// transposed A.
template <typename T>
void row_slab_gemm(bool ta, bool tb, int64_t lo, int64_t hi, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
                   const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  blas_gemm(ta, tb, hi - lo, N, K, alpha, ta ? A + lo : A + lo * lda, lda, B, ldb, beta, C + lo * ldc, ldc);
}

// C = alpha op(A) op(B) + beta C with C's rows (or, for a short C, its columns) cut into one
// slab per OpenMP thread, each slab a single-threaded BLAS call (OpenBLAS's OpenMP build runs
// single-threaded inside a parallel region). Measured on the products of a GPT step (K = 256
// and 1,024 inner dimensions, 1,024 token rows), OpenBLAS's own threading spends 15-25% more
// CPU time per FLOP than the slabs on the products with a 256 inner dimension and the same on
// the rest (docs/performance.md). The cut depends only on the shape and the thread count, so
// results are deterministic for a given OMP_NUM_THREADS. They equal OpenBLAS's threaded product
// bit for bit on the step's shapes (1,024 rows), but not in general: OpenBLAS picks its kernel by
// the slab's size, and a short slab (e.g. 8 rows) can round differently.
// before(r0, r1, c0, c1) and after(...) run on the same thread around the product of its part
// of C (rows [r0, r1), columns [c0, c1)): filling C with a bias before a beta = 1 product, an
// epilogue on the part while it is still in that core's cache.
struct NoSlabPass {
  void operator()(int64_t, int64_t, int64_t, int64_t) const {}
};
template <typename T, class Before = NoSlabPass, class After = NoSlabPass>
void slab_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
               int64_t ldb, T beta, T* C, int64_t ldc, Before before = {}, After after = {}) {
  const int64_t threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  const bool by_rows = M >= threads * kRowGrain, by_cols = !by_rows && N >= threads * kRowGrain;
  if (threads == 1 || (!by_rows && !by_cols)) {
    before(0, M, 0, N);
    blas_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    after(0, M, 0, N);
    return;
  }
  const int64_t extent = by_rows ? M : N;
#pragma omp parallel num_threads(threads)
  {
    const auto [lo, hi] = grain_part(extent, threads, omp_get_thread_num());
    if (hi > lo) {
      if (by_rows) {
        before(lo, hi, 0, N);
        row_slab_gemm(ta, tb, lo, hi, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        after(lo, hi, 0, N);
      } else {  // columns [lo, hi) of C: columns of B, or rows of a transposed B
        before(0, M, lo, hi);
        blas_gemm(ta, tb, M, hi - lo, K, alpha, A, lda, tb ? B + lo * ldb : B + lo, ldb, beta, C + lo, ldc);
        after(0, M, lo, hi);
      }
    }
  }
}

// y = x W^T (+ b), then after(r0, r1, c0, c1) on each thread's part of y. The bias is written
// into the part by the thread that then adds the product to it (beta = 1), as one pass would.
template <typename T, class After = NoSlabPass>
void linear_slabs(const LinearArgs<T>& a, After after = {}) {
  auto fill_bias = [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    if (!a.b) return;
    for (int64_t n = r0; n < r1; ++n) {
      T* row = a.y + n * a.M;
#pragma omp simd
      for (int64_t m = c0; m < c1; ++m) row[m] = a.b[m];
    }
  };
  slab_gemm<T>(false, true, a.N, a.M, a.K, T(1), a.x, a.K, a.w, a.K, a.b ? T(1) : T(0), a.y, a.M, fill_bias, after);
}
}  // namespace

template <>
void gemm<float>(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                 const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  slab_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
template <>
void gemm<double>(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
                  const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  slab_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void gemm_blas_threads(int64_t M, int64_t N, int64_t K, const float* A, const float* B, float* C) {
  blas_gemm(false, false, M, N, K, 1.f, A, K, B, N, 0.f, C, N);
}

template <typename T>
void linear_fwd(const LinearArgs<T>& a) {
  linear_slabs(a);
}

// y[i] = gelu(x[i]) over one contiguous run of a slab. Kept out of line: inlined into the
// epilogue's lambda inside the parallel region, GCC's vector loop ran 2.5x slower (measured
// at N 1,024 K 256 M 1,024, one core: the fused op 7.2 ms against 6.3 ms out of line).
template <typename T>
__attribute__((noinline)) void gelu_span(const T* __restrict x, T* __restrict y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = gelu_tanh<T>(x[i]);
}

template <typename T>
void linear_gelu_fwd(const LinearArgs<T>& a, T* out) {
  linear_slabs(a, [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    for (int64_t n = r0; n < r1; ++n) gelu_span(a.y + n * a.M + c0, out + n * a.M + c0, c1 - c0);
  });
}

// dx = dy W and dW += dy^T x as two teams of threads in one parallel region: the two products
// have the same FLOPs (2 N M K), so each of two equal teams takes one, its rows cut into one
// slab per thread.
// Against the two products one after another, each cut over every thread: one fork and join
// instead of two, and each team packs the shared operand of its product for half as many
// slabs. Measured with two threads at the GPT step's shapes (L4 d256 B4 T256, same run,
// alternated): linear_bwd 108.6-110.4 ms a step against 109.6-112.6. The split depends only
// on the shape and the thread count, so results are deterministic for a given
// OMP_NUM_THREADS.
template <typename T>
void dx_dw_teams(const LinearBwdArgs<T>& a, int threads) {
  const int team = threads / 2;  // threads is even
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    if (t < team) {  // rows of dx [N, K]: rows of dy
      const auto [lo, hi] = grain_part(a.N, team, t);
      if (hi > lo) row_slab_gemm(false, false, lo, hi, a.K, a.M, T(1), a.dy, a.M, a.w, a.K, T(0), a.dx, a.K);
    } else {  // rows of dW [M, K]: columns of dy
      const auto [lo, hi] = grain_part(a.M, team, t - team);
      if (hi > lo) row_slab_gemm(true, false, lo, hi, a.K, a.N, T(1), a.dy, a.M, a.x, a.K, T(1), a.dw, a.K);
    }
  }
}

template <typename T>
void linear_bwd(const LinearBwdArgs<T>& a) {
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (a.dx && a.dw && threads % 2 == 0) {  // odd counts (one included): teams of unequal FLOP rates
    dx_dw_teams(a, threads);
  } else {
    if (a.dx) gemm<T>(false, false, a.N, a.K, a.M, T(1), a.dy, a.M, a.w, a.K, T(0), a.dx, a.K);
    if (a.dw) gemm<T>(true, false, a.M, a.K, a.N, T(1), a.dy, a.M, a.x, a.K, T(1), a.dw, a.K);
  }
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
template void linear_gelu_fwd<float>(const LinearArgs<float>&, float*);
template void linear_gelu_fwd<double>(const LinearArgs<double>&, double*);
template void linear_bwd<float>(const LinearBwdArgs<float>&);
template void linear_bwd<double>(const LinearBwdArgs<double>&);

}  // namespace loom::ref
