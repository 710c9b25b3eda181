// embedding_ref.cpp: CPU reference embedding. Token ids were validated when the data was
// loaded; here an out-of-range id is an internal error, checked cheaply.
#include "kernels/embedding/embedding.h"

#include "engine/core/check.h"

namespace loom::ref {

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
  // Parallel over channel blocks: every (row, channel) of dwte/dwpe has one owner thread and
  // tokens are visited in order, so the sum order is fixed.
  const int64_t block = 16;
  const int64_t nblk = (a.C + block - 1) / block;
#pragma omp parallel for schedule(static)
  for (int64_t cb = 0; cb < nblk; ++cb) {
    const int64_t c0 = cb * block, c1 = std::min(a.C, c0 + block);
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
  }
}

template void embedding_fwd<float>(const EmbeddingArgs<float>&);
template void embedding_fwd<double>(const EmbeddingArgs<double>&);
template void embedding_bwd<float>(const EmbeddingBwdArgs<float>&);
template void embedding_bwd<double>(const EmbeddingBwdArgs<double>&);

}  // namespace loom::ref
