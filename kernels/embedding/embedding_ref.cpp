// embedding_ref.cpp: CPU reference embedding. Token ids were validated when the data was
// loaded; here an out-of-range id is an internal error, checked cheaply.
#include "kernels/embedding/embedding.h"

#include <algorithm>

#include "core/check.h"

namespace loom::ref {

namespace {
// f(c0, c1) for blocks of 16 channels in parallel: every gradient element (row, channel) has
// one owner thread, which visits the positions in order, so the sum order is fixed.
template <class F>
void for_channel_blocks(int64_t C, F f) {
  constexpr int64_t kBlock = 16;
  const int64_t nblk = (C + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t cb = 0; cb < nblk; ++cb) f(cb * kBlock, std::min(C, (cb + 1) * kBlock));
}
}  // namespace

template <typename T>
void embedding_fwd(const EmbeddingArgs<T>& a) {
  LOOM_CHECK(a.pos0 + a.seq <= a.maxT, "position ", a.pos0 + a.seq, " beyond ", a.maxT);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < a.B * a.seq; ++i) {
    const int64_t t = i % a.seq;
    const int32_t tok = a.tokens[i];
    LOOM_CHECK(tok >= 0 && tok < a.V, "token ", tok, " outside vocabulary ", a.V);
    const T* e = a.wte + tok * a.C;
    const T* p = a.wpe + (a.pos0 + t) * a.C;
    T* o = a.out + i * a.C;
    for (int64_t c = 0; c < a.C; ++c) o[c] = e[c] + p[c];
  }
}

template <typename T>
void embedding_bwd(const EmbeddingBwdArgs<T>& a) {
  for_channel_blocks(a.C, [&](int64_t c0, int64_t c1) {
    for (int64_t i = 0; i < a.B * a.seq; ++i) {
      const int64_t t = i % a.seq;
      const T* d = a.dout + i * a.C;
      T* e = a.dwte + static_cast<int64_t>(a.tokens[i]) * a.C;
      T* p = a.dwpe + (a.pos0 + t) * a.C;
      for (int64_t c = c0; c < c1; ++c) {
        e[c] += d[c];
        p[c] += d[c];
      }
    }
  });
}

template <typename T>
void context_embedding_fwd(const ContextEmbeddingArgs<T>& a) {
  LOOM_CHECK(a.pad >= 0 && a.pad < a.V && a.n >= 1);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < a.B * a.seq; ++i) {
    const int64_t t = i % a.seq;
    for (int j = 0; j < a.n; ++j) {
      const int64_t src = t - a.n + 1 + j;
      const int64_t tok = src >= 0 ? a.tokens[i - t + src] : a.pad;
      LOOM_CHECK(tok >= 0 && tok < a.V, "token ", tok, " outside vocabulary ", a.V);
      const T* e = a.wte + tok * a.E;
      T* o = a.out + (i * a.n + j) * a.E;
      for (int64_t c = 0; c < a.E; ++c) o[c] = e[c];
    }
  }
}

template <typename T>
void context_embedding_bwd(const ContextEmbeddingBwdArgs<T>& a) {
  for_channel_blocks(a.E, [&](int64_t c0, int64_t c1) {
    for (int64_t i = 0; i < a.B * a.seq; ++i) {
      const int64_t t = i % a.seq;
      for (int j = 0; j < a.n; ++j) {
        const int64_t src = t - a.n + 1 + j;
        const int64_t tok = src >= 0 ? a.tokens[i - t + src] : a.pad;
        const T* d = a.dout + (i * a.n + j) * a.E;
        T* e = a.dwte + tok * a.E;
        for (int64_t c = c0; c < c1; ++c) e[c] += d[c];
      }
    }
  });
}

template void context_embedding_fwd<float>(const ContextEmbeddingArgs<float>&);
template void context_embedding_fwd<double>(const ContextEmbeddingArgs<double>&);
template void context_embedding_bwd<float>(const ContextEmbeddingBwdArgs<float>&);
template void context_embedding_bwd<double>(const ContextEmbeddingBwdArgs<double>&);
template void embedding_fwd<float>(const EmbeddingArgs<float>&);
template void embedding_fwd<double>(const EmbeddingArgs<double>&);
template void embedding_bwd<float>(const EmbeddingBwdArgs<float>&);
template void embedding_bwd<double>(const EmbeddingBwdArgs<double>&);

}  // namespace loom::ref
