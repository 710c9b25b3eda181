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
