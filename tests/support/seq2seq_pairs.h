// seq2seq_pairs.h: what the sequence-to-sequence kinds' system tests share: synthetic pair
// tasks (reversal, sorting) written as TSV and prepared by `loom prepare --pairs`, a split's
// examples as the model reads them, and decoding a trained checkpoint through its kind's
// Seq2SeqDecoder (greedy, beam search, exact match against the targets).
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <string>
#include <vector>

#include "engine/backend/device.h"
#include "engine/data/pairs.h"
#include "launch/run/beam_search.h"
#include "launch/run/checkpoint.h"
#include "models/model.h"
#include "tests/support/helpers.h"

namespace loom::test {

// `n` pairs of `task` (reverse or sort) over letters a..h, 3 to 7 of them, as a TSV file.
inline std::string synthetic_pairs(const std::string& path, const std::string& task, int n, uint64_t seed) {
  Rng r(seed);
  std::ofstream f(path);
  for (int i = 0; i < n; ++i) {
    std::string s(3 + r.below(5), 'a');
    for (char& c : s) c = static_cast<char>('a' + r.below(8));
    std::string t = s;
    if (task == "reverse") std::reverse(t.begin(), t.end());
    else std::sort(t.begin(), t.end());
    f << s << '\t' << t << '\n';
  }
  return path;
}

inline std::string prepare_pairs(const TempDir& d, const std::string& task, int n = 4000) {
  const std::string out = d / (task + "_pairs");
  const RunResult r = run_loom({"prepare", "--pairs", synthetic_pairs(d / (task + ".tsv"), task, n, 5), "--out", out,
                                "--val-fraction", "0.1"});
  EXPECT_EQ(r.rc, 0) << r.err;
  return out;
}

// The pairs of a split with EOS appended to the source, as the model reads them.
struct Example {
  std::vector<int32_t> source, target;
};
inline std::vector<Example> examples(const std::string& dir, const char* split, size_t n) {
  const PairFolder f = open_pair_folder(dir);
  const PairSplit s(dir, split);
  std::vector<Example> out;
  for (uint64_t i = 0; i < std::min<uint64_t>(n, s.size()); ++i) {
    std::vector<uint32_t> a, b;
    s.read_source(i, a);
    s.read_target(i, b);
    Example e{{a.begin(), a.end()}, {b.begin(), b.end()}};
    e.source.push_back(static_cast<int32_t>(f.vocab.eos()));
    out.push_back(std::move(e));
  }
  return out;
}

inline int32_t argmax(const std::vector<float>& v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

// Greedy decoding through the kind's cached decoder: tokens up to EOS (excluded).
inline std::vector<int32_t> greedy(Seq2SeqDecoder& dec, const std::vector<int32_t>& source, const PairVocab& v, int T) {
  dec.encode(source);
  dec.reset();
  std::vector<int32_t> out;
  int32_t tok = static_cast<int32_t>(v.bos());
  for (int t = 0; t < T; ++t) {
    tok = argmax(dec.step(tok, t));
    if (tok == static_cast<int32_t>(v.eos())) break;
    out.push_back(tok);
  }
  return out;
}

// Beam search (launch/run/beam_search.h) over the decoder, each hypothesis's state saved and
// restored; the best hypothesis's tokens up to EOS (excluded).
inline std::vector<int32_t> beam_decode(Seq2SeqDecoder& dec, const std::vector<int32_t>& source, const PairVocab& v,
                                        int T, int beam) {
  dec.encode(source);
  dec.reset();
  std::vector<std::unique_ptr<DecoderState>> states;
  int pos = 0;
  BeamOptions o;
  o.beam = beam;
  o.max_len = T;
  o.eos = static_cast<int32_t>(v.eos());
  std::vector<Hypothesis> best = beam_search(
      [&](const std::vector<BeamRow>& rows) {
        std::vector<std::vector<double>> out;
        std::vector<std::unique_ptr<DecoderState>> grown;
        for (const BeamRow& r : rows) {
          if (r.parent >= 0) dec.restore(*states[r.parent]);
          out.push_back(log_softmax(dec.step(r.parent < 0 ? static_cast<int32_t>(v.bos()) : r.token, pos)));
          grown.push_back(dec.save());
        }
        states = std::move(grown);
        ++pos;
        return out;
      },
      o);
  std::vector<int32_t> t = best.at(0).tokens;
  if (!t.empty() && t.back() == o.eos) t.pop_back();
  return t;
}

struct Trained {
  CheckpointData ck;
  PairVocab vocab;
};

inline Trained load(const std::string& run, const std::string& data) {
  return {load_checkpoint(run, false), open_pair_folder(data).vocab};
}

// Share of `ex` whose greedy decode is exactly the target.
inline double exact_match(const Trained& m, const std::vector<Example>& ex) {
  auto be = make_cpu_backend();
  auto dec = model_kind(m.ck.model.kind).seq2seq_decoder(m.ck.model, ModelWeights{m.ck.params, m.ck.counts}, *be);
  int right = 0;
  for (const Example& e : ex) right += greedy(*dec, e.source, m.vocab, m.ck.model.seq_len) == e.target;
  return static_cast<double>(right) / static_cast<double>(ex.size());
}

}  // namespace loom::test
