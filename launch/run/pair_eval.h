// pair_eval.h: `loom eval` on a sequence-to-sequence checkpoint: over the first pairs of a split
// (val unless told otherwise), the target-token loss under teacher forcing, and free-running
// decodes (greedy, or beam search, optionally with a kNN memory mixed in) scored by exact match,
// corpus BLEU and chrF; plus the exposure gap, token accuracy under teacher forcing against
// token accuracy of the model reading its own outputs.
//
// Definitions (docs/decoding.md). The target of a pair is its tokens and EOS (n tokens).
//   loss:          mean over every target token of every pair of -log p(token | source, gold
//                  prefix); padding takes no part (perplexity = exp(loss)).
//   teacher-forced accuracy: share of target tokens where the model's most likely token given
//                  the gold prefix is the gold token.
//   free-running accuracy:   share of target tokens t (t < n) where the model's own greedy
//                  decode (EOS included when it ends with one) has the gold token at position t;
//                  a decode shorter than the target misses the positions past its end.
//   exposure gap:  teacher-forced accuracy - free-running accuracy (both over the same tokens).
//   exact match:   share of pairs whose decode ends with EOS and equals the target token for token.
//   BLEU / chrF:   corpus scores (bleu_chrf.h, sacreBLEU's defaults: 13a, 4-grams) of the
//                  decodes' text against the targets' text, each one line (pair_decode.h).
//   by kind:       span-corruption folders only: the teacher-forced loss and accuracy over the
//                  target tokens of each kind (sentinel, span start, span inside, EOS), and the
//                  loss of the train split's unigram and bigram on the span tokens (span_kinds.h).
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/data/tokenizer.h"
#include "launch/run/bleu_chrf.h"
#include "launch/run/knn.h"
#include "launch/run/span_kinds.h"
#include "models/model.h"

namespace loom {

struct PairEvalOptions {
  std::string split = "val";    // the split evaluated (train: how well it knows what it saw)
  int64_t max_pairs = 0;        // the first N pairs of the split (0: all)
  int batch = 8;                // pairs per teacher-forced batch
  int beam = 0;                 // 0: greedy decodes; N >= 1: beam search with N hypotheses
  double length_penalty = 0.0;  // beam search's GNMT alpha
  std::string device = "auto";
  // Decodes mix in this datastore's neighbours (knn.h); the teacher-forced numbers stay the
  // model's own.
  const KnnStore* knn = nullptr;
  KnnOptions knn_options;
  // Called after each decoded pair with (pairs decoded, pairs to decode).
  std::function<void(int64_t, int64_t)> progress;
};

struct PairEvalResult {
  int64_t pairs = 0, target_tokens = 0;  // target tokens with EOS
  double loss = 0;                       // nats per target token
  int64_t exact = 0;
  double exact_match = 0;
  double tf_accuracy = 0, fr_accuracy = 0;
  BleuScore bleu;
  ChrfScore chrf;
  // By target-token kind (index: SpanTokenKind), for span-corruption folders (span_kinds true).
  // unigram and bigram: the baselines' nats per token, span tokens only (0 for the others).
  struct Kind {
    int64_t tokens = 0;
    double loss = 0, accuracy = 0, unigram = 0, bigram = 0;
  };
  bool span_kinds = false;
  std::array<Kind, kSpanTokenKinds> kinds{};
  // Per pair, in val order: the decode's text and the target's text, one line each.
  std::vector<std::string> decodes, references;
};

// A pair kind's checkpoint (model, params, tokenizer) on data_dir's split o.split. UserError when
// the folder is not one of pairs of the model's vocabulary or holds pairs longer than it reads.
PairEvalResult evaluate_pairs(const ModelConfig& model, const std::vector<float>& params, const Tokenizer& tok,
                              const std::string& data_dir, const PairEvalOptions& o);

}  // namespace loom
