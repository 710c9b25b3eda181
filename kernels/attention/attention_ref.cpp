// attention_ref.cpp: CPU reference attention (self-attention causal or bidirectional,
// cross-attention, decode). One (batch, head) pair per OpenMP task, queries in blocks of
// kQueryBlock rows: a block's scores are taken only against the keys it may see (from its
// first query's document start to its last query, and below the key length), so masked
// blocks are skipped but for the edge ones, and padded keys are never read. The BLAS calls
// read q, k and v in place in their packed rows (leading dimension 3C for qkv, C and 2C for
// cross-attention's q and kv) and write out / dq / dk / dv in place, so no head is gathered
// into scratch. The [block, keys] score matrix is per-thread scratch, rebuilt in backward from
// the saved lse. Query i sees keys [lo, hi]: lo its document's start (0 without a mask), hi
// min(i, len - 1) when causal, else len - 1.
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
// Measured in one run at T = 256, D = 64 (`loom bench train --op-profile`, L4 d256 B4, two
// threads): forward + backward 14.5-15.5 ms a step with 32 rows, 16.0-16.6 with 64, 18.1-18.6
// with 128 (the blocks' products run at 80-115 GFLOP/s a core either way; 32 skips more).
constexpr int64_t kQueryBlock = 32;

// One attention problem in strided form: self-attention is q, k and v at columns 0, C and 2C
// of the qkv rows (stride 3C), cross-attention q rows of stride C and k, v at columns 0 and C
// of the kv rows (stride 2C). Gradients, when present, share the strides of what they belong to.
template <typename T>
struct Heads {
  const T* q;
  const T* k;
  const T* v;
  int64_t ldq, ldkv;
  int64_t B, Tq, Tk, C, H;
  bool causal;
  const int32_t* doc_start;  // [B, Tq] optional (causal self-attention only)
  const int32_t* key_len;    // [B] optional
  int64_t D() const { return C / H; }
  const T* q_of(int64_t b, int64_t h) const { return q + b * Tq * ldq + h * D(); }
  const T* k_of(int64_t b, int64_t h) const { return k + b * Tk * ldkv + h * D(); }
  const T* v_of(int64_t b, int64_t h) const { return v + b * Tk * ldkv + h * D(); }

  // Valid keys of batch row b.
  int64_t len(int64_t b) const {
    if (!key_len) return Tk;
    const int64_t n = key_len[b];
    LOOM_CHECK(n >= 1 && n <= Tk, "attention: key length ", n, " of batch row ", b, " outside [1, ", Tk, "]");
    return n;
  }
  // First key query i of batch b may see: its document's start (0 without a mask).
  int64_t first_key(int64_t b, int64_t i) const {
    if (!doc_start) return 0;
    const int64_t j0 = doc_start[b * Tq + i];
    LOOM_CHECK(j0 >= 0 && j0 <= i, "attention: doc_start ", j0, " of position ", i, " outside [0, ", i, "]");
    return j0;
  }
  // Last key query i may see.
  int64_t last_key(int64_t i, int64_t n) const { return causal ? std::min(i, n - 1) : n - 1; }
};

template <typename T>
Heads<T> self_heads(const T* qkv, int64_t B, int64_t seq, int64_t C, int64_t H, bool causal, const int32_t* doc_start,
                    const int32_t* key_len) {
  LOOM_CHECK(!doc_start || (causal && !key_len), "attention: the document mask is for causal attention without key padding");
  return {qkv, qkv + C, qkv + 2 * C, 3 * C, 3 * C, B, seq, seq, C, H, causal, doc_start, key_len};
}
template <typename T>
Heads<T> cross_heads(const T* q, const T* kv, int64_t B, int64_t Tq, int64_t Tk, int64_t C, int64_t H,
                     const int32_t* key_len) {
  return {q, kv, kv + C, C, 2 * C, B, Tq, Tk, C, H, false, nullptr, key_len};
}

// Query block [i0, i1) of batch b and the keys [j0, j1) it may see; documents are contiguous
// runs (doc_start nondecreasing), so the block's first query has the block's first key.
struct Block {
  int64_t i0, i1, j0, j1;
  int64_t rows() const { return i1 - i0; }
  int64_t keys() const { return j1 - j0; }
};
template <typename T>
Block query_block(const Heads<T>& p, int64_t b, int64_t i0, int64_t len) {
  const int64_t i1 = std::min(p.Tq, i0 + kQueryBlock);
  return {i0, i1, p.first_key(b, i0), p.last_key(i1 - 1, len) + 1};
}

// s [rows, keys] = scale * Q[i0, i1) K[j0, j1)^T of batch b, head h, read in place.
template <typename T>
void block_scores(const Heads<T>& p, int64_t b, int64_t h, const Block& blk, T scale, T* s) {
  gemm<T>(false, true, blk.rows(), blk.keys(), p.D(), scale, p.q_of(b, h) + blk.i0 * p.ldq, p.ldq,
          p.k_of(b, h) + blk.j0 * p.ldkv, p.ldkv, T(0), s, blk.keys());
}

// out [B, Tq, C], lse [B, H, Tq]
template <typename T>
void forward(const Heads<T>& p, T* out_, T* lse) {
  const int64_t Tq = p.Tq, C = p.C, H = p.H, D = p.D();
  const T scale = T(1) / std::sqrt(T(D));
#pragma omp parallel
  {
    std::vector<T> s(kQueryBlock * p.Tk);
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < p.B * H; ++bh) {
      const int64_t b = bh / H, h = bh % H, len = p.len(b);
      for (int64_t i0 = 0; i0 < Tq; i0 += kQueryBlock) {
        const Block blk = query_block(p, b, i0, len);
        const int64_t nk = blk.keys();
        block_scores(p, b, h, blk, scale, s.data());
        for (int64_t i = blk.i0; i < blk.i1; ++i) {
          // row[c]: key blk.j0 + c; the query sees columns [lo, hi].
          T* row = s.data() + (i - blk.i0) * nk;
          const int64_t lo = p.first_key(b, i) - blk.j0, hi = p.last_key(i, len) - blk.j0;
          T m = row[lo];
#pragma omp simd reduction(max : m)
          for (int64_t c = lo + 1; c <= hi; ++c) m = vmax(m, row[c]);
          T sum = 0;
#pragma omp simd reduction(+ : sum)
          for (int64_t c = lo; c <= hi; ++c) sum += (row[c] = vexp<T>(row[c] - m));
          const T inv = T(1) / sum;
#pragma omp simd
          for (int64_t c = lo; c <= hi; ++c) row[c] *= inv;
          for (int64_t c = 0; c < lo; ++c) row[c] = 0;
          for (int64_t c = hi + 1; c < nk; ++c) row[c] = 0;
          lse[bh * Tq + i] = m + std::log(sum);
        }
        // out[i0, i1) = P V[j0, j1), written in place into head h's columns of out.
        gemm<T>(false, false, blk.rows(), D, nk, T(1), s.data(), nk, p.v_of(b, h) + blk.j0 * p.ldkv, p.ldkv, T(0),
                out_ + (b * Tq + blk.i0) * C + h * D, C);
      }
    }
  }
}

// dq, dk, dv: strided like q, k and v (ldq, ldkv); every row of them is written.
template <typename T>
void backward(const Heads<T>& p, const T* dout_, const T* out_, const T* lse, T* dq, T* dk, T* dv) {
  const int64_t Tq = p.Tq, Tk = p.Tk, C = p.C, H = p.H, D = p.D();
  const T scale = T(1) / std::sqrt(T(D));
#pragma omp parallel
  {
    std::vector<T> pm(kQueryBlock * Tk), dp(kQueryBlock * Tk), delta(Tq);
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < p.B * H; ++bh) {
      const int64_t b = bh / H, h = bh % H, len = p.len(b);
      const T* q_h = p.q_of(b, h);  // row t at q_h + t ldq
      const T* k_h = p.k_of(b, h);
      const T* v_h = p.v_of(b, h);
      T* dq_h = dq + b * Tq * p.ldq + h * D;
      T* dk_h = dk + b * Tk * p.ldkv + h * D;
      T* dv_h = dv + b * Tk * p.ldkv + h * D;
      const T* dout = dout_ + b * Tq * C + h * D;  // row t at dout + t C
      // dK and dV accumulate over the query blocks that see each key; padded keys stay 0.
      for (int64_t t = 0; t < Tk; ++t) {
        std::fill(dk_h + t * p.ldkv, dk_h + t * p.ldkv + D, T(0));
        std::fill(dv_h + t * p.ldkv, dv_h + t * p.ldkv + D, T(0));
      }
      for (int64_t t = 0; t < Tq; ++t) {
        const T* o = out_ + (b * Tq + t) * C + h * D;
        const T* d = dout + t * C;
        delta[t] = lane_sum<T>(D, [o, d](int64_t e) { return o[e] * d[e]; });
      }
      for (int64_t i0 = 0; i0 < Tq; i0 += kQueryBlock) {
        const Block blk = query_block(p, b, i0, len);
        const int64_t nq = blk.rows(), nk = blk.keys();
        // P = exp(S - lse) where the query sees the key, 0 elsewhere: the forward probabilities.
        block_scores(p, b, h, blk, scale, pm.data());
        for (int64_t i = blk.i0; i < blk.i1; ++i) {
          // row[c]: key blk.j0 + c; the query sees columns [lo, hi].
          T* row = pm.data() + (i - blk.i0) * nk;
          const T l = lse[bh * Tq + i];
          const int64_t lo = p.first_key(b, i) - blk.j0, hi = p.last_key(i, len) - blk.j0;
          for (int64_t c = 0; c < lo; ++c) row[c] = 0;
#pragma omp simd
          for (int64_t c = lo; c <= hi; ++c) row[c] = vexp<T>(row[c] - l);
          for (int64_t c = hi + 1; c < nk; ++c) row[c] = 0;
        }
        const T* dout_blk = dout + blk.i0 * C;
        const int64_t kv = blk.j0 * p.ldkv;  // offset of key j0's row
        // dV[j0, j1) += P^T dO
        gemm<T>(true, false, nk, D, nq, T(1), pm.data(), nk, dout_blk, C, T(1), dv_h + kv, p.ldkv);
        // dP = dO V[j0, j1)^T
        gemm<T>(false, true, nq, nk, D, T(1), dout_blk, C, v_h + kv, p.ldkv, T(0), dp.data(), nk);
        for (int64_t r = 0; r < nq; ++r) {
          const T dl = delta[blk.i0 + r];
#pragma omp simd
          for (int64_t j = 0; j < nk; ++j) dp[r * nk + j] = pm[r * nk + j] * (dp[r * nk + j] - dl);  // dS
        }
        // dQ[i0, i1) = scale dS K[j0, j1);  dK[j0, j1) += scale dS^T Q[i0, i1)
        gemm<T>(false, false, nq, D, nk, scale, dp.data(), nk, k_h + kv, p.ldkv, T(0), dq_h + blk.i0 * p.ldq, p.ldq);
        gemm<T>(true, false, nk, D, nq, scale, dp.data(), nk, q_h + blk.i0 * p.ldq, p.ldq, T(1), dk_h + kv, p.ldkv);
      }
    }
  }
}

// o[D] = softmax(scale q . k_j) v_j over keys j < n (rows k + j ldk, v + j ldv); s: n scratch.
template <typename T>
void attend_row(const T* q, const T* k, const T* v, int64_t ld, int64_t n, int64_t D, T scale, T* s, T* o) {
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j < n; ++j) {
    T d = 0;
    for (int64_t e = 0; e < D; ++e) d += q[e] * k[j * ld + e];
    s[j] = d * scale;
    m = std::max(m, s[j]);
  }
  T sum = 0;
  for (int64_t j = 0; j < n; ++j) sum += (s[j] = std::exp(s[j] - m));
  for (int64_t e = 0; e < D; ++e) o[e] = 0;
  for (int64_t j = 0; j < n; ++j) {
    const T w = s[j] / sum;
    for (int64_t e = 0; e < D; ++e) o[e] += w * v[j * ld + e];
  }
}
}  // namespace

template <typename T>
void attention_fwd(const AttentionArgs<T>& a) {
  forward(self_heads(a.qkv, a.B, a.seq, a.C, a.H, a.causal, a.doc_start, a.key_len), a.out, a.lse);
}

template <typename T>
void attention_bwd(const AttentionBwdArgs<T>& a) {
  backward(self_heads(a.qkv, a.B, a.seq, a.C, a.H, a.causal, a.doc_start, a.key_len), a.dout, a.out, a.lse, a.dqkv,
           a.dqkv + a.C, a.dqkv + 2 * a.C);
}

template <typename T>
void cross_attention_fwd(const CrossAttentionArgs<T>& a) {
  forward(cross_heads(a.q, a.kv, a.B, a.Tq, a.Tk, a.C, a.H, a.key_len), a.out, a.lse);
}

template <typename T>
void cross_attention_bwd(const CrossAttentionBwdArgs<T>& a) {
  backward(cross_heads(a.q, a.kv, a.B, a.Tq, a.Tk, a.C, a.H, a.key_len), a.dout, a.out, a.lse, a.dq, a.dkv,
           a.dkv + a.C);
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
    for (int64_t t = 0; t < a.Tn; ++t)
      attend_row(a.qkv + (b * a.Tn + t) * 3 * C + h * D, kc, vc, D, a.pos0 + t + 1, D, scale, s.data(),
                 a.out + (b * a.Tn + t) * C + h * D);
  }
}

template <typename T>
void cross_attention_decode(const CrossAttentionDecodeArgs<T>& a) {
  const int64_t C = a.C, H = a.H, D = C / H;
  LOOM_CHECK(a.Bk > 0 && a.Bq % a.Bk == 0, "cross_attention_decode: ", a.Bq, " query rows for ", a.Bk, " key rows");
  const int64_t per = a.Bq / a.Bk;
  const Heads<T> p = cross_heads(a.q, a.kv, a.Bk, a.Tn, a.Tk, C, H, a.key_len);
  const T scale = T(1) / std::sqrt(T(D));
#pragma omp parallel for schedule(static)
  for (int64_t bh = 0; bh < a.Bq * H; ++bh) {
    const int64_t b = bh / H, h = bh % H, bk = b / per;
    std::vector<T> s(a.Tk);
    for (int64_t t = 0; t < a.Tn; ++t)
      attend_row(a.q + (b * a.Tn + t) * C + h * D, p.k_of(bk, h), p.v_of(bk, h), p.ldkv, p.len(bk), D, scale,
                 s.data(), a.out + (b * a.Tn + t) * C + h * D);
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
template void cross_attention_fwd<float>(const CrossAttentionArgs<float>&);
template void cross_attention_fwd<double>(const CrossAttentionArgs<double>&);
template void cross_attention_bwd<float>(const CrossAttentionBwdArgs<float>&);
template void cross_attention_bwd<double>(const CrossAttentionBwdArgs<double>&);
template void cross_attention_decode<float>(const CrossAttentionDecodeArgs<float>&);
template void cross_attention_decode<double>(const CrossAttentionDecodeArgs<double>&);

}  // namespace loom::ref
