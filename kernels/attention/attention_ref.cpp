// attention_ref.cpp: CPU reference causal attention. One (batch, head) pair per OpenMP task;
// each task gathers its head into contiguous scratch and uses BLAS for the two products.
// The [T, T] score matrix is per-thread scratch, rebuilt in backward from the saved lse.
// With a document mask a row's softmax runs over [doc_start, i] instead of [0, i].
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
// Copies head h of part p (0 = q, 1 = k, 2 = v) of batch b into dst [T, D].
template <typename T>
void gather(const T* qkv, int64_t b, int p, int64_t h, int64_t T_, int64_t C, int64_t D, T* dst) {
  for (int64_t t = 0; t < T_; ++t) {
    const T* src = qkv + (b * T_ + t) * 3 * C + p * C + h * D;
    std::copy(src, src + D, dst + t * D);
  }
}
// q, k and v of head h of batch b.
template <typename T>
void gather_qkv(const T* qkv, int64_t b, int64_t h, int64_t T_, int64_t C, int64_t D, T* q, T* k, T* v) {
  gather(qkv, b, 0, h, T_, C, D, q);
  gather(qkv, b, 1, h, T_, C, D, k);
  gather(qkv, b, 2, h, T_, C, D, v);
}
// First key query i of batch b may see: its document's start (0 without a mask).
int64_t first_key(const int32_t* doc_start, int64_t b, int64_t i, int64_t T_) {
  if (!doc_start) return 0;
  const int64_t j0 = doc_start[b * T_ + i];
  LOOM_CHECK(j0 >= 0 && j0 <= i, "attention: doc_start ", j0, " of position ", i, " outside [0, ", i, "]");
  return j0;
}
}  // namespace

template <typename T>
void attention_fwd(const AttentionArgs<T>& a) {
  const int64_t T_ = a.seq, C = a.C, H = a.H, D = C / H;
  const T scale = T(1) / std::sqrt(T(D));
#pragma omp parallel
  {
    std::vector<T> q(T_ * D), k(T_ * D), v(T_ * D), s(T_ * T_), o(T_ * D);
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < a.B * H; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      gather_qkv(a.qkv, b, h, T_, C, D, q.data(), k.data(), v.data());
      gemm<T>(false, true, T_, T_, D, scale, q.data(), D, k.data(), D, T(0), s.data(), T_);
      for (int64_t i = 0; i < T_; ++i) {
        T* row = s.data() + i * T_;
        const int64_t j0 = first_key(a.doc_start, b, i, T_);
        T m = row[j0];
        for (int64_t j = j0 + 1; j <= i; ++j) m = std::max(m, row[j]);
        T sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = j0; j <= i; ++j) sum += (row[j] = vexp<T>(row[j] - m));
        const T inv = T(1) / sum;
        for (int64_t j = j0; j <= i; ++j) row[j] *= inv;
        for (int64_t j = 0; j < j0; ++j) row[j] = 0;
        for (int64_t j = i + 1; j < T_; ++j) row[j] = 0;
        a.lse[bh * T_ + i] = m + std::log(sum);
      }
      gemm<T>(false, false, T_, D, T_, T(1), s.data(), T_, v.data(), D, T(0), o.data(), D);
      for (int64_t t = 0; t < T_; ++t) std::copy(o.data() + t * D, o.data() + (t + 1) * D, a.out + (b * T_ + t) * C + h * D);
    }
  }
}

template <typename T>
void attention_bwd(const AttentionBwdArgs<T>& a) {
  const int64_t T_ = a.seq, C = a.C, H = a.H, D = C / H;
  const T scale = T(1) / std::sqrt(T(D));
#pragma omp parallel
  {
    std::vector<T> q(T_ * D), k(T_ * D), v(T_ * D), p(T_ * T_), dp(T_ * T_), o(T_ * D), dout(T_ * D),
        dq(T_ * D), dk(T_ * D), dv(T_ * D), delta(T_);
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < a.B * H; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      gather_qkv(a.qkv, b, h, T_, C, D, q.data(), k.data(), v.data());
      for (int64_t t = 0; t < T_; ++t) {
        const T* src_o = a.out + (b * T_ + t) * C + h * D;
        const T* src_d = a.dout + (b * T_ + t) * C + h * D;
        std::copy(src_o, src_o + D, o.data() + t * D);
        std::copy(src_d, src_d + D, dout.data() + t * D);
        T d = 0;
        for (int64_t e = 0; e < D; ++e) d += src_o[e] * src_d[e];
        delta[t] = d;
      }
      // P = exp(S - lse) on and below the diagonal (from the document's start), 0 elsewhere:
      // the forward probabilities.
      gemm<T>(false, true, T_, T_, D, scale, q.data(), D, k.data(), D, T(0), p.data(), T_);
      for (int64_t i = 0; i < T_; ++i) {
        T* row = p.data() + i * T_;
        const T l = a.lse[bh * T_ + i];
        const int64_t j0 = first_key(a.doc_start, b, i, T_);
        for (int64_t j = 0; j < j0; ++j) row[j] = 0;
#pragma omp simd
        for (int64_t j = j0; j <= i; ++j) row[j] = vexp<T>(row[j] - l);
        for (int64_t j = i + 1; j < T_; ++j) row[j] = 0;
      }
      gemm<T>(true, false, T_, D, T_, T(1), p.data(), T_, dout.data(), D, T(0), dv.data(), D);   // dV = P^T dO
      gemm<T>(false, true, T_, T_, D, T(1), dout.data(), D, v.data(), D, T(0), dp.data(), T_);  // dP = dO V^T
      for (int64_t i = 0; i < T_; ++i)
        for (int64_t j = 0; j < T_; ++j) dp[i * T_ + j] = p[i * T_ + j] * (dp[i * T_ + j] - delta[i]);  // dS
      gemm<T>(false, false, T_, D, T_, scale, dp.data(), T_, k.data(), D, T(0), dq.data(), D); // dQ = dS K
      gemm<T>(true, false, T_, D, T_, scale, dp.data(), T_, q.data(), D, T(0), dk.data(), D);   // dK = dS^T Q
      for (int64_t t = 0; t < T_; ++t) {
        T* dst = a.dqkv + (b * T_ + t) * 3 * C + h * D;
        std::copy(dq.data() + t * D, dq.data() + (t + 1) * D, dst);
        std::copy(dk.data() + t * D, dk.data() + (t + 1) * D, dst + C);
        std::copy(dv.data() + t * D, dv.data() + (t + 1) * D, dst + 2 * C);
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
