// seq2seq_pairs.h: what the sequence-to-sequence kinds' system tests share beyond the
// synthetic tasks and configs of pair_tasks.h: a split's examples as the model reads them, and
// decoding a trained checkpoint through its kind's Seq2SeqDecoder (greedy, beam search, exact
// match against the targets).
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include "engine/backend/device.h"
#include "engine/data/pairs.h"
#include "engine/graph/executor.h"
#include "engine/optim/weights.h"
#include "launch/run/beam_search.h"
#include "launch/run/checkpoint.h"
#include "launch/run/trainer.h"
#include "models/model.h"
#include "tests/support/helpers.h"
#include "tests/support/pair_tasks.h"

namespace loom::test {

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

// The largest |a[i] - b[i]|: logits that must differ (the decoder reads the source).
inline double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double d = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) d = std::max(d, static_cast<double>(std::fabs(a[i] - b[i])));
  return d;
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

// Beam search forks the decoder: a state saved after a prefix of e's target, restored after
// other tokens were fed, continues exactly as if nothing had come between; another source with
// the same target prefix gives other logits (the decoder reads the source).
inline void expect_saved_state_continues(Seq2SeqDecoder& dec, const Example& e, int32_t bos) {
  dec.encode(e.source);
  dec.step(bos, 0);
  dec.step(e.target[0], 1);
  const auto saved = dec.save();
  const std::vector<float> a = dec.step(e.target[1], 2);
  dec.step(3, 2);
  dec.step(4, 3);
  dec.restore(*saved);
  EXPECT_EQ(dec.step(e.target[1], 2), a);
  std::vector<int32_t> other = e.source;
  std::reverse(other.begin(), other.end() - 1);
  other[0] = other[0] == 'a' ? 'h' : 'a';
  dec.encode(other);
  dec.step(bos, 0);
  dec.step(e.target[0], 1);
  EXPECT_GT(max_abs_diff(a, dec.step(e.target[1], 2)), 1e-3) << "the decoder's logits do not depend on the source";
}

// `loom train` in process, its progress lines not printed.
inline TrainResult train_quietly(const Config& c) {
  TrainOptions o;
  o.quiet = true;
  return train(c, o);
}

// `text` with `from` (which must be there) replaced by `to`.
inline std::string replaced(std::string text, const std::string& from, const std::string& to) {
  const size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return at == std::string::npos ? text : text.replace(at, from.size(), to);
}

// `loom train` on a config text (written to d/bad.toml).
inline RunResult train_text(const TempDir& d, const std::string& text) {
  std::ofstream(d / "bad.toml") << text;
  return run_loom({"train", "--config", d / "bad.toml"});
}

// The kind's cached decoder (encoder once, its caches or carried state) against the Eval graph
// over the whole decoder input at every step, following the greedy tokens: the same logits.
inline void expect_cached_decoding_equals_full_forward(const Trained& m, const std::vector<Example>& examples) {
  const ModelConfig& c = m.ck.model;
  auto be = make_cpu_backend();
  auto dec = model_kind(c.kind).seq2seq_decoder(c, ModelWeights{m.ck.params, m.ck.counts}, *be);
  ModelGraph eg = build_model(c, GraphMode::Eval, 1, c.seq_len, be->float_dtype(), true);
  DeviceWeights w(*be, eg.g.param_count);
  w.upload(m.ck.params);
  Executor ex(eg.g, *be);
  ex.bind_params(w.graph_params(), nullptr);
  const std::vector<int32_t> no_targets(c.seq_len, kIgnoreTarget);
  ex.set_input(eg.targets, no_targets.data(), no_targets.size() * 4);
  for (const Example& e : examples) {
    dec->encode(e.source);
    dec->reset();
    std::vector<int32_t> src(c.src_len, static_cast<int32_t>(m.vocab.pad())), len{static_cast<int32_t>(e.source.size())};
    std::copy(e.source.begin(), e.source.end(), src.begin());
    std::vector<int32_t> input(c.seq_len, static_cast<int32_t>(m.vocab.pad()));
    input[0] = static_cast<int32_t>(m.vocab.bos());
    ex.set_input(eg.source, src.data(), src.size() * 4);
    ex.set_input(eg.source_len, len.data(), 4);
    for (int t = 0; t < c.seq_len; ++t) {
      const std::vector<float> cached = dec->step(input[t], t);
      ex.set_input(eg.tokens, input.data(), input.size() * 4);
      ex.forward();
      const std::vector<float> all = ex.fetch_f32(eg.logits);
      const size_t V = cached.size();
      ASSERT_EQ(all.size(), V * c.seq_len);
      for (size_t i = 0; i < V; ++i) ASSERT_NEAR(cached[i], all[t * V + i], 1e-4) << "step " << t << " id " << i;
      if (t + 1 < c.seq_len) input[t + 1] = argmax(cached);
    }
  }
}

// `steps` steps in one run, and in a run interrupted after 13 and resumed: the same loss and
// padding share at every step, the same weights and optimizer state, bit for bit.
inline void expect_resume_bit_exact(const TempDir& d, int steps, const std::function<Config(const std::string&)>& config) {
  TrainOptions o;
  o.quiet = true;
  train(config(d / "full"), o);
  o.stop_after = 13;
  ASSERT_TRUE(train(config(d / "resumed"), o).interrupted);
  o.stop_after = 0;
  o.resume = true;
  train(config(d / "resumed"), o);
  auto a = read_metrics(d / "full"), b = read_metrics(d / "resumed");
  ASSERT_EQ(a.size(), static_cast<size_t>(steps));
  ASSERT_EQ(b.size(), a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i]["loss"].get<double>(), b[i]["loss"].get<double>()) << "step " << i + 1;
    EXPECT_EQ(a[i]["padding"].get<double>(), b[i]["padding"].get<double>()) << "step " << i + 1;
    EXPECT_GE(a[i]["padding"].get<double>(), 0.0);  // 0: a batch of the longest pairs
    EXPECT_LT(a[i]["padding"].get<double>(), 1.0);
  }
  EXPECT_EQ(read_bytes(d / "full/latest/model.safetensors"), read_bytes(d / "resumed/latest/model.safetensors"));
  EXPECT_EQ(read_bytes(d / "full/latest/optim.safetensors"), read_bytes(d / "resumed/latest/optim.safetensors"));
}

}  // namespace loom::test
