// pair_batches.cpp: see pair_batches.h.
#include "launch/run/pair_batches.h"

#include <algorithm>

#include "core/check.h"

namespace loom {

void check_pair_lengths(const PairSplit& split, const ModelConfig& model) {
  uint64_t src = 0, tgt = 0;
  for (uint64_t i = 0; i < split.size(); ++i) {
    src = std::max<uint64_t>(src, split.source_len(i) + 1);
    tgt = std::max<uint64_t>(tgt, split.target_len(i) + 1);
  }
  LOOM_USER_CHECK(src <= static_cast<uint64_t>(model.src_len), "model.src_len: ", model.src_len,
                  " is shorter than the longest source of ", split.path(), " (", src,
                  " tokens with EOS); raise it or prepare with a smaller --max-len");
  LOOM_USER_CHECK(tgt <= static_cast<uint64_t>(model.seq_len), "model.seq_len: ", model.seq_len,
                  " is shorter than the longest target of ", split.path(), " (", tgt,
                  " tokens with EOS); raise it or prepare with a smaller --max-len");
}

std::vector<int> bucket_lengths(int L, int k) {
  LOOM_CHECK(L >= 1 && k >= 1, "bucket lengths of ", L, " positions in ", k);
  std::vector<int> out;
  for (int64_t j = 1; j <= k; ++j) {
    const int len = static_cast<int>((static_cast<int64_t>(L) * j + k - 1) / k);
    if (out.empty() || len > out.back()) out.push_back(len);
  }
  return out;
}

int bucket_for(const std::vector<int>& lengths, int n) {
  const auto it = std::lower_bound(lengths.begin(), lengths.end(), n);
  LOOM_CHECK(it != lengths.end(), "a batch of length ", n, " beyond its buckets");
  return *it;
}

void fill_pair_inputs(const PairBatch& b, const ModelGraph& mg, uint32_t pad, PairInputs& out) {
  const int B = mg.B, S = mg.S, T = mg.T;
  const bool one_sequence = mg.source < 0;
  LOOM_CHECK(b.rows == B && b.S <= S && b.T <= graph_target_len(mg), "pair batch of ", b.rows, "x(",
             b.S, ",", b.T, ") for a graph of ", B, "x(", S, ",", T, ")");
  const auto p = static_cast<int32_t>(pad);
  out.source.assign(one_sequence ? 0 : static_cast<size_t>(B) * S, p);
  out.source_len.assign(b.source_len.begin(), b.source_len.end());
  out.tokens.assign(static_cast<size_t>(B) * T, p);
  out.targets.assign(static_cast<size_t>(B) * T, kIgnoreTarget);
  out.target_start.assign(static_cast<size_t>(B), 0);
  out.target_tokens = out.real_tokens = 0;
  for (int r = 0; r < B; ++r) {
    const int n = b.target_len[r], ls = b.source_len[r];
    auto src = b.source.begin() + static_cast<size_t>(r) * b.S;
    auto row = out.tokens.begin() + static_cast<size_t>(r) * T;
    // One sequence: the source and its EOS, then the decoder's input from the next position.
    const int start = one_sequence ? ls : 0;
    if (one_sequence) std::copy_n(src, ls, row);
    else std::copy_n(src, b.S, out.source.begin() + static_cast<size_t>(r) * S);
    std::copy_n(b.decoder_input.begin() + static_cast<size_t>(r) * b.T, one_sequence ? n : b.T, row + start);
    std::copy_n(b.target.begin() + static_cast<size_t>(r) * b.T, n, out.targets.begin() + static_cast<size_t>(r) * T + start);
    out.target_start[static_cast<size_t>(r)] = start;
    out.target_tokens += n;
    out.real_tokens += n + ls;
  }
  out.all_tokens = static_cast<int64_t>(B) * (one_sequence ? T : S + T);
}

void set_pair_inputs(Executor& ex, const ModelGraph& mg, const PairInputs& in) {
  if (mg.source >= 0) {
    ex.set_input(mg.source, in.source.data(), in.source.size() * 4);
    ex.set_input(mg.source_len, in.source_len.data(), in.source_len.size() * 4);
  }
  ex.set_input(mg.tokens, in.tokens.data(), in.tokens.size() * 4);
  ex.set_input(mg.targets, in.targets.data(), in.targets.size() * 4);
}

std::unique_ptr<PairLoader> make_pair_loader(const PairSplit& split, const PairVocab& vocab, int rows, int world,
                                             uint64_t seed) {
  return std::make_unique<PairLoader>(split, vocab,
                                      PairLoaderOptions{.batch_size = rows * world, .seed = seed, .world = world});
}

double eval_pairs(Executor& ex, const ModelGraph& mg, const PairSplit& split, const PairVocab& vocab, uint64_t seed,
                  int batches, Comm& comm) {
  const auto loader = make_pair_loader(split, vocab, mg.B, comm.world(), seed);
  PairBatch b;
  PairInputs in;
  double sum = 0, real = 0;
  for (int i = 0; i < batches; ++i) {
    loader->next_batch(comm.rank(), b);
    fill_pair_inputs(b, mg, vocab.pad(), in);
    set_pair_inputs(ex, mg, in);
    ex.forward();
    sum += ex.fetch_f32(mg.loss)[0] * static_cast<double>(mg.B) * mg.T;
    real += static_cast<double>(in.target_tokens);
  }
  sum = comm.allreduce_scalar(sum);
  real = comm.allreduce_scalar(real);
  return real > 0 ? sum / real : 0.0;
}

std::vector<SplitPair> read_split_pairs(const PairSplit& split, const PairVocab& v, uint64_t first, uint64_t n) {
  LOOM_CHECK(first + n <= split.size(), "pairs ", first, " + ", n, " of ", split.size());
  std::vector<SplitPair> out(static_cast<size_t>(n));
  std::vector<uint32_t> s, t;
  for (uint64_t i = 0; i < n; ++i) {
    s.clear();
    t.clear();
    split.read_source(first + i, s);
    split.read_target(first + i, t);
    SplitPair& p = out[static_cast<size_t>(i)];
    p.source.assign(s.begin(), s.end());
    p.target.assign(t.begin(), t.end());
    p.source.push_back(static_cast<int32_t>(v.eos()));
    p.target.push_back(static_cast<int32_t>(v.eos()));
  }
  return out;
}

void split_batch(const std::vector<SplitPair>& pairs, size_t first, const ModelGraph& mg, const PairVocab& v,
                 PairBatch& b) {
  const auto pad = static_cast<int32_t>(v.pad());
  b.rows = mg.B;
  b.S = mg.S;
  b.T = graph_target_len(mg);
  b.source.assign(static_cast<size_t>(mg.B) * mg.S, pad);
  b.target.assign(static_cast<size_t>(mg.B) * b.T, pad);
  b.decoder_input.assign(static_cast<size_t>(mg.B) * b.T, pad);
  b.source_len.assign(static_cast<size_t>(mg.B), 0);
  b.target_len.assign(static_cast<size_t>(mg.B), 0);
  for (int r = 0; r < mg.B; ++r) {
    const bool real = first + r < pairs.size();
    const SplitPair& p = pairs[real ? first + r : first];
    std::copy(p.source.begin(), p.source.end(), b.source.begin() + static_cast<ptrdiff_t>(r) * mg.S);
    b.source_len[r] = static_cast<int32_t>(p.source.size());
    if (!real) continue;
    const auto row = static_cast<ptrdiff_t>(r) * b.T;
    std::copy(p.target.begin(), p.target.end(), b.target.begin() + row);
    b.decoder_input[row] = static_cast<int32_t>(v.bos());
    std::copy(p.target.begin(), p.target.end() - 1, b.decoder_input.begin() + row + 1);
    b.target_len[r] = static_cast<int32_t>(p.target.size());
  }
}

}  // namespace loom
