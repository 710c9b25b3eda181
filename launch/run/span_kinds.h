// span_kinds.h: the target tokens of span-corruption pairs by kind, and two counting baselines
// for the span tokens, so that `loom eval` can say where a model's loss lies.
//
// A span-corruption target (with its EOS) is sentinel 0, span 0, sentinel 1, span 1, ..., EOS
// (engine/data/prepare_pairs.h). Its tokens are of four kinds:
//   sentinel      a sentinel id (which span comes next; the source says how many there are)
//   span start    the first token of a span: what the decoder must read from the source,
//                 around the sentinel, because nothing of the span is in its input yet
//   span inside   a later token of a span (the decoder's input holds the span so far)
//   EOS           the end
// Each span token has a left neighbour in the line the pair was made from: for a span start the
// source token just before its sentinel (BOS when the span opens the line), inside a span the
// target token before it.
//
// The baselines predict a span token from counts of the train split's lines (each line put back
// from its pair; with --masks N from mask 0 of each line, so every line counts once): a unigram
// (add-one over the tokenizer's vocabulary) and a bigram of the left neighbour, interpolated with
// the unigram by Witten-Bell (no parameter to tune). A model that reads its source should beat
// the bigram on span starts; one that does not reads like the unigram there.
#pragma once
#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "engine/data/pairs.h"

namespace loom {

enum class SpanTokenKind { Sentinel = 0, SpanStart = 1, SpanInside = 2, Eos = 3 };
inline constexpr int kSpanTokenKinds = 4;
const char* span_token_kind_name(SpanTokenKind k);
// A token of a span (start or inside): the kinds the baselines predict.
inline bool is_span_token(SpanTokenKind k) { return k == SpanTokenKind::SpanStart || k == SpanTokenKind::SpanInside; }

struct SpanToken {
  SpanTokenKind kind;
  uint32_t left;  // span tokens: the left neighbour (vocab.bos() at the start of the line)
};

// The kind of every token of `target` (which ends with EOS) of a span-corruption pair.
// InternalError when the pair is not one span_corrupt could have written.
std::vector<SpanToken> span_token_kinds(std::span<const int32_t> source, std::span<const int32_t> target,
                                        const PairVocab& vocab);

class SpanBaselines {
 public:
  // Counts over train pairs [0, pairs) of `train` (each line rebuilt from its source and target).
  SpanBaselines(const PairSplit& train, uint64_t pairs, const PairVocab& vocab);
  // Natural-log probabilities of token y (< vocab.base) after `left` (a token, or vocab.bos()).
  double log_unigram(uint32_t y) const;
  double log_bigram(uint32_t left, uint32_t y) const;

 private:
  PairVocab vocab_;
  std::vector<uint64_t> unigram_;  // [base]
  uint64_t total_ = 0;
  struct Context {
    uint64_t count = 0;                            // bigrams with this left token
    std::unordered_map<uint32_t, uint64_t> next;  // their counts by token (size: distinct tokens)
  };
  std::unordered_map<uint32_t, Context> bigram_;
};

}  // namespace loom
