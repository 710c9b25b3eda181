// ngram.cpp: interpolated Kneser-Ney n-gram model (see ngram.h for the maths and the keys).
#include "models/ngram/ngram.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/check.h"

namespace loom {

namespace {

using Key = NgramModel::Key;

// Mask of the low 16 n bits (n tokens).
Key token_mask(int n) { return n >= 8 ? ~Key(0) : ((Key(1) << (16 * n)) - 1); }

uint64_t mix64(uint64_t x) {  // splitmix64 finalizer
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t hash_key(uint64_t lo, uint64_t hi) { return mix64(lo ^ mix64(hi + 0x9e3779b97f4a7c15ULL)); }

// D = n1 / (n1 + 2 n2), clamped; the default when there is nothing to estimate from.
double kn_discount(uint64_t n1, uint64_t n2) {
  if (n1 + n2 == 0) return NgramModel::kDefaultDiscount;
  const double d = static_cast<double>(n1) / (static_cast<double>(n1) + 2.0 * static_cast<double>(n2));
  return std::clamp(d, NgramModel::kMinDiscount, NgramModel::kMaxDiscount);
}

std::string tensor_name(int n, const char* what) { return "ngram.order" + std::to_string(n) + "." + what; }

}  // namespace

// ---------------------------------------------------------------------------------------
// KeyMap

void NgramModel::KeyMap::grow() {
  std::vector<Slot> old;
  old.swap(slots_);
  slots_.assign(old.empty() ? 64 : old.size() * 2, Slot{});
  const uint64_t mask = slots_.size() - 1;
  for (const Slot& s : old) {
    if (s.val == 0) continue;
    uint64_t i = hash_key(s.lo, s.hi) & mask;
    while (slots_[i].val != 0) i = (i + 1) & mask;
    slots_[i] = s;
  }
}

uint64_t* NgramModel::KeyMap::slot_for(Key k) {
  if ((size_ + 1) * 2 > slots_.size()) grow();
  const uint64_t lo = static_cast<uint64_t>(k), hi = static_cast<uint64_t>(k >> 64);
  const uint64_t mask = slots_.size() - 1;
  uint64_t i = hash_key(lo, hi) & mask;
  for (;; i = (i + 1) & mask) {
    Slot& s = slots_[i];
    if (s.val == 0) {  // empty: claim it for k (the caller stores a non-zero value)
      s.lo = lo;
      s.hi = hi;
      ++size_;
      return &s.val;
    }
    if (s.lo == lo && s.hi == hi) return &s.val;
  }
}

void NgramModel::KeyMap::add(Key k, uint64_t delta) { *slot_for(k) += delta; }
void NgramModel::KeyMap::set(Key k, uint64_t v) { *slot_for(k) = v; }

uint64_t NgramModel::KeyMap::get(Key k) const {
  if (slots_.empty()) return 0;
  const uint64_t lo = static_cast<uint64_t>(k), hi = static_cast<uint64_t>(k >> 64);
  const uint64_t mask = slots_.size() - 1;
  for (uint64_t i = hash_key(lo, hi) & mask;; i = (i + 1) & mask) {
    const Slot& s = slots_[i];
    if (s.val == 0) return 0;
    if (s.lo == lo && s.hi == hi) return s.val;
  }
}

void NgramModel::KeyMap::clear() {
  std::vector<Slot>().swap(slots_);
  size_ = 0;
}

// ---------------------------------------------------------------------------------------
// Counting

NgramModel::NgramModel(int order, uint32_t vocab) : order_(order), vocab_(vocab) {
  LOOM_USER_CHECK(order >= 1 && order <= kMaxOrder, "ngram: order must be in [1, ", kMaxOrder, "], got ", order);
  LOOM_USER_CHECK(vocab >= 2 && vocab <= kMaxVocab, "ngram: vocab must be in [2, ", kMaxVocab, "], got ", vocab);
  levels_.resize(order + 1);
}

void NgramModel::count(std::span<const uint32_t> tokens, uint64_t begin, uint64_t end) {
  LOOM_CHECK(!finalized_, "ngram: count() after finalize()");
  LOOM_CHECK(begin <= end && end <= tokens.size(), "ngram: count range [", begin, ", ", end, ") of ",
             tokens.size(), " tokens");
  const uint64_t first = begin >= static_cast<uint64_t>(order_ - 1) ? begin - (order_ - 1) : 0;
  // Validate everything read before touching the tables, so a bad token counts nothing.
  for (uint64_t i = first; i < end; ++i)
    LOOM_USER_CHECK(tokens[i] < vocab_, "ngram: token ", tokens[i], " at position ", i, " is >= vocab ", vocab_);
  Key masks[kMaxOrder + 1] = {};
  for (int n = 1; n <= order_; ++n) masks[n] = token_mask(n);
  Key window = 0;  // the last `order` tokens, newest in the low 16 bits
  const Key full = masks[order_];
  for (uint64_t i = first; i < end; ++i) {
    window = ((window << 16) | tokens[i]) & full;
    if (i < begin) continue;
    const int avail = static_cast<int>(std::min<uint64_t>(i + 1, order_));
    for (int n = 1; n <= avail; ++n) levels_[n].counts.add(window & masks[n], 1);
  }
  tokens_counted_ += end - begin;
}

// ---------------------------------------------------------------------------------------
// Finalize

void NgramModel::sorted_counts(int n, std::vector<Key>& keys, std::vector<uint64_t>& cnt) const {
  const Level& lv = levels_[n];
  if (finalized_) {
    keys = lv.keys;
    cnt = lv.cnt;
    return;
  }
  std::vector<std::pair<Key, uint64_t>> pairs;
  pairs.reserve(lv.counts.size());
  lv.counts.for_each([&](Key k, uint64_t v) { pairs.emplace_back(k, v); });
  std::sort(pairs.begin(), pairs.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  keys.resize(pairs.size());
  cnt.resize(pairs.size());
  for (size_t i = 0; i < pairs.size(); ++i) {
    keys[i] = pairs[i].first;
    cnt[i] = pairs[i].second;
  }
}

int64_t NgramModel::find(int n, Key key) const {
  const Level& lv = levels_[n];
  const uint64_t h = lv.hist_index.get(key >> 16);
  if (h == 0) return -1;
  const Hist& hs = lv.hists[h - 1];
  const auto b = lv.keys.begin() + hs.begin, e = lv.keys.begin() + hs.end;
  const auto it = std::lower_bound(b, e, key);
  return (it != e && *it == key) ? it - lv.keys.begin() : -1;
}

void NgramModel::finalize() {
  if (finalized_) return;
  // 1. Hash tables -> sorted arrays, grouped by history (the key without its low token).
  for (int n = 1; n <= order_; ++n) {
    Level& lv = levels_[n];
    sorted_counts(n, lv.keys, lv.cnt);
    lv.counts.clear();
    for (uint64_t i = 0; i < lv.keys.size();) {
      const Key h = lv.keys[i] >> 16;
      Hist hs;
      hs.begin = i;
      for (; i < lv.keys.size() && (lv.keys[i] >> 16) == h; ++i) hs.c_sum += lv.cnt[i];
      hs.end = i;
      lv.hists.push_back(hs);
      lv.hist_index.set(h, lv.hists.size());
    }
  }
  finalized_ = true;  // find() works from here on
  // 2. Continuation counts: N1+(. g) = number of (n+1)-grams whose suffix is g. Every
  // (n+1)-gram ends where its suffix ends, so the suffix was counted too.
  for (int n = 1; n < order_; ++n) {
    Level& lv = levels_[n];
    lv.cont.assign(lv.keys.size(), 0);
    const Key mask = token_mask(n);
    for (const Key k : levels_[n + 1].keys) {
      const int64_t idx = find(n, k & mask);
      LOOM_CHECK(idx >= 0, "ngram: the suffix of a counted ", n + 1, "-gram was not counted");
      ++lv.cont[idx];
    }
    for (Hist& hs : lv.hists)
      for (uint64_t i = hs.begin; i < hs.end; ++i) {
        hs.cont_sum += lv.cont[i];
        hs.cont_distinct += lv.cont[i] > 0;
      }
  }
  // 3. Discounts from the count-of-counts of each statistic.
  for (int n = 1; n <= order_; ++n) {
    Level& lv = levels_[n];
    uint64_t r1 = 0, r2 = 0, c1 = 0, c2 = 0;
    for (const uint64_t c : lv.cnt) r1 += c == 1, r2 += c == 2;
    for (const uint64_t c : lv.cont) c1 += c == 1, c2 += c == 2;
    lv.d_raw = kn_discount(r1, r2);
    lv.d_cont = kn_discount(c1, c2);
  }
}

double NgramModel::discount(int n, bool raw) const {
  LOOM_CHECK(n >= 1 && n <= order_, "ngram: level ", n);
  return raw ? levels_[n].d_raw : levels_[n].d_cont;
}

uint64_t NgramModel::num_ngrams(int n) const {
  LOOM_CHECK(n >= 1 && n <= order_, "ngram: level ", n);
  return finalized_ ? levels_[n].keys.size() : levels_[n].counts.size();
}

// ---------------------------------------------------------------------------------------
// Probabilities

size_t NgramModel::context_len(std::span<const int32_t> context) const {
  const size_t len = std::min<size_t>(context.size(), order_ - 1);
  for (size_t i = context.size() - len; i < context.size(); ++i)
    LOOM_USER_CHECK(context[i] >= 0 && static_cast<uint32_t>(context[i]) < vocab_, "ngram: context token ",
                    context[i], " is outside the vocabulary [0, ", vocab_, ")");
  return len;
}

double NgramModel::step(int n, bool top, Key hist, uint32_t w, double lower) const {
  const Level& lv = levels_[n];
  const uint64_t h = lv.hist_index.get(hist);
  if (h == 0) return lower;  // history never seen: this level adds nothing
  const Hist& hs = lv.hists[h - 1];
  const uint64_t sum = top ? hs.c_sum : hs.cont_sum;
  if (sum == 0) return lower;
  const uint64_t distinct = top ? hs.end - hs.begin : hs.cont_distinct;
  const double d = top ? lv.d_raw : lv.d_cont;
  const double gamma = d * static_cast<double>(distinct) / static_cast<double>(sum);
  const Key key = (hist << 16) | w;
  const auto b = lv.keys.begin() + hs.begin, e = lv.keys.begin() + hs.end;
  const auto it = std::lower_bound(b, e, key);
  uint64_t a = 0;
  if (it != e && *it == key) a = top ? lv.cnt[it - lv.keys.begin()] : lv.cont[it - lv.keys.begin()];
  const double seen = a > 0 ? (static_cast<double>(a) - d) / static_cast<double>(sum) : 0.0;
  return gamma * lower + seen;
}

double NgramModel::log_prob(std::span<const int32_t> context, int32_t token) const {
  LOOM_CHECK(finalized_, "ngram: log_prob() before finalize()");
  LOOM_USER_CHECK(token >= 0 && static_cast<uint32_t>(token) < vocab_, "ngram: token ", token,
                  " is outside the vocabulary [0, ", vocab_, ")");
  const size_t len = context_len(context);
  const int top = static_cast<int>(len) + 1;
  const int32_t* ctx = context.data() + context.size();  // one past the newest token
  double p = 1.0 / vocab_;
  Key hist = 0;  // the last n-1 context tokens, newest in the low bits
  for (int n = 1; n <= top; ++n) {
    if (n >= 2) hist |= static_cast<Key>(static_cast<uint32_t>(ctx[-(n - 1)])) << (16 * (n - 2));
    p = step(n, n == top, hist, static_cast<uint32_t>(token), p);
  }
  return std::log(p);
}

void NgramModel::probs(std::span<const int32_t> context, std::vector<double>& out) const {
  LOOM_CHECK(finalized_, "ngram: probs() before finalize()");
  const size_t len = context_len(context);
  const int top = static_cast<int>(len) + 1;
  const int32_t* ctx = context.data() + context.size();
  out.assign(vocab_, 1.0 / vocab_);
  Key hist = 0;
  for (int n = 1; n <= top; ++n) {
    if (n >= 2) hist |= static_cast<Key>(static_cast<uint32_t>(ctx[-(n - 1)])) << (16 * (n - 2));
    // The same arithmetic as step(), for every token at once: scale the lower level by
    // gamma, then add the discounted statistic of the continuations actually seen.
    const Level& lv = levels_[n];
    const bool is_top = n == top;
    const uint64_t h = lv.hist_index.get(hist);
    if (h == 0) continue;
    const Hist& hs = lv.hists[h - 1];
    const uint64_t sum = is_top ? hs.c_sum : hs.cont_sum;
    if (sum == 0) continue;
    const uint64_t distinct = is_top ? hs.end - hs.begin : hs.cont_distinct;
    const double d = is_top ? lv.d_raw : lv.d_cont;
    const double gamma = d * static_cast<double>(distinct) / static_cast<double>(sum);
    for (double& v : out) v *= gamma;
    const std::vector<uint64_t>& stat = is_top ? lv.cnt : lv.cont;
    for (uint64_t i = hs.begin; i < hs.end; ++i)
      if (stat[i] > 0)
        out[static_cast<uint32_t>(lv.keys[i]) & 0xFFFF] += (static_cast<double>(stat[i]) - d) / static_cast<double>(sum);
  }
}

// ---------------------------------------------------------------------------------------
// Persistence

std::vector<StTensor> NgramModel::to_tensors() const {
  std::vector<StTensor> out;
  StTensor cfg;
  cfg.name = "ngram.config";
  cfg.dtype = "U64";
  cfg.shape = {4};
  const uint64_t vals[4] = {static_cast<uint64_t>(order_), vocab_, finalized_ ? 1u : 0u, tokens_counted_};
  cfg.data.resize(sizeof(vals));
  std::memcpy(cfg.data.data(), vals, sizeof(vals));
  out.push_back(std::move(cfg));
  std::vector<Key> keys;
  std::vector<uint64_t> cnt;
  for (int n = 1; n <= order_; ++n) {
    sorted_counts(n, keys, cnt);
    const int64_t m = static_cast<int64_t>(keys.size());
    StTensor tok;
    tok.name = tensor_name(n, "tokens");
    tok.dtype = "U16";
    tok.shape = {m, n};
    std::vector<uint16_t> t(static_cast<size_t>(m) * n);
    for (int64_t i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j)  // oldest first: token j sits at bits 16 (n-1-j)
        t[i * n + j] = static_cast<uint16_t>(keys[i] >> (16 * (n - 1 - j)));
    tok.data.resize(t.size() * sizeof(uint16_t));
    if (!t.empty()) std::memcpy(tok.data.data(), t.data(), tok.data.size());
    StTensor c;
    c.name = tensor_name(n, "counts");
    c.dtype = "U64";
    c.shape = {m};
    c.data.resize(cnt.size() * sizeof(uint64_t));
    if (!cnt.empty()) std::memcpy(c.data.data(), cnt.data(), c.data.size());
    out.push_back(std::move(tok));
    out.push_back(std::move(c));
  }
  return out;
}

NgramModel NgramModel::from_tensors(const StFile& f, const std::string& origin) {
  auto need = [&](const std::string& name, const char* dtype, const std::vector<int64_t>& shape) -> const StTensor& {
    const StTensor* t = f.find(name);
    LOOM_USER_CHECK(t != nullptr, origin, ": missing tensor ", name);
    LOOM_USER_CHECK(t->dtype == dtype, origin, ": tensor ", name, " has dtype ", t->dtype, ", expected ", dtype);
    bool ok = t->shape.size() == shape.size();
    for (size_t i = 0; ok && i < shape.size(); ++i) ok = shape[i] < 0 ? t->shape[i] >= 0 : t->shape[i] == shape[i];
    std::string want = "[";
    for (size_t i = 0; i < shape.size(); ++i) want += (i ? ", " : "") + (shape[i] < 0 ? std::string("m") : std::to_string(shape[i]));
    LOOM_USER_CHECK(ok, origin, ": tensor ", name, " has the wrong shape (expected ", want, "])");
    LOOM_USER_CHECK(t->data.size() == [&] {
      size_t numel = 1;
      for (int64_t d : t->shape) numel *= static_cast<size_t>(d);
      return numel * st_dtype_size(t->dtype);
    }(), origin, ": tensor ", name, " has ", t->data.size(), " bytes, which does not match its shape");
    return *t;
  };
  const StTensor& cfg = need("ngram.config", "U64", {4});
  uint64_t vals[4];
  std::memcpy(vals, cfg.data.data(), sizeof(vals));
  LOOM_USER_CHECK(vals[0] >= 1 && vals[0] <= kMaxOrder, origin, ": ngram.config: order ", vals[0], " is not in [1, ",
                  kMaxOrder, "]");
  LOOM_USER_CHECK(vals[1] >= 2 && vals[1] <= kMaxVocab, origin, ": ngram.config: vocab ", vals[1], " is not in [2, ",
                  kMaxVocab, "]");
  LOOM_USER_CHECK(vals[2] <= 1, origin, ": ngram.config: finalized flag ", vals[2], " is not 0 or 1");
  NgramModel m(static_cast<int>(vals[0]), static_cast<uint32_t>(vals[1]));
  for (const StTensor& t : f.tensors)  // tensors of orders above the model's own
    for (int n = m.order_ + 1; n <= kMaxOrder + 1; ++n)
      LOOM_USER_CHECK(t.name != tensor_name(n, "tokens") && t.name != tensor_name(n, "counts"), origin, ": tensor ",
                      t.name, " does not fit a model of order ", m.order_);

  uint64_t unigram_total = 0;
  for (int n = 1; n <= m.order_; ++n) {
    const std::string tname = tensor_name(n, "tokens"), cname = tensor_name(n, "counts");
    const StTensor& tok = need(tname, "U16", {-1, n});
    const int64_t rows = tok.shape[0];
    const StTensor& cnt = need(cname, "U64", {rows});
    Level& lv = m.levels_[n];
    Key prev = 0;
    for (int64_t i = 0; i < rows; ++i) {
      Key key = 0;
      for (int j = 0; j < n; ++j) {
        uint16_t t;
        std::memcpy(&t, tok.data.data() + (i * n + j) * sizeof(uint16_t), sizeof(t));
        LOOM_USER_CHECK(t < m.vocab_, origin, ": ", tname, " row ", i, ": token ", t, " is >= vocab ", m.vocab_);
        key = (key << 16) | t;
      }
      uint64_t c;
      std::memcpy(&c, cnt.data.data() + i * sizeof(uint64_t), sizeof(c));
      LOOM_USER_CHECK(c > 0, origin, ": ", cname, " row ", i, " is zero");
      LOOM_USER_CHECK(i == 0 || key > prev, origin, ": ", tname, " rows are not sorted and unique (row ", i, ")");
      prev = key;
      if (n > 1) {  // every occurrence of an n-gram is also one of its suffix
        const uint64_t sc = m.levels_[n - 1].counts.get(key & token_mask(n - 1));
        LOOM_USER_CHECK(sc >= c, origin, ": ", tname, " row ", i, " is counted ", c,
                        " times but its suffix only ", sc, " times in order ", n - 1);
      } else {
        unigram_total += c;
      }
      lv.counts.set(key, c);
    }
  }
  LOOM_USER_CHECK(unigram_total == vals[3], origin, ": ngram.config: tokens_counted ", vals[3],
                  " does not match the unigram counts (", unigram_total, ")");
  m.tokens_counted_ = vals[3];
  if (vals[2] == 1) m.finalize();
  return m;
}

}  // namespace loom
