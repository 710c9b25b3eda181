// span_kinds.cpp: see span_kinds.h.
#include "launch/run/span_kinds.h"

#include <cmath>

#include "core/check.h"

namespace loom {

const char* span_token_kind_name(SpanTokenKind k) {
  switch (k) {
    case SpanTokenKind::Sentinel: return "sentinel";
    case SpanTokenKind::SpanStart: return "span start";
    case SpanTokenKind::SpanInside: return "span inside";
    case SpanTokenKind::Eos: return "EOS";
  }
  return "?";
}

std::vector<SpanToken> span_token_kinds(std::span<const int32_t> source, std::span<const int32_t> target,
                                        const PairVocab& vocab) {
  LOOM_CHECK(!target.empty() && static_cast<uint32_t>(target.back()) == vocab.eos(),
             "span_token_kinds: a target ends with EOS");
  LOOM_CHECK(target.size() >= 2 && vocab.is_sentinel(static_cast<uint32_t>(target[0])),
             "span_token_kinds: a span-corruption target starts with a sentinel");
  // The source token before each sentinel (BOS when the sentinel opens the source).
  std::unordered_map<uint32_t, uint32_t> before;
  for (size_t i = 0; i < source.size(); ++i)
    if (vocab.is_sentinel(static_cast<uint32_t>(source[i])))
      before[static_cast<uint32_t>(source[i])] = i ? static_cast<uint32_t>(source[i - 1]) : vocab.bos();
  std::vector<SpanToken> out(target.size());
  for (size_t t = 0; t < target.size(); ++t) {
    const auto y = static_cast<uint32_t>(target[t]);
    if (t + 1 == target.size()) {
      out[t] = {SpanTokenKind::Eos, 0};
    } else if (vocab.is_sentinel(y)) {
      LOOM_CHECK(before.count(y), "span_token_kinds: target sentinel ", y, " is not in the source");
      out[t] = {SpanTokenKind::Sentinel, 0};
    } else {
      const auto prev = static_cast<uint32_t>(target[t - 1]);
      out[t] = vocab.is_sentinel(prev) ? SpanToken{SpanTokenKind::SpanStart, before.at(prev)}
                                       : SpanToken{SpanTokenKind::SpanInside, prev};
    }
  }
  return out;
}

SpanBaselines::SpanBaselines(const PairSplit& train, uint64_t pairs, const PairVocab& vocab)
    : vocab_(vocab), unigram_(vocab.base) {
  LOOM_CHECK(pairs <= train.size(), "span baselines: ", pairs, " of ", train.size(), " train pairs");
  std::vector<uint32_t> s, t, line;
  std::unordered_map<uint32_t, std::pair<size_t, size_t>> span;  // sentinel -> [begin, end) in t
  for (uint64_t i = 0; i < pairs; ++i) {
    s.clear();
    t.clear();
    train.read_source(i, s);
    train.read_target(i, t);
    span.clear();
    for (size_t k = 0; k < t.size();) {
      LOOM_CHECK(vocab.is_sentinel(t[k]), "span baselines: train pair ", i, " is not span corruption");
      size_t e = k + 1;
      while (e < t.size() && !vocab.is_sentinel(t[e])) ++e;
      span[t[k]] = {k + 1, e};
      k = e;
    }
    line.clear();
    for (uint32_t x : s) {
      if (!vocab.is_sentinel(x)) {
        line.push_back(x);
        continue;
      }
      const auto it = span.find(x);
      LOOM_CHECK(it != span.end(), "span baselines: train pair ", i, ": sentinel ", x, " has no span");
      line.insert(line.end(), t.begin() + static_cast<ptrdiff_t>(it->second.first),
                  t.begin() + static_cast<ptrdiff_t>(it->second.second));
    }
    uint32_t left = vocab.bos();
    for (uint32_t y : line) {
      LOOM_CHECK(y < vocab.base, "span baselines: train pair ", i, ": token ", y, " in a line");
      ++unigram_[y];
      ++total_;
      Context& c = bigram_[left];
      ++c.count;
      ++c.next[y];
      left = y;
    }
  }
}

double SpanBaselines::log_unigram(uint32_t y) const {
  LOOM_CHECK(y < vocab_.base, "span baselines: token ", y);
  return std::log(static_cast<double>(unigram_[y] + 1) / static_cast<double>(total_ + vocab_.base));
}

double SpanBaselines::log_bigram(uint32_t left, uint32_t y) const {
  const double pu = std::exp(log_unigram(y));
  const auto it = bigram_.find(left);
  if (it == bigram_.end()) return std::log(pu);
  const Context& c = it->second;
  const auto n = c.next.find(y);
  const double cy = n == c.next.end() ? 0.0 : static_cast<double>(n->second);
  const auto types = static_cast<double>(c.next.size());
  return std::log((cy + types * pu) / (static_cast<double>(c.count) + types));
}

}  // namespace loom
