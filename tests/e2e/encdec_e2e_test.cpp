// encdec_e2e_test.cpp: the encoder-decoder kind on pairs end to end on CPU: synthetic tasks
// (sorting and reversal, pairs written as TSV and prepared by `loom prepare --pairs`) are
// learned to exact match by greedy decoding, the cached decoder (encoder once, KV cache) decodes
// exactly what the full Eval graph decodes, training resumes bit-exactly, and bad
// configs are one-line errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "engine/backend/device.h"
#include "engine/data/pairs.h"
#include "engine/graph/executor.h"
#include "engine/optim/weights.h"
#include "launch/run/checkpoint.h"
#include "launch/run/trainer.h"
#include "tests/support/helpers.h"
#include "tests/support/seeded_test.h"
#include "tests/support/seq2seq_pairs.h"

namespace loom::test {
namespace {

Config config_of(const std::string& data, const std::string& run, int steps, const std::string& extra = "") {
  return parse_config_text(encdec_config(data, run, steps, extra), "encdec.toml", {});
}

// A task and the steps this model takes to learn it: reversal needs the positions (sorting does
// not), so the model is given learned ones and longer.
class Synthetic : public ::testing::TestWithParam<std::pair<std::string, int>> {};

TEST_P(Synthetic, LearnedToExactMatch) {
  const auto& [task, steps] = GetParam();
  TempDir d;
  const std::string data = prepare_pairs(d, task);
  const TrainResult r = train_quietly(config_of(data, d / "run", steps, "positions = \"learned\"\n"));
  EXPECT_LT(r.last_val_loss, 0.05);
  const double em = exact_match(load(d / "run", data), examples(data, "val", 200));
  EXPECT_GE(em, 0.99) << task << ": exact match " << em;
}

INSTANTIATE_TEST_SUITE_P(EncDec, Synthetic,
                         ::testing::Values(std::pair<std::string, int>{"sort", 700},
                                           std::pair<std::string, int>{"reverse", 1000}),
                         [](const auto& info) { return info.param.first; });

// The cached decoder (encoder once, cross-attention keys/values kept, self-attention KV cache)
// against the Eval graph over the whole decoder input each step: the same logits, so the same
// greedy tokens, for untied embeddings with sinusoidal and with learned positions.
TEST(EncDec, CachedDecodingEqualsFullForward) {
  TempDir d;
  const std::string data = prepare_pairs(d, "reverse", 800);
  for (const std::string extra : {"tie_embeddings = false\n", "positions = \"learned\"\n"}) {
    SCOPED_TRACE(extra);
    const std::string run = d / ("run" + std::to_string(extra.size()));
    train_quietly(config_of(data, run, 30, extra));
    expect_cached_decoding_equals_full_forward(load(run, data), examples(data, "val", 6));
  }
}

// Beam search forks the decoder: a state saved after a prefix, restored after other tokens were
// fed, continues exactly as if nothing had come between.
TEST(EncDec, SavedDecoderStateContinuesTheSame) {
  TempDir d;
  const std::string data = prepare_pairs(d, "sort", 800);
  train_quietly(config_of(data, d / "run", 20));
  const Trained m = load(d / "run", data);
  auto be = make_cpu_backend();
  auto dec = model_kind("encdec").seq2seq_decoder(m.ck.model, ModelWeights{m.ck.params, m.ck.counts}, *be);
  expect_saved_state_continues(*dec, examples(data, "val", 1)[0], static_cast<int32_t>(m.vocab.bos()));
}

TEST(EncDec, ResumeIsBitExact) {
  TempDir d;
  const std::string data = prepare_pairs(d, "reverse", 800);
  expect_resume_bit_exact(d, 24, [&](const std::string& run) { return config_of(data, run, 24); });
}

// Span corruption where the text itself says what is missing: every line walks one fixed cycle
// through 16 letters, so a span's first letter follows from the letter before the gap. The
// decoder's input announces no span start; only a pointer from sentinel k in the target to
// sentinel k in the source, and from there to its neighbour, predicts it (two hops of
// attention; docs/models.md on why the KJV's span starts are slow to get them). The pointer must
// form within kSteps at lr 1e-3 (at 3e-3 it gets 55-62% of the span starts), and `loom
// eval`'s report must show it: span starts near the bigram of the left neighbour, far below the
// unigram. A random cycle and random lines each run (the seed is printed on failure).
class EncDecChain : public SeededTest {
 protected:
  static constexpr int kSteps = 800;  // of 32 pairs, at lr 1e-3
};

TEST_F(EncDecChain, SpanStartsAreReadFromTheWordsAroundTheGap) {
  SEED_TRACE();
  const TempDir& d = dir_;
  Rng& rng = rng_;
  std::string order = "abcdefghijklmnop";
  for (size_t i = order.size() - 1; i > 0; --i) std::swap(order[i], order[rng.below(i + 1)]);
  std::string next(128, 0);
  for (size_t i = 0; i < order.size(); ++i) next[static_cast<unsigned char>(order[i])] = order[(i + 1) % order.size()];
  std::string text;
  for (int n = 0; n < 3000; ++n) {
    char c = order[rng.below(order.size())];
    for (uint64_t i = 0, len = 12 + rng.below(13); i < len; ++i, c = next[static_cast<unsigned char>(c)]) text += c;
    text += '\n';
  }
  write_bytes(d / "chain.txt", text);
  const std::string spans = d / "spans";
  RunResult r = run_loom({"prepare", "--corpus", d / "chain.txt", "--task", "span-corruption", "--max-len", "24",
                          "--val-fraction", "0.1", "--out", spans});
  ASSERT_EQ(r.rc, 0) << r.err;
  std::ofstream(d / "run.toml") << pair_config(kEncDecModel,
                                               "lr = 1e-3\nmin_lr = 1e-4\nwarmup_steps = 20\nweight_decay = 0.0\n",
                                               spans, d / "run", kSteps, "positions = \"learned\"\n");
  r = run_loom({"train", "--config", d / "run.toml", "--model.src_len", "25"});
  ASSERT_EQ(r.rc, 0) << r.err;
  r = run_loom({"eval", "--checkpoint", d / "run", "--json", d / "eval.json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto k = nlohmann::json::parse(read_bytes(d / "eval.json"))["by_kind"]["span start"];
  const double loss = k["loss"].get<double>(), acc = k["accuracy"].get<double>();
  SCOPED_TRACE(r.out);
  EXPECT_GT(k["unigram_loss"].get<double>(), 2.5);  // 16 letters: near log 16
  EXPECT_LT(loss, k["bigram_loss"].get<double>() + 0.3);
  EXPECT_GE(acc, 0.85);
}

TEST(EncDec, BadConfigsAreOneLineErrors) {
  TempDir d;
  const std::string data = prepare_pairs(d, "sort", 800);
  auto run = [&](const std::string& text) { return train_text(d, text); };
  auto with = [&](const std::string& from, const std::string& to) { return replaced(encdec_config(data, d / "run", 2), from, to); };
  expect_user_error(run(with("n_enc_layer = 2", "n_enc_layer = 0")), "model.n_enc_layer");
  expect_user_error(run(with("src_len = 8", "src_len = 2000000")), "model.src_len");
  expect_user_error(run(with("src_len = 8", "src_len = 4")), "model.src_len");  // shorter than the sources
  expect_user_error(run(encdec_config(data, d / "run", 2, "positions = \"rotary\"\n")), "model.positions");
  expect_user_error(run(with(data, d / "missing")), "missing");
  // An LM kind's token folder for a pair kind, and the pair folder for an LM kind.
  const std::string tokens = prepare_tiny_data(d.str());
  expect_user_error(run(with(data, tokens)), "not a folder of sequence pairs");
  expect_user_error(run(tiny_config(data, d / "run2")), "a folder of sequence pairs");
}

}  // namespace
}  // namespace loom::test
