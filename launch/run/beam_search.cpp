// beam_search.cpp: the search itself (launch/run/beam_search.h). Ties between candidates go to
// the lower row, then the lower token id, so that beam 1 picks what greedy decoding picks.
#include "launch/run/beam_search.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"

namespace loom {

double gnmt_length_penalty(int len, double alpha) { return alpha == 0 ? 1.0 : std::pow((5.0 + len) / 6.0, alpha); }

std::vector<double> log_softmax(std::span<const float> logits) {
  double mx = -INFINITY;
  for (float l : logits) mx = std::max(mx, static_cast<double>(l));
  double sum = 0;
  for (float l : logits) sum += std::exp(l - mx);
  const double lse = mx + std::log(sum);
  std::vector<double> out(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) out[i] = logits[i] - lse;
  return out;
}

namespace {

struct Live {
  std::vector<int32_t> tokens;
  double log_prob = 0;
  int parent = -1;
};

Hypothesis finish(std::vector<int32_t> tokens, double log_prob, bool ended, double alpha) {
  const int n = static_cast<int>(tokens.size());
  return {std::move(tokens), log_prob, log_prob / gnmt_length_penalty(n, alpha), ended};
}

bool better(const Hypothesis& a, const Hypothesis& b) {
  if (a.score != b.score) return a.score > b.score;
  if (a.log_prob != b.log_prob) return a.log_prob > b.log_prob;
  return a.tokens < b.tokens;
}

}  // namespace

std::vector<Hypothesis> beam_search(const NextLogProbs& next, const BeamOptions& o) {
  LOOM_CHECK(o.beam >= 1 && o.n_best >= 1 && o.n_best <= o.beam && o.max_len >= 1 && o.length_penalty >= 0,
             "beam search options: beam ", o.beam, ", n_best ", o.n_best, ", max_len ", o.max_len, ", alpha ",
             o.length_penalty);
  const size_t N = static_cast<size_t>(o.beam);
  // log_prob <= 0 and lp grows with the length, so no live hypothesis can score above its
  // log-probability now over lp(max_len).
  const double lp_max = gnmt_length_penalty(o.max_len, o.length_penalty);
  std::vector<Live> live(1);
  std::vector<Hypothesis> done;
  struct Candidate {
    double log_prob;
    int row;
    int32_t token;
  };
  std::vector<Candidate> cands;
  for (int t = 0; t < o.max_len; ++t) {
    std::vector<BeamRow> rows;
    for (const Live& h : live)
      rows.push_back({h.parent, h.tokens.empty() ? -1 : h.tokens.back(), &h.tokens});
    const std::vector<std::vector<double>> lp = next(rows);
    LOOM_CHECK(lp.size() == live.size(), "log-probabilities for ", lp.size(), " rows, asked for ", live.size());
    cands.clear();
    for (size_t r = 0; r < live.size(); ++r)
      for (size_t v = 0; v < lp[r].size(); ++v)
        if (std::isfinite(lp[r][v]))
          cands.push_back({live[r].log_prob + lp[r][v], static_cast<int>(r), static_cast<int32_t>(v)});
    const size_t k = std::min(cands.size(), 2 * N);
    std::partial_sort(cands.begin(), cands.begin() + static_cast<std::ptrdiff_t>(k), cands.end(),
                      [](const Candidate& a, const Candidate& b) {
                        if (a.log_prob != b.log_prob) return a.log_prob > b.log_prob;
                        return a.row != b.row ? a.row < b.row : a.token < b.token;
                      });
    std::vector<Live> grown;
    for (size_t i = 0; i < k && grown.size() < N; ++i) {
      const Candidate& c = cands[i];
      std::vector<int32_t> tokens = live[c.row].tokens;
      tokens.push_back(c.token);
      if (c.token == o.eos) {
        // An EOS below the first `beam` candidates would not have been kept in a beam anyway.
        if (i < N) done.push_back(finish(std::move(tokens), c.log_prob, true, o.length_penalty));
        continue;
      }
      grown.push_back({std::move(tokens), c.log_prob, c.row});
    }
    live = std::move(grown);
    if (t + 1 == o.max_len) {
      for (Live& h : live) done.push_back(finish(std::move(h.tokens), h.log_prob, false, o.length_penalty));
      break;
    }
    if (live.empty()) break;
    if (done.size() >= N) {
      std::sort(done.begin(), done.end(), better);
      double best_live = -INFINITY;
      for (const Live& h : live) best_live = std::max(best_live, h.log_prob / lp_max);
      if (done[N - 1].score >= best_live) break;
    }
  }
  std::sort(done.begin(), done.end(), better);
  if (done.size() > static_cast<size_t>(o.n_best)) done.resize(o.n_best);
  return done;
}

}  // namespace loom
