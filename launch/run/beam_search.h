// beam_search.h: beam search over any model that gives log-probabilities of the next token for
// a batch of prefixes. It knows no model: a decoder-only kind (launch/run/sampler.h's
// beam_generate), an encoder-decoder or a hand-built table in a test plug in the same way.
//
// Step-synchronous, as in GNMT (Wu et al. 2016) and fairseq: every live hypothesis grows by
// one token per step; of the 2 x beam best extensions by total log-probability, those ending
// in EOS among the first `beam` are finished, and the best `beam` others stay live. Finished
// hypotheses are ranked by log-probability / lp(length), GNMT's length penalty
// lp(n) = ((5 + n) / 6)^alpha (alpha 0: plain log-probability). The search stops when
// `beam` finished hypotheses beat the best score any live one could still reach, or at
// max_len tokens, where the live ones are finished as they stand.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

namespace loom {

struct BeamOptions {
  int beam = 4;
  int n_best = 1;               // hypotheses returned, best first (<= beam)
  int max_len = 200;            // tokens generated at most, EOS included
  double length_penalty = 0.0;  // GNMT's alpha, >= 0
  int32_t eos = -1;             // the token that ends a hypothesis; -1: none (all run to max_len)
};

struct Hypothesis {
  std::vector<int32_t> tokens;  // generated tokens, the EOS included when `ended`
  double log_prob = 0;          // sum of the tokens' natural-log probabilities
  double score = 0;             // log_prob / lp(tokens.size())
  bool ended = false;           // by EOS; false: cut at max_len
};

// One hypothesis to extend: row `parent` of the previous call (-1 in the first call, whose one
// row is the empty prefix) with `token` appended; `prefix` is all its tokens so far.
struct BeamRow {
  int parent = -1;
  int32_t token = -1;
  const std::vector<int32_t>* prefix = nullptr;
};

// Log-probabilities [vocab] of the next token after each row, in the rows' order.
using NextLogProbs = std::function<std::vector<std::vector<double>>(const std::vector<BeamRow>& rows)>;

// GNMT's lp(len) = ((5 + len) / 6)^alpha.
double gnmt_length_penalty(int len, double alpha);

// log softmax in double (what the search adds up).
std::vector<double> log_softmax(std::span<const float> logits);

// The `o.n_best` best hypotheses, best first (score, then log-probability, then tokens).
std::vector<Hypothesis> beam_search(const NextLogProbs& next, const BeamOptions& o);

}  // namespace loom
