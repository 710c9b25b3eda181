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
class Tokenizer;

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
  // Span corruption: spans of whole words (word_starts), the share masked and the mean span
  // counted in words; false: in tokens, as T5 (a span may then start or end inside a word).
  bool whole_words = false;
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

// T5's span corruption of `tokens` (at least 2): of its n units (the tokens, or with
// `unit_starts` the units beginning at those token indices: 0 first, increasing),
// round(density x n) (at least 1, at most n - 1) are masked in round(noise / mean_span) spans
// (at least 1, at most vocab.sentinels, and at most n - noise + 1, since spans are kept apart
// by kept units), the span lengths and the gaps between them drawn uniformly from rng, the
// first and last gap possibly empty. source: the tokens with span k replaced by sentinel k;
// target: sentinel k then span k's tokens, for k = 0, 1, .... Returns the number of masked
// tokens.
size_t span_corrupt(std::span<const uint32_t> tokens, const PairVocab& vocab, double density, double mean_span,
                    Rng& rng, std::vector<uint32_t>& source, std::vector<uint32_t>& target,
                    std::span<const uint32_t> unit_starts = {});

// Where the words of a token sequence begin, from each token's text. A word is a run of letters,
// digits, apostrophes and bytes of 0x80 and above (UTF-8) with the spaces just before it, or
// any other character (a punctuation mark) with those spaces: "In the beginning, God" is the
// words "In", " the", " beginning", ",", " God", however the tokenizer cut them (so long as no
// token holds the end of one word and the start of the next). A token continues the word before
// it when that is only spaces so far, or when it begins with a letter and that word ends with
// one; every other token begins a word.
class WordStarts {
 public:
  explicit WordStarts(const Tokenizer& tokenizer);
  // Indices into `tokens` (0 first, if any) where a word begins.
  void operator()(std::span<const uint32_t> tokens, std::vector<uint32_t>& starts) const;

 private:
  // Per id: bit 0, the text begins with a word character; bit 1, it ends with one; bit 2, it is
  // spaces only (or empty).
  std::vector<uint8_t> kind_;
};

}  // namespace loom
