// ngram.h: an interpolated Kneser-Ney n-gram language model (the `ngram` model kind, a
// CountingModel; ngram_kind.cpp registers it).
//
// Smoothing (Chen & Goodman 1998, "interpolated Kneser-Ney", one discount per level):
//
//   P_n(w | h) = max(a(hw) - D, 0) / S(h)  +  D * N(h) / S(h) * P_{n-1}(w | h')
//
// where h is the last n-1 context tokens, h' drops the oldest of them, and
//   - at the TOP level of a query (n = min(len(context) + 1, order)) a = raw count c(hw),
//     S(h) = sum_w c(hw), N(h) = #{w : c(hw) > 0}, D = D_raw[n];
//   - at every lower level a = continuation count N1+(. hw) = #{v : c(vhw) > 0},
//     S(h) = sum_w N1+(. hw), N(h) = #{w : N1+(. hw) > 0}, D = D_cont[n];
//   - below level 1 sits the uniform distribution 1/vocab, so every token of the closed
//     vocabulary gets a non-zero probability.
// A level whose history was never seen (S(h) = 0) is skipped: P_n = P_{n-1} ("backs off
// cleanly"). A context shorter than order-1 (start of a stream, short prompt) makes its
// longest available level the top one, estimated from raw counts: those are the best
// estimate of what follows a short prefix, and each level still sums to one.
//
// Discounts: D = n1 / (n1 + 2 n2) from the count-of-counts of the statistic the level uses
// (raw counts for D_raw, continuation counts for D_cont), clamped to [0.01, 0.99]; 0.5
// when n1 + n2 = 0 (nothing to estimate from). D < 1 keeps every seen term positive, D > 0
// keeps mass for the lower levels (and so for unseen tokens).
//
// Keys: an n-gram (n <= 8, tokens < 2^16) is packed into one unsigned 128-bit integer,
// 16 bits a token, NEWEST token in the low bits: key(t_1..t_n) = sum_j t_j << 16 (n - j).
// Every order has its own table, so the packing is injective: no two n-grams share a key
// (no hashing of n-grams into fewer bits; the hash tables compare full keys). This order
// of the bits makes (a) the key of the n-gram ending at position i a rolling update
// K = (K << 16 | t_i) masked to 16 n bits, (b) the history the key >> 16, (c) the suffix
// (drop oldest) the key masked to 16 (n-1) bits, and (d) the integer order of keys the
// lexicographic order of n-grams, so after sorting all continuations of one history are
// contiguous (probs() walks them, log_prob() binary-searches them).
//
// Life cycle: count() into open-addressing hash tables (one per order); finalize() turns
// them into sorted arrays plus a history index, derives continuation counts and
// discounts; log_prob()/probs() then only read. to_tensors() writes the raw counts, sorted,
// so identical counts give identical bytes whatever the counting order.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/io/safetensors.h"
#include "models/model.h"

namespace loom {

class NgramModel final : public CountingModel {
 public:
  static constexpr int kMaxOrder = 8;
  static constexpr uint32_t kMaxVocab = 1u << 16;
  static constexpr double kMinDiscount = 0.01, kMaxDiscount = 0.99, kDefaultDiscount = 0.5;

  // UserError unless 1 <= order <= 8 and 2 <= vocab <= 65536.
  NgramModel(int order, uint32_t vocab);

  int order() const { return order_; }
  uint32_t vocab() const { return vocab_; }

  // Counts every n-gram (all orders 1..order) that ENDS at a position in [begin, end) of
  // `tokens`; tokens before `begin` are read only as context, so counting [0,a) then [a,n)
  // equals counting [0,n). A token >= vocab is a UserError (nothing is counted then).
  // begin <= end <= tokens.size() is the caller's duty (LOOM_CHECK), as is not counting
  // after finalize().
  void count(std::span<const uint32_t> tokens, uint64_t begin, uint64_t end) override;
  // Number of positions counted so far (= the sum of the unigram counts).
  uint64_t tokens_counted() const override { return tokens_counted_; }

  // Derives continuation counts and discounts; required before log_prob/probs. A second
  // call does nothing.
  void finalize() override;
  bool finalized() const { return finalized_; }

  // Natural-log probability of `token` after `context` (preceding tokens, oldest first;
  // only the last order-1 are read, fewer is fine). Tokens outside [0, vocab) are a
  // UserError.
  double log_prob(std::span<const int32_t> context, int32_t token) const override;
  // The whole next-token distribution after `context` (size vocab, sums to 1).
  void probs(std::span<const int32_t> context, std::vector<double>& out) const override;

  // Tensors "ngram.config" (U64 [4]: order, vocab, finalized, tokens_counted) and, for each
  // order n, "ngram.order<n>.tokens" (U16 [m, n], oldest token first, rows sorted
  // lexicographically) and "ngram.order<n>.counts" (U64 [m], raw counts).
  std::vector<StTensor> to_tensors() const override;
  // Rebuilds a model from those tensors (finalizing it when it was finalized at save
  // time). Every problem (missing tensor, wrong dtype or shape, bad order/vocab, a token
  // out of range, unsorted or duplicate rows, zero counts, counts inconsistent between
  // orders) is a UserError naming `origin`.
  static NgramModel from_tensors(const StFile& f, const std::string& origin);

  // Discount of level n (1..order): raw = true for the top-level (raw count) discount.
  // Only meaningful after finalize().
  double discount(int n, bool raw) const;
  // Number of distinct n-grams of order n (1..order) counted.
  uint64_t num_ngrams(int n) const;

  using Key = unsigned __int128;

  // Open-addressing hash table (linear probing, load <= 1/2) from a 128-bit key to a
  // non-zero uint64 value; 0 reads as "absent". Public only so that the tests can use it.
  class KeyMap {
   public:
    void add(Key k, uint64_t delta);  // value += delta (inserting 0 first), delta > 0
    void set(Key k, uint64_t v);      // v > 0
    uint64_t get(Key k) const;
    size_t size() const { return size_; }
    void clear();
    template <typename F>
    void for_each(F&& f) const {
      for (const Slot& s : slots_)
        if (s.val != 0) f((static_cast<Key>(s.hi) << 64) | s.lo, s.val);
    }

   private:
    struct Slot {
      uint64_t lo = 0, hi = 0, val = 0;  // val == 0: empty
    };
    uint64_t* slot_for(Key k);  // grows first; the slot of k, or the empty slot for it
    void grow();
    std::vector<Slot> slots_;
    size_t size_ = 0;
  };

 private:
  // After finalize, the continuations of one history: keys [begin, end) of its level.
  struct Hist {
    uint64_t begin = 0, end = 0;
    uint64_t c_sum = 0;          // sum_w c(hw)
    uint64_t cont_sum = 0;       // sum_w N1+(. hw)
    uint64_t cont_distinct = 0;  // #{w : N1+(. hw) > 0}
  };
  struct Level {
    KeyMap counts;              // while counting
    std::vector<Key> keys;      // after finalize: sorted
    std::vector<uint64_t> cnt;  // raw counts, parallel to keys
    std::vector<uint64_t> cont; // continuation counts (levels below the order)
    std::vector<Hist> hists;    // sorted by history
    KeyMap hist_index;          // history key -> index into hists + 1
    double d_raw = kDefaultDiscount, d_cont = kDefaultDiscount;
  };

  // Index of the n-gram `key` in levels_[n].keys, or -1 (after finalize).
  int64_t find(int n, Key key) const;
  // The sorted (key, count) pairs of order n, before or after finalize.
  void sorted_counts(int n, std::vector<Key>& keys, std::vector<uint64_t>& cnt) const;
  // One level of the interpolation for a single token (see the formula above).
  double step(int n, bool top, Key hist, uint32_t w, double lower) const;
  // Validates the tail of `context` that is read and returns its length.
  size_t context_len(std::span<const int32_t> context) const;

  int order_;
  uint32_t vocab_;
  bool finalized_ = false;
  uint64_t tokens_counted_ = 0;
  std::vector<Level> levels_;  // levels_[n] for n = 1..order (levels_[0] unused)
};

}  // namespace loom
