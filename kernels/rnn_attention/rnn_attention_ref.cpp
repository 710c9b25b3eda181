// rnn_attention_ref.cpp: CPU reference of the recurrent decoder's attention step (see
// rnn_attention.h), templated on float/double for the gradient checks.
#include "kernels/rnn_attention/rnn_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace loom::ref {
namespace {

int64_t keys_of(const int32_t* key_len, int64_t b, int64_t Tk) {
  return key_len ? std::clamp<int64_t>(key_len[b], 0, Tk) : Tk;
}

template <typename T>
T score_of(AttnScore s, const T* q, const T* k, const T* v, int64_t A) {
  T acc = 0;
  if (s == AttnScore::Dot) {
    for (int64_t x = 0; x < A; ++x) acc += q[x] * k[x];
  } else {
    for (int64_t x = 0; x < A; ++x) acc += v[x] * std::tanh(q[x] + k[x]);
  }
  return acc;
}

}  // namespace

template <typename T>
void rnn_attention_fwd(const RnnAttentionArgs<T>& a) {
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < a.B; ++b)
    for (int64_t t = 0; t < a.Tq; ++t) {
      const int64_t L = keys_of(a.key_len, b, a.Tk);
      const T* q = a.q + (b * a.Tq + t) * a.A;
      T* p = a.probs + (b * a.Tq + t) * a.Tk;
      T* ctx = a.ctx + (b * a.Tq + t) * a.C;
      T m = -std::numeric_limits<T>::infinity();
      for (int64_t j = 0; j < L; ++j) {
        p[j] = score_of(a.score, q, a.keys + (b * a.Tk + j) * a.A, a.v, a.A);
        m = std::max(m, p[j]);
      }
      T sum = 0;
      for (int64_t j = 0; j < L; ++j) sum += (p[j] = std::exp(p[j] - m));
      for (int64_t j = 0; j < L; ++j) p[j] /= sum;
      std::fill(p + L, p + a.Tk, T(0));
      std::fill(ctx, ctx + a.C, T(0));
      for (int64_t j = 0; j < L; ++j) {
        const T* val = a.values + (b * a.Tk + j) * a.C;
        for (int64_t c = 0; c < a.C; ++c) ctx[c] += p[j] * val[c];
      }
    }
}

// dscore_tj = p_tj (dp_tj - sum_k p_tk dp_tk), dp_tj = dctx_t . values_j: the softmax backward.
template <typename T>
void rnn_attention_bwd(const RnnAttentionBwdArgs<T>& a) {
  const bool add = a.score == AttnScore::Additive;
  if (a.dq) std::fill(a.dq, a.dq + a.B * a.Tq * a.A, T(0));
  if (a.dkeys) std::fill(a.dkeys, a.dkeys + a.B * a.Tk * a.A, T(0));
  if (a.dvalues) std::fill(a.dvalues, a.dvalues + a.B * a.Tk * a.C, T(0));
  std::vector<T> dv(a.A, T(0));
  // Serial over the batch: the key-side gradients gather over query rows, and dv over all.
  for (int64_t b = 0; b < a.B; ++b) {
    const int64_t L = keys_of(a.key_len, b, a.Tk);
    for (int64_t t = 0; t < a.Tq; ++t) {
      const int64_t r = b * a.Tq + t;
      const T* dctx = a.dctx + r * a.C;
      const T* q = a.q + r * a.A;
      const T* p = a.probs + r * a.Tk;
      std::vector<T> dp(static_cast<size_t>(L), T(0));
      T delta = 0;
      for (int64_t j = 0; j < L; ++j) {
        const T* val = a.values + (b * a.Tk + j) * a.C;
        for (int64_t c = 0; c < a.C; ++c) dp[j] += dctx[c] * val[c];
        delta += p[j] * dp[j];
      }
      for (int64_t j = 0; j < L; ++j) {
        const T* k = a.keys + (b * a.Tk + j) * a.A;
        if (a.dvalues)
          for (int64_t c = 0; c < a.C; ++c) a.dvalues[(b * a.Tk + j) * a.C + c] += p[j] * dctx[c];
        const T ds = p[j] * (dp[j] - delta);
        for (int64_t x = 0; x < a.A; ++x) {
          if (!add) {
            if (a.dq) a.dq[r * a.A + x] += ds * k[x];
            if (a.dkeys) a.dkeys[(b * a.Tk + j) * a.A + x] += ds * q[x];
          } else {
            const T u = std::tanh(q[x] + k[x]);
            const T dpre = ds * a.v[x] * (1 - u * u);
            dv[x] += ds * u;
            if (a.dq) a.dq[r * a.A + x] += dpre;
            if (a.dkeys) a.dkeys[(b * a.Tk + j) * a.A + x] += dpre;
          }
        }
      }
    }
  }
  if (a.dv && add)
    for (int64_t x = 0; x < a.A; ++x) a.dv[x] += dv[x];
}

template void rnn_attention_fwd<float>(const RnnAttentionArgs<float>&);
template void rnn_attention_fwd<double>(const RnnAttentionArgs<double>&);
template void rnn_attention_bwd<float>(const RnnAttentionBwdArgs<float>&);
template void rnn_attention_bwd<double>(const RnnAttentionBwdArgs<double>&);

}  // namespace loom::ref
