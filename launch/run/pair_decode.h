// pair_decode.h: decoding for sequence-to-sequence kinds (ModelKind::learns_pairs()), shared by
// `loom sample --source` and `loom eval` on pairs: source text to the tokens the model reads,
// decoded tokens to text with pair data's own ids shown readably, and greedy, sampled or beam
// decoding through the kind's Seq2SeqDecoder (the encoder once per source, then one target
// token at a time over the decoder's caches). It knows no kind, only the seam.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/data/pairs.h"
#include "engine/data/tokenizer.h"
#include "launch/run/knn.h"
#include "launch/run/sampler.h"
#include "models/model.h"

namespace loom {

// A pair checkpoint's ids: the tokenizer's vocabulary is the base, and what the model has
// beyond PAD, BOS and EOS after it are sentinels (engine/data/pairs.h). UserError when the
// model's vocabulary cannot hold them.
PairVocab pair_vocab_of(const ModelConfig& model, const Tokenizer& tok);
// pair_vocab_of, checked against a pair folder's: UserError naming `data_dir` when they differ.
PairVocab folder_vocab_of(const PairFolder& folder, const ModelConfig& model, const Tokenizer& tok,
                          const std::string& data_dir);

// A source text as the model reads it: its tokens, each marker "<sK>" (K < the sentinels) as
// sentinel K, then EOS. UserError naming `where` when it encodes to no tokens or is longer
// than model.src_len.
std::vector<int32_t> encode_source(std::string_view text, const Tokenizer& tok, const PairVocab& v, int src_len,
                                   const std::string& where);

// Tokens as text: each run of tokenizer ids decoded together, sentinel K as "<sK>" (as
// docs/data.md writes span corruption), PAD, BOS and EOS as "<pad>", "<bos>", "<eos>".
std::string pair_text(std::span<const int32_t> ids, const Tokenizer& tok, const PairVocab& v);

// A span-corruption source (without its EOS) with its gaps filled from a decoded target:
// sentinel K becomes "[" + the target's span K + "]" (the span's leading spaces go before the
// bracket), "[]" where the target has no span K; the rest as pair_text writes it.
// "For ye are our<s0> and joy." with "<s0> glory" reads "For ye are our [glory] and joy.".
std::string filled_text(std::span<const int32_t> source, std::span<const int32_t> target, const Tokenizer& tok,
                        const PairVocab& v);

// `text` on one line of UTF-8: backslash, newline, tab and carriage return as \\, \n, \t, \r,
// and each byte that is not part of a UTF-8 character as \xHH. What loom writes for a decode
// (and its reference), so that every one is one line that `loom score` reads.
std::string one_line(std::string_view text);

// The kind's Seq2SeqDecoder with the pair ids: encode a source, then decode its target.
class PairDecoder {
 public:
  // With `knn`, each step mixes the datastore's neighbours into the model's distribution
  // (knn.h); `knn` must outlive the decoder.
  PairDecoder(const ModelConfig& model, const std::vector<float>& params, Backend& be, const PairVocab& v,
              const KnnStore* knn = nullptr, const KnnOptions& knn_options = {});
  // Encodes `source` (EOS included, as encode_source gives it) for the decodes that follow.
  void encode(std::span<const int32_t> source);
  // One target picked token by token under `o` (--greedy or temperature 0: the most likely;
  // a fresh random stream from o.seed each call) until EOS, or o.max_new_tokens tokens, or
  // what the target side holds (model.seq_len, EOS included). `tokens` holds the EOS when
  // `ended`; log_prob (= score) sums the model's untempered log-probabilities of the tokens.
  Hypothesis decode(const SampleOptions& o);
  // Beam search (launch/run/beam_search.h) with the pair EOS; o.eos is set here and o.max_len
  // cut to model.seq_len.
  std::vector<Hypothesis> beam(BeamOptions o);
  const PairVocab& vocab() const { return vocab_; }

 private:
  PairDecoder(const ModelConfig& model, const PairVocab& v, std::unique_ptr<Seq2SeqDecoder> d);
  PairVocab vocab_;
  int seq_len_;
  Seq2SeqDecoder* s2s_;  // owned by dec_
  Decoder dec_;
};

}  // namespace loom
