// prepare_pairs.h: `loom prepare` for sequence pairs: a TSV file, two aligned files, or T5's
// span corruption of a corpus's lines, written as a pair folder (pairs.h).
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/data/pairs.h"

namespace loom {

class Rng;

struct PairPrepareOptions {
  // The last val_fraction of the pairs (at least one) is val, the rest train.
  double val_fraction = 0.05;
  // The most tokens one side may have (before EOS); 0: no limit.
  uint64_t max_len = 0;
  // Span corruption: share of a line's tokens masked, mean span length, sentinel ids reserved,
  // and the seed (a line's spans depend only on it and the line's number).
  double noise_density = 0.15;
  double mean_span = 3.0;
  uint32_t sentinels = 100;
  uint64_t seed = 1;
  // Span corruption: independent masks of every train line (T5 and RoBERTa draw a new mask
  // each epoch; here they are drawn up front). Val lines get one.
  uint64_t masks = 1;
};

// FILE.tsv: one pair a line, source TAB target (exactly one TAB, both sides non-empty; a final
// newline and a CR before it are not part of the target). UserError naming FILE:LINE otherwise.
void prepare_pairs_tsv(const std::string& tsv, const std::string& tokenizer, const std::string& out_dir,
                       const PairPrepareOptions& options);

// Line i of `source` with line i of `target`; both must have the same number of lines.
void prepare_pairs_aligned(const std::string& source, const std::string& target, const std::string& tokenizer,
                           const std::string& out_dir, const PairPrepareOptions& options);

// Every line of the corpus (kjv: one verse a line, or a text file) with at least two tokens
// (and at most max_len) becomes pairs by span corruption (span_corrupt); other lines are
// skipped. The split is by line: the last val_fraction of the lines are val, one pair each
// (mask 0); every train line gives `masks` pairs, mask m drawn from (seed, line number, m).
// The kept lines' tokens are held in memory until the pairs are written.
void prepare_span_corruption(const std::string& corpus, const std::string& tokenizer, const std::string& out_dir,
                             const PairPrepareOptions& options);

// T5's span corruption of `tokens` (at least 2): round(density x n) tokens (at least 1, at
// most n - 1) in round(noise / mean_span) spans (at least 1, at most vocab.sentinels, and at
// most n - noise + 1, since spans are kept apart by kept tokens), the
// span lengths and the gaps between them drawn uniformly from rng, the first and last gap
// possibly empty. source: the tokens with span k replaced by sentinel k; target: sentinel k
// then span k's tokens, for k = 0, 1, .... Returns the number of masked tokens.
size_t span_corrupt(std::span<const uint32_t> tokens, const PairVocab& vocab, double density, double mean_span,
                    Rng& rng, std::vector<uint32_t>& source, std::vector<uint32_t>& target);

}  // namespace loom
