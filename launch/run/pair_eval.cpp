// pair_eval.cpp: see pair_eval.h.
#include "launch/run/pair_eval.h"

#include <algorithm>
#include <cmath>

#include "core/check.h"
#include "engine/backend/device.h"
#include "engine/data/pairs.h"
#include "engine/graph/executor.h"
#include "engine/optim/weights.h"
#include "launch/run/pair_batches.h"
#include "launch/run/pair_decode.h"

namespace loom {

namespace {

int32_t argmax(const float* x, size_t n) { return static_cast<int32_t>(std::max_element(x, x + n) - x); }

}  // namespace

PairEvalResult evaluate_pairs(const ModelConfig& model, const std::vector<float>& params, const Tokenizer& tok,
                              const std::string& data_dir, const PairEvalOptions& o) {
  LOOM_CHECK(model_kind(model.kind).learns_pairs(), "pair evaluation of kind ", model.kind);
  LOOM_CHECK(o.batch >= 1 && o.beam >= 0 && o.max_pairs >= 0, "pair evaluation options");
  const PairFolder folder = open_pair_folder(data_dir);
  const PairVocab vocab = folder_vocab_of(folder, model, tok, data_dir);
  LOOM_USER_CHECK(o.split == "val" || o.split == "train", "--split: '", o.split, "' is not val or train");
  const PairSplit val(folder.dir, o.split);
  check_pair_lengths(val, model);
  const int64_t n = first_pairs(val, o.max_pairs);
  const std::vector<SplitPair> pairs = read_split_pairs(val, vocab, 0, n);
  PairEvalResult r;
  r.pairs = n;
  auto be = make_backend(o.device);
  // Span corruption: each target token's kind, and the counting baselines' loss on the span
  // tokens (learned from the train split).
  r.span_kinds = folder.task == "span-corruption" && folder.vocab.sentinels > 0;
  std::vector<std::vector<SpanToken>> kinds;
  if (r.span_kinds) {
    const SpanBaselines base(PairSplit(folder.dir, "train"), folder.train_pairs / folder.masks, vocab);
    for (const SplitPair& p : pairs) {
      kinds.push_back(span_token_kinds(p.source, p.target, vocab));
      for (size_t t = 0; t < p.target.size(); ++t) {
        const SpanToken& k = kinds.back()[t];
        PairEvalResult::Kind& rk = r.kinds[static_cast<int>(k.kind)];
        ++rk.tokens;
        if (!is_span_token(k.kind)) continue;
        const auto y = static_cast<uint32_t>(p.target[t]);
        rk.unigram -= base.log_unigram(y);
        rk.bigram -= base.log_bigram(k.left, y);
      }
    }
  }

  // Teacher forcing: the loss and each position's most likely token given the gold prefix.
  {
    ModelGraph eg = build_model(model, GraphMode::Eval, o.batch, model.seq_len, be->float_dtype(), true);
    DeviceWeights w(*be, static_cast<int64_t>(params.size()));
    w.upload(params);
    Executor ex(eg.g, *be);
    ex.bind_params(w.graph_params(), nullptr);
    PairBatch b;
    PairInputs in;
    double sum = 0;
    int64_t right = 0;
    const auto V = static_cast<size_t>(model.vocab);
    for (size_t first = 0; first < pairs.size(); first += static_cast<size_t>(o.batch)) {
      split_batch(pairs, first, eg, vocab, b);
      fill_pair_inputs(b, eg, vocab.pad(), in);
      set_pair_inputs(ex, eg, in);
      ex.forward();
      sum += ex.fetch_f32(eg.loss)[0] * static_cast<double>(eg.B) * eg.T;
      r.target_tokens += in.target_tokens;
      const std::vector<float> logits = ex.fetch_f32(eg.logits);
      LOOM_CHECK(logits.size() == static_cast<size_t>(eg.B) * eg.T * V, "logits of ", logits.size());
      for (int row = 0; row < eg.B; ++row)
        for (int t = 0; t < b.target_len[row]; ++t) {
          const size_t at = static_cast<size_t>(row) * eg.T + static_cast<size_t>(in.target_start[row] + t);
          const float* z = logits.data() + at * V;
          const int32_t best = argmax(z, V);
          const bool hit = best == in.targets[at];
          right += hit;
          if (!r.span_kinds) continue;
          // -log softmax(z)[target], in double: max + log sum exp(z - max) - z[target].
          const double m = z[best];
          double sum_exp = 0;
          for (size_t c = 0; c < V; ++c) sum_exp += std::exp(static_cast<double>(z[c]) - m);
          const SpanToken& k = kinds[first + static_cast<size_t>(row)][static_cast<size_t>(t)];
          PairEvalResult::Kind& rk = r.kinds[static_cast<int>(k.kind)];
          rk.loss += m + std::log(sum_exp) - static_cast<double>(z[in.targets[at]]);
          rk.accuracy += hit;
        }
    }
    r.loss = r.target_tokens > 0 ? sum / static_cast<double>(r.target_tokens) : 0.0;
    r.tf_accuracy = r.target_tokens > 0 ? static_cast<double>(right) / static_cast<double>(r.target_tokens) : 0.0;
    for (PairEvalResult::Kind& k : r.kinds)
      if (k.tokens > 0)
        for (double* x : {&k.loss, &k.accuracy, &k.unigram, &k.bigram}) *x /= static_cast<double>(k.tokens);
  }

  // Free running: each source encoded once, its greedy decode compared position by position,
  // and the decode that is scored (greedy, or the best of the beam) kept as text.
  PairDecoder dec(model, params, *be, vocab, o.knn, o.knn_options);
  SampleOptions greedy;
  greedy.greedy = true;
  greedy.max_new_tokens = model.seq_len;
  BeamOptions beam;
  beam.beam = std::max(o.beam, 1);
  beam.max_len = model.seq_len;
  beam.length_penalty = o.length_penalty;
  int64_t right = 0;
  auto text = [&](const std::vector<int32_t>& ids, bool ended) {
    return one_line(pair_text(std::span<const int32_t>(ids.data(), ids.size() - (ended ? 1 : 0)), tok, vocab));
  };
  for (int64_t i = 0; i < n; ++i) {
    const SplitPair& p = pairs[static_cast<size_t>(i)];
    dec.encode(p.source);
    const Hypothesis g = dec.decode(greedy);
    for (size_t t = 0; t < p.target.size() && t < g.tokens.size(); ++t) right += g.tokens[t] == p.target[t];
    const Hypothesis h = o.beam > 0 ? dec.beam(beam).at(0) : g;
    r.exact += h.tokens == p.target;
    r.decodes.push_back(text(h.tokens, h.ended));
    r.references.push_back(text(p.target, true));
    if (o.progress) o.progress(i + 1, n);
  }
  r.fr_accuracy = r.target_tokens > 0 ? static_cast<double>(right) / static_cast<double>(r.target_tokens) : 0.0;
  r.exact_match = n > 0 ? static_cast<double>(r.exact) / static_cast<double>(n) : 0.0;
  r.bleu = corpus_bleu(r.decodes, {r.references});
  r.chrf = corpus_chrf(r.decodes, {r.references});
  return r;
}

}  // namespace loom
