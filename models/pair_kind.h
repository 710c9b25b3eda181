// pair_kind.h: what the sequence-to-sequence kinds (encdec, rnn-seq2seq, gpt-pairs) share: their base
// class and the ends of their graphs.
#pragma once
#include <memory>

#include "models/model.h"

namespace loom {

// What the sequence-to-sequence kinds share: they learn from pairs, and their TokenDecoder is
// their Seq2SeqDecoder (sampling without a source is meaningless; it decodes after encode()).
class PairModelKind : public ModelKind {
 public:
  bool learns_pairs() const override { return true; }
  std::unique_ptr<TokenDecoder> decoder(const ModelConfig& c, const ModelWeights& w, Backend& be) const override {
    return seq2seq_decoder(c, w, be);
  }
};

// An Encode graph's end: what the decoder reads of the source (memory, and state_out where
// the kind starts its decoder from computed states) are its outputs.
inline void finish_encode_graph(ModelGraph& m) {
  for (int v : m.memory) m.g.mark_output(v);
  for (int v : m.state_out) m.g.mark_output(v);
  m.g.forward_end = m.g.nodes.size();
}

// A pair graph's end after its logits: a Decode graph outputs them, the others compute the
// loss (finish_lm). `hidden` is what the classifier read: Eval and Decode graphs keep it.
inline void finish_pair_graph(ModelGraph& m, int hidden, int logits, GraphMode mode, bool keep_logits) {
  if (mode != GraphMode::Train) {
    m.hidden = hidden;
    m.g.mark_output(hidden);
  }
  if (mode != GraphMode::Decode) return finish_lm(m, logits, mode, keep_logits);
  m.g.set_scope("head");
  m.logits = logits;
  m.g.mark_output(m.logits);
}

}  // namespace loom
