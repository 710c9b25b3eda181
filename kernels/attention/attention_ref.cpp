// attention_ref.cpp: CPU reference causal attention. One (batch, head) pair per OpenMP task,
// queries in blocks of kQueryBlock rows: a block's scores are taken only against the keys it
// may see (from its first query's document start to its last query), so the masked upper
// triangle is skipped but for the diagonal blocks. The BLAS calls read q, k and v in place
// in the packed qkv rows (leading dimension 3C) and write out / dqkv in place, so no head is
// gathered into scratch. The [block, keys] score matrix is per-thread scratch, rebuilt in
// backward from the saved lse. With a document mask a row's softmax runs over
// [doc_start, i] instead of [0, i].
#include "kernels/attention/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/check.h"
#include "core/vmath.h"
#include "kernels/matmul/matmul.h"

namespace loom::ref {

namespace {
// Rows per query block: large enough for BLAS to run near its rate on D = 64 heads, small
// enough that the skipped share of the masked triangle (1/2 - kQueryBlock / 2T) stays large.
constexpr int64_t kQueryBlock = 64;

// First key query i of batch b may see: its document's start (0 without a mask).
int64_t first_key(const int32_t* doc_start, int64_t b, int64_t i, int64_t T_) {
  if (!doc_start) return 0;
  const int64_t j0 = doc_start[b * T_ + i];
  LOOM_CHECK(j0 >= 0 && j0 <= i, "attention: doc_start ", j0, " of position ", i, " outside [0, ", i, "]");
  return j0;
}

// Query block [i0, i1) of batch b and the keys [j0, i1) it may see; documents are contiguous
// runs (doc_start nondecreasing), so the block's first query has the block's first key.
struct Block {
  int64_t i0, i1, j0;
  int64_t rows() const { return i1 - i0; }
  int64_t keys() const { return i1 - j0; }
};
Block query_block(const int32_t* doc_start, int64_t b, int64_t i0, int64_t T_) {
  const int64_t i1 = std::min(T_, i0 + kQueryBlock);
  return {i0, i1, first_key(doc_start, b, i0, T_)};
}

// s [rows, keys] = scale * Q[i0, i1) K[j0, i1)^T, read in place from the packed qkv rows of
// batch b, head h.
template <typename T>
void block_scores(const T* qkv, int64_t b, int64_t h, int64_t T_, int64_t C, int64_t D, const Block& blk,
                  T scale, T* s) {
  const T* base = qkv + b * T_ * 3 * C + h * D;
  gemm<T>(false, true, blk.rows(), blk.keys(), D, scale, base + blk.i0 * 3 * C, 3 * C, base + C + blk.j0 * 3 * C,
          3 * C, T(0), s, blk.keys());
}
}  // namespace

template <typename T>
void attention_fwd(const AttentionArgs<T>& a) {
  const int64_t T_ = a.seq, C = a.C, H = a.H, D = C / H;
  const T scale = T(1) / std::sqrt(T(D));
#pragma omp parallel
  {
    std::vector<T> s(kQueryBlock * T_);
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < a.B * H; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      for (int64_t i0 = 0; i0 < T_; i0 += kQueryBlock) {
        const Block blk = query_block(a.doc_start, b, i0, T_);
        const int64_t nk = blk.keys();
        block_scores(a.qkv, b, h, T_, C, D, blk, scale, s.data());
        for (int64_t i = blk.i0; i < blk.i1; ++i) {
          // row[c]: key blk.j0 + c; the query sees columns [lo, hi].
          T* row = s.data() + (i - blk.i0) * nk;
          const int64_t lo = first_key(a.doc_start, b, i, T_) - blk.j0, hi = i - blk.j0;
          T m = row[lo];
          for (int64_t c = lo + 1; c <= hi; ++c) m = std::max(m, row[c]);
          T sum = 0;
#pragma omp simd reduction(+ : sum)
          for (int64_t c = lo; c <= hi; ++c) sum += (row[c] = vexp<T>(row[c] - m));
          const T inv = T(1) / sum;
          for (int64_t c = lo; c <= hi; ++c) row[c] *= inv;
          for (int64_t c = 0; c < lo; ++c) row[c] = 0;
          for (int64_t c = hi + 1; c < nk; ++c) row[c] = 0;
          a.lse[bh * T_ + i] = m + std::log(sum);
        }
        // out[i0, i1) = P V[j0, i1), written in place into head h's columns of out.
        gemm<T>(false, false, blk.rows(), D, nk, T(1), s.data(), nk, a.qkv + (b * T_ + blk.j0) * 3 * C + 2 * C + h * D,
                3 * C, T(0), a.out + (b * T_ + blk.i0) * C + h * D, C);
      }
    }
  }
}

template <typename T>
void attention_bwd(const AttentionBwdArgs<T>& a) {
  const int64_t T_ = a.seq, C = a.C, H = a.H, D = C / H;
  const T scale = T(1) / std::sqrt(T(D));
#pragma omp parallel
  {
    std::vector<T> p(kQueryBlock * T_), dp(kQueryBlock * T_), delta(T_);
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < a.B * H; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const T* qkv_h = a.qkv + b * T_ * 3 * C + h * D;  // q of row t at qkv_h + t 3C; k at +C, v at +2C
      T* dqkv_h = a.dqkv + b * T_ * 3 * C + h * D;
      const T* dout = a.dout + b * T_ * C + h * D;  // row t at dout + t C
      // dK and dV accumulate over the query blocks that see each key.
      for (int64_t t = 0; t < T_; ++t) {
        std::fill(dqkv_h + t * 3 * C + C, dqkv_h + t * 3 * C + C + D, T(0));
        std::fill(dqkv_h + t * 3 * C + 2 * C, dqkv_h + t * 3 * C + 2 * C + D, T(0));
        const T* o = a.out + (b * T_ + t) * C + h * D;
        T d = 0;
        for (int64_t e = 0; e < D; ++e) d += o[e] * dout[t * C + e];
        delta[t] = d;
      }
      for (int64_t i0 = 0; i0 < T_; i0 += kQueryBlock) {
        const Block blk = query_block(a.doc_start, b, i0, T_);
        const int64_t nq = blk.rows(), nk = blk.keys();
        // P = exp(S - lse) on and below the diagonal (from the document's start), 0 elsewhere:
        // the forward probabilities.
        block_scores(a.qkv, b, h, T_, C, D, blk, scale, p.data());
        for (int64_t i = blk.i0; i < blk.i1; ++i) {
          // row[c]: key blk.j0 + c; the query sees columns [lo, hi].
          T* row = p.data() + (i - blk.i0) * nk;
          const T l = a.lse[bh * T_ + i];
          const int64_t lo = first_key(a.doc_start, b, i, T_) - blk.j0, hi = i - blk.j0;
          for (int64_t c = 0; c < lo; ++c) row[c] = 0;
#pragma omp simd
          for (int64_t c = lo; c <= hi; ++c) row[c] = vexp<T>(row[c] - l);
          for (int64_t c = hi + 1; c < nk; ++c) row[c] = 0;
        }
        const T* dout_blk = dout + blk.i0 * C;
        const int64_t kv = blk.j0 * 3 * C;  // offset of key j0's row
        // dV[j0, i1) += P^T dO
        gemm<T>(true, false, nk, D, nq, T(1), p.data(), nk, dout_blk, C, T(1), dqkv_h + kv + 2 * C, 3 * C);
        // dP = dO V[j0, i1)^T
        gemm<T>(false, true, nq, nk, D, T(1), dout_blk, C, qkv_h + kv + 2 * C, 3 * C, T(0), dp.data(), nk);
        for (int64_t r = 0; r < nq; ++r) {
          const T dl = delta[blk.i0 + r];
#pragma omp simd
          for (int64_t j = 0; j < nk; ++j) dp[r * nk + j] = p[r * nk + j] * (dp[r * nk + j] - dl);  // dS
        }
        // dQ[i0, i1) = scale dS K[j0, i1);  dK[j0, i1) += scale dS^T Q[i0, i1)
        gemm<T>(false, false, nq, D, nk, scale, dp.data(), nk, qkv_h + kv + C, 3 * C, T(0), dqkv_h + blk.i0 * 3 * C, 3 * C);
        gemm<T>(true, false, nk, D, nq, scale, dp.data(), nk, qkv_h + blk.i0 * 3 * C, 3 * C, T(1), dqkv_h + kv + C, 3 * C);
      }
    }
  }
}

template <typename T>
void attention_decode(const AttentionDecodeArgs<T>& a) {
  const int64_t C = a.C, H = a.H, D = C / H, maxT = a.maxT;
  const T scale = T(1) / std::sqrt(T(D));
#pragma omp parallel for schedule(static)
  for (int64_t bh = 0; bh < a.B * H; ++bh) {
    const int64_t b = bh / H, h = bh % H;
    T* kc = a.kcache + bh * maxT * D;
    T* vc = a.vcache + bh * maxT * D;
    for (int64_t t = 0; t < a.Tn; ++t) {
      const T* row = a.qkv + (b * a.Tn + t) * 3 * C;
      std::copy(row + C + h * D, row + C + (h + 1) * D, kc + (a.pos0 + t) * D);
      std::copy(row + 2 * C + h * D, row + 2 * C + (h + 1) * D, vc + (a.pos0 + t) * D);
    }
    std::vector<T> s(a.pos0 + a.Tn);
    for (int64_t t = 0; t < a.Tn; ++t) {
      const T* q = a.qkv + (b * a.Tn + t) * 3 * C + h * D;
      const int64_t n = a.pos0 + t + 1;
      T m = -std::numeric_limits<T>::infinity();
      for (int64_t j = 0; j < n; ++j) {
        T d = 0;
        for (int64_t e = 0; e < D; ++e) d += q[e] * kc[j * D + e];
        s[j] = d * scale;
        m = std::max(m, s[j]);
      }
      T sum = 0;
      for (int64_t j = 0; j < n; ++j) sum += (s[j] = std::exp(s[j] - m));
      T* o = a.out + (b * a.Tn + t) * C + h * D;
      for (int64_t e = 0; e < D; ++e) o[e] = 0;
      for (int64_t j = 0; j < n; ++j) {
        const T w = s[j] / sum;
        for (int64_t e = 0; e < D; ++e) o[e] += w * vc[j * D + e];
      }
    }
  }
}

void document_starts(const int32_t* tokens, int32_t* doc_start, int64_t B, int64_t T_, int32_t eot) {
  for (int64_t b = 0; b < B; ++b) {
    int32_t start = 0;
    for (int64_t t = 0; t < T_; ++t) {
      if (tokens[b * T_ + t] == eot) start = static_cast<int32_t>(t);
      doc_start[b * T_ + t] = start;
    }
  }
}

template void attention_fwd<float>(const AttentionArgs<float>&);
template void attention_fwd<double>(const AttentionArgs<double>&);
template void attention_bwd<float>(const AttentionBwdArgs<float>&);
template void attention_bwd<double>(const AttentionBwdArgs<double>&);
template void attention_decode<float>(const AttentionDecodeArgs<float>&);
template void attention_decode<double>(const AttentionDecodeArgs<double>&);

}  // namespace loom::ref
