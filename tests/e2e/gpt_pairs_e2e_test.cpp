// gpt_pairs_e2e_test.cpp: the decoder-only GPT on pairs (model.kind = gpt-pairs) end to end on
// CPU: each pair is one sequence "source EOS BOS target EOS" with the loss on the target only;
// it learns the synthetic sorting task to exact match through the same Seq2SeqDecoder seam as
// the encoder-decoder kinds (the source fed into the KV cache once), the cached decoder
// decodes what the full Eval graph decodes, and training resumes bit-exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "engine/backend/device.h"
#include "engine/data/pair_loader.h"
#include "engine/data/pairs.h"
#include "engine/graph/executor.h"
#include "engine/optim/weights.h"
#include "launch/run/checkpoint.h"
#include "launch/run/pair_batches.h"
#include "launch/run/trainer.h"
#include "tests/support/helpers.h"
#include "tests/support/pair_tasks.h"

namespace loom::test {
namespace {

// A 2-layer GPT of width 64 over one sequence of 8 source and 8 target positions.
Config gpt_pairs_config(const std::string& data, const std::string& run, int steps) {
  std::string t = encdec_config(data, run, steps);
  const std::string from = "kind = \"encdec\"\nn_enc_layer = 2\nn_dec_layer = 2\n";
  const size_t at = t.find(from);
  EXPECT_NE(at, std::string::npos);
  t.replace(at, from.size(), "kind = \"gpt-pairs\"\nn_layer = 2\n");
  return parse_config_text(t, "gpt_pairs.toml", {});
}

int32_t argmax(const std::vector<float>& v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

// The val pairs as the model reads them: source with EOS, target without.
std::vector<std::pair<std::vector<int32_t>, std::vector<int32_t>>> val_pairs(const std::string& dir, size_t n) {
  const PairFolder f = open_pair_folder(dir);
  const PairSplit s(dir, "val");
  std::vector<std::pair<std::vector<int32_t>, std::vector<int32_t>>> out;
  for (uint64_t i = 0; i < std::min<uint64_t>(n, s.size()); ++i) {
    std::vector<uint32_t> a, b;
    s.read_source(i, a);
    s.read_target(i, b);
    out.emplace_back(std::vector<int32_t>(a.begin(), a.end()), std::vector<int32_t>(b.begin(), b.end()));
    out.back().first.push_back(static_cast<int32_t>(f.vocab.eos()));
  }
  return out;
}

// A model after 30 steps on `data`: not random, not yet good.
CheckpointData briefly_trained(const std::string& data, const std::string& run) {
  TrainOptions o;
  o.quiet = true;
  train(gpt_pairs_config(data, run, 30), o);
  return load_checkpoint(run, false);
}

TEST(GptPairs, LearnsSortingToExactMatch) {
  TempDir d;
  const std::string data = prepare_pairs(d, "sort");
  TrainOptions o;
  o.quiet = true;
  const TrainResult r = train(gpt_pairs_config(data, d / "run", 2500), o);
  EXPECT_LT(r.last_val_loss, 0.05);
  const CheckpointData ck = load_checkpoint(d / "run", false);
  const PairVocab v = open_pair_folder(data).vocab;
  auto be = make_cpu_backend();
  auto dec = model_kind("gpt-pairs").seq2seq_decoder(ck.model, ModelWeights{ck.params, ck.counts}, *be);
  int right = 0;
  const auto pairs = val_pairs(data, 200);
  for (const auto& [source, target] : pairs) {
    dec->encode(source);
    std::vector<int32_t> out;
    int32_t tok = static_cast<int32_t>(v.bos());
    for (int t = 0; t < dec->capacity(); ++t) {
      tok = argmax(dec->step(tok, t));
      if (tok == static_cast<int32_t>(v.eos())) break;
      out.push_back(tok);
    }
    right += out == target;
  }
  const double em = static_cast<double>(right) / static_cast<double>(pairs.size());
  EXPECT_GE(em, 0.99) << "exact match " << em;
}

// The training loss is the mean over the target tokens only: recomputed from the Eval graph's
// logits over the target positions it matches, and it differs from the mean that would take in
// the source positions as well (so this test would see them in the loss).
TEST(GptPairs, LossIsOnTheTargetOnly) {
  TempDir d;
  const std::string data = prepare_pairs(d, "reverse", 800);
  const CheckpointData ck = briefly_trained(data, d / "run");
  const PairFolder f = open_pair_folder(data);
  const PairSplit val(f.dir, "val");
  auto be = make_cpu_backend();
  ModelGraph eg = build_model(ck.model, GraphMode::Eval, 4, ck.model.seq_len, be->float_dtype(), true);
  ASSERT_LT(eg.source, 0);
  ASSERT_EQ(eg.T, ck.model.src_len + ck.model.seq_len);
  DeviceWeights w(*be, eg.g.param_count);
  w.upload(ck.params);
  Executor ex(eg.g, *be);
  ex.bind_params(w.graph_params(), nullptr);
  PairLoader loader(val, f.vocab, PairLoaderOptions{.batch_size = 4, .seed = 3, .world = 1});
  PairBatch b;
  loader.next_batch(0, b);
  PairInputs in;
  fill_pair_inputs(b, eg, f.vocab.pad(), in);
  set_pair_inputs(ex, eg, in);
  ex.forward();
  const double loss = ex.fetch_f32(eg.loss)[0] * loss_scale(eg, in.target_tokens);
  const std::vector<float> logits = ex.fetch_f32(eg.logits);
  const auto V = static_cast<size_t>(ck.model.vocab);
  auto nll = [&](size_t at, int32_t y) {
    const float* z = logits.data() + at * V;
    const double m = *std::max_element(z, z + V);
    double s = 0;
    for (size_t i = 0; i < V; ++i) s += std::exp(z[i] - m);
    return m + std::log(s) - z[y];
  };
  double target_sum = 0, source_sum = 0;
  int64_t n_target = 0, n_source = 0;
  for (int r = 0; r < eg.B; ++r) {
    const size_t row = static_cast<size_t>(r) * eg.T;
    const int start = in.target_start[r], ls = b.source_len[r];
    ASSERT_EQ(start, ls);
    for (int t = 0; t < eg.T; ++t) {
      const int32_t y = in.targets[row + t];
      if (t >= start && t < start + b.target_len[r]) {
        ASSERT_EQ(y, b.target[static_cast<size_t>(r) * b.T + (t - start)]);
        target_sum += nll(row + t, y);
        ++n_target;
      } else {
        ASSERT_EQ(y, kIgnoreTarget) << "row " << r << " position " << t;
      }
      // What a loss over the source would add: each source token predicted from its prefix.
      if (t + 1 < ls) {
        source_sum += nll(row + t, in.tokens[row + t + 1]);
        ++n_source;
      }
    }
  }
  ASSERT_EQ(n_target, in.target_tokens);
  // f32 logits and loss against this f64 sum over a few dozen tokens: 2e-5 (the two means
  // below differ from it by far more).
  const double tol = 2e-5;
  EXPECT_NEAR(loss, target_sum / n_target, tol);
  ASSERT_GT(n_source, 0);
  EXPECT_GT(std::fabs(loss - (target_sum + source_sum) / (n_target + n_source)), 10 * tol);
  EXPECT_GT(std::fabs(loss - (target_sum + source_sum) / n_target), 10 * tol);
}

// The cached decoder (source fed once, then one target token a step) against the Eval graph over
// the whole sequence each step: the same logits.
TEST(GptPairs, CachedDecodingEqualsFullForward) {
  TempDir d;
  const std::string data = prepare_pairs(d, "reverse", 800);
  const CheckpointData ck = briefly_trained(data, d / "run");
  const ModelConfig& c = ck.model;
  const PairVocab v = open_pair_folder(data).vocab;
  auto be = make_cpu_backend();
  auto dec = model_kind("gpt-pairs").seq2seq_decoder(c, ModelWeights{ck.params, ck.counts}, *be);
  ModelGraph eg = build_model(c, GraphMode::Eval, 1, c.seq_len, be->float_dtype(), true);
  DeviceWeights w(*be, eg.g.param_count);
  w.upload(ck.params);
  Executor ex(eg.g, *be);
  ex.bind_params(w.graph_params(), nullptr);
  const std::vector<int32_t> no_targets(static_cast<size_t>(eg.T), kIgnoreTarget);
  ex.set_input(eg.targets, no_targets.data(), no_targets.size() * 4);
  for (const auto& [source, target] : val_pairs(data, 4)) {
    dec->encode(source);
    std::vector<int32_t> row(static_cast<size_t>(eg.T), static_cast<int32_t>(v.pad()));
    std::copy(source.begin(), source.end(), row.begin());
    const size_t start = source.size();
    row[start] = static_cast<int32_t>(v.bos());
    for (int t = 0; t < c.seq_len; ++t) {
      const std::vector<float> cached = dec->step(row[start + t], t);
      ex.set_input(eg.tokens, row.data(), row.size() * 4);
      ex.forward();
      const std::vector<float> all = ex.fetch_f32(eg.logits);
      const size_t V = cached.size();
      for (size_t i = 0; i < V; ++i) ASSERT_NEAR(cached[i], all[(start + t) * V + i], 1e-4) << "step " << t;
      if (t + 1 < c.seq_len) row[start + t + 1] = argmax(cached);
    }
  }
}

TEST(GptPairs, ResumeIsBitExact) {
  TempDir d;
  const std::string data = prepare_pairs(d, "reverse", 800);
  const int steps = 24;
  TrainOptions o;
  o.quiet = true;
  train(gpt_pairs_config(data, d / "full", steps), o);
  o.stop_after = 13;
  ASSERT_TRUE(train(gpt_pairs_config(data, d / "resumed", steps), o).interrupted);
  o.stop_after = 0;
  o.resume = true;
  train(gpt_pairs_config(data, d / "resumed", steps), o);
  auto a = read_metrics(d / "full"), b = read_metrics(d / "resumed");
  ASSERT_EQ(a.size(), static_cast<size_t>(steps));
  ASSERT_EQ(b.size(), a.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i]["loss"].get<double>(), b[i]["loss"].get<double>()) << i + 1;
  EXPECT_EQ(read_bytes(d / "full/latest/model.safetensors"), read_bytes(d / "resumed/latest/model.safetensors"));
  EXPECT_EQ(read_bytes(d / "full/latest/optim.safetensors"), read_bytes(d / "resumed/latest/optim.safetensors"));
}

}  // namespace
}  // namespace loom::test
