// pair_loader.cpp: see pair_loader.h.
#include "engine/data/pair_loader.h"

#include <algorithm>
#include <numeric>

#include "core/check.h"
#include "core/rng.h"

namespace loom {

PairLoader::PairLoader(const PairSplit& split, const PairVocab& vocab, const PairLoaderOptions& options)
    : split_(split), vocab_(vocab), o_(options) {
  LOOM_CHECK(o_.world >= 1 && o_.bucket_window >= 1 && o_.batch_size >= 0, "PairLoader: world ", o_.world,
             ", bucket_window ", o_.bucket_window, ", batch_size ", o_.batch_size);
  LOOM_CHECK(split.vocab_size() == vocab.size(), "PairLoader: split vocabulary ", split.vocab_size(), ", ids for ",
             vocab.size());
  const uint64_t n = split.size();
  if (o_.batch_size > 0) {
    LOOM_USER_CHECK(o_.batch_size % o_.world == 0, "batch size ", o_.batch_size, " does not split over ", o_.world,
                    " ranks");
    LOOM_USER_CHECK(n >= static_cast<uint64_t>(o_.batch_size), split.path(), ": holds ", n,
                    " pairs, fewer than one batch of ", o_.batch_size);
  } else {
    LOOM_USER_CHECK(o_.batch_tokens > 0, "pair batches need a batch size or a token budget");
    LOOM_USER_CHECK(n >= static_cast<uint64_t>(o_.world), split.path(), ": holds ", n, " pairs, fewer than the ",
                    o_.world, " ranks");
  }
  src_len_.resize(n);
  tgt_len_.resize(n);
  for (uint64_t i = 0; i < n; ++i) {
    src_len_[i] = split.source_len(i) + 1;
    tgt_len_[i] = split.target_len(i) + 1;
  }
  plan(0);
}

std::pair<uint32_t, uint32_t> PairLoader::shape(size_t begin, size_t end) const {
  uint32_t s = 0, t = 0;
  for (size_t k = begin; k < end; ++k) {
    s = std::max(s, src_len_[order_[k]]);
    t = std::max(t, tgt_len_[order_[k]]);
  }
  return {s, t};
}

void PairLoader::plan(uint64_t epoch) {
  const uint64_t n = src_len_.size();
  // One stream per epoch, from the seed and the epoch alone, so any epoch can be planned
  // directly (a resume does not replay the ones before).
  Rng rng(o_.seed ^ ((epoch + 1) * 0xD1B54A32D192ED03ULL));
  std::vector<uint64_t> perm(n);
  std::iota(perm.begin(), perm.end(), uint64_t{0});
  for (uint64_t i = n; i-- > 1;) std::swap(perm[i], perm[rng.below(i + 1)]);
  // What does not fill a last batch is dropped here, from the shuffled order: a random few
  // each epoch. Dropped after sorting, it would be the longest pairs, every epoch the same.
  const uint64_t unit = o_.batch_size > 0 ? static_cast<uint64_t>(o_.batch_size) : static_cast<uint64_t>(o_.world);
  perm.resize(n - n % unit);
  const uint64_t used = perm.size();

  const auto shorter = [&](uint64_t a, uint64_t b) {
    const uint64_t la = src_len_[a] + tgt_len_[a], lb = src_len_[b] + tgt_len_[b];
    if (la != lb) return la < lb;
    if (src_len_[a] != src_len_[b]) return src_len_[a] < src_len_[b];
    if (tgt_len_[a] != tgt_len_[b]) return tgt_len_[a] < tgt_len_[b];
    return a < b;
  };
  const size_t world = static_cast<size_t>(o_.world);
  std::vector<uint64_t> run, pool;  // run: the batches' pairs one after another
  std::vector<std::pair<size_t, size_t>> batches;
  for (uint64_t w0 = 0; w0 < used; w0 += o_.bucket_window) {
    const uint64_t w1 = std::min(used, w0 + o_.bucket_window);
    const bool last = w1 == used;
    pool.insert(pool.end(), perm.begin() + static_cast<ptrdiff_t>(w0), perm.begin() + static_cast<ptrdiff_t>(w1));
    if (o_.bucket_window > 1) std::sort(pool.begin(), pool.end(), shorter);
    size_t i = 0;
    while (i < pool.size()) {
      size_t rows;
      if (o_.batch_size > 0) {
        rows = static_cast<size_t>(o_.batch_size);
        if (pool.size() - i < rows) break;
      } else {
        // Greedy: add rows while the padded batch fits the budget (at least `world` rows).
        size_t j = i;
        uint64_t s = 0, t = 0;
        for (; j < pool.size(); ++j) {
          const uint64_t s2 = std::max<uint64_t>(s, src_len_[pool[j]]), t2 = std::max<uint64_t>(t, tgt_len_[pool[j]]);
          if ((j - i + 1) * (s2 + t2) > o_.batch_tokens && j - i >= world) break;
          s = s2, t = t2;
        }
        // A batch the budget did not close may still grow with the next window's pairs.
        if (j == pool.size() && !last) break;
        rows = (j - i) / world * world;
        if (rows == 0) break;
      }
      batches.emplace_back(run.size(), run.size() + rows);
      run.insert(run.end(), pool.begin() + static_cast<ptrdiff_t>(i), pool.begin() + static_cast<ptrdiff_t>(i + rows));
      i += rows;
    }
    pool.erase(pool.begin(), pool.begin() + static_cast<ptrdiff_t>(i));  // carried to the next window
  }
  LOOM_CHECK(pool.empty(), "PairLoader: ", pool.size(), " pairs left at the end of epoch ", epoch);
  LOOM_CHECK(!batches.empty(), "PairLoader: no batch in epoch ", epoch, " of ", n, " pairs");
  for (size_t k = batches.size(); k-- > 1;) std::swap(batches[k], batches[rng.below(k + 1)]);
  order_.clear();
  starts_.assign(1, 0);
  for (const auto& [b, e] : batches) {
    order_.insert(order_.end(), run.begin() + static_cast<ptrdiff_t>(b), run.begin() + static_cast<ptrdiff_t>(e));
    starts_.push_back(order_.size());
  }
  epoch_ = epoch;
  batch_ = 0;
}

void PairLoader::next_batch(int rank, PairBatch& out) {
  LOOM_CHECK(rank >= 0 && rank < o_.world, "next_batch: rank ", rank, " outside world ", o_.world);
  if (batch_ == batches_in_epoch()) plan(epoch_ + 1);
  const size_t begin = starts_[batch_], end = starts_[batch_ + 1];
  const auto [S, T] = shape(begin, end);
  const size_t rows = (end - begin) / static_cast<size_t>(o_.world);
  out.rows = static_cast<int>(rows);
  out.S = static_cast<int>(S);
  out.T = static_cast<int>(T);
  out.source.assign(rows * S, static_cast<int32_t>(vocab_.pad()));
  out.target.assign(rows * T, static_cast<int32_t>(vocab_.pad()));
  out.decoder_input.assign(rows * T, static_cast<int32_t>(vocab_.pad()));
  out.source_mask.assign(rows * S, 0);
  out.target_mask.assign(rows * T, 0);
  out.source_len.resize(rows);
  out.target_len.resize(rows);
  out.pairs.resize(rows);
  std::vector<uint32_t> tok;
  for (size_t r = 0; r < rows; ++r) {
    const uint64_t p = order_[begin + static_cast<size_t>(rank) * rows + r];
    out.pairs[r] = p;
    tok.clear();
    split_.read_source(p, tok);
    tok.push_back(vocab_.eos());
    for (size_t k = 0; k < tok.size(); ++k) {
      out.source[r * S + k] = static_cast<int32_t>(tok[k]);
      out.source_mask[r * S + k] = 1;
    }
    out.source_len[r] = static_cast<int32_t>(tok.size());
    tok.clear();
    split_.read_target(p, tok);
    tok.push_back(vocab_.eos());
    for (size_t k = 0; k < tok.size(); ++k) {
      out.target[r * T + k] = static_cast<int32_t>(tok[k]);
      out.decoder_input[r * T + k] = static_cast<int32_t>(k == 0 ? vocab_.bos() : tok[k - 1]);
      out.target_mask[r * T + k] = 1;
    }
    out.target_len[r] = static_cast<int32_t>(tok.size());
  }
  for (size_t k = begin; k < end; ++k) served_real_ += src_len_[order_[k]] + tgt_len_[order_[k]];
  served_all_ += (end - begin) * (S + T);
  ++batch_;
}

void PairLoader::set_state(const std::array<uint64_t, 4>& s) {
  plan(s[0]);
  LOOM_USER_CHECK(s[1] <= batches_in_epoch() && s[2] == 0 && s[3] == 0, "checkpoint: pair loader position (epoch ",
                  s[0], ", batch ", s[1], ") beyond the ", batches_in_epoch(),
                  " batches of that epoch (data, batch size or seed changed?)");
  batch_ = s[1];
}

double PairLoader::padding_fraction() const {
  return served_all_ ? 1.0 - static_cast<double>(served_real_) / static_cast<double>(served_all_) : 0.0;
}

double PairLoader::epoch_padding_fraction() const {
  uint64_t real = 0, all = 0;
  for (size_t b = 0; b + 1 < starts_.size(); ++b) {
    const auto [S, T] = shape(starts_[b], starts_[b + 1]);
    for (size_t k = starts_[b]; k < starts_[b + 1]; ++k) real += src_len_[order_[k]] + tgt_len_[order_[k]];
    all += (starts_[b + 1] - starts_[b]) * (S + T);
  }
  return all ? 1.0 - static_cast<double>(real) / static_cast<double>(all) : 0.0;
}

}  // namespace loom
