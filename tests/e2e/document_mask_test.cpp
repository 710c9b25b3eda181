// document_mask_test.cpp: data.document_mask end to end. A GPT's logits inside one document do
// not move when the tokens of the other documents in its window change (and do without the
// mask, so the check can fail); training with the mask on a stream with separators gives other
// losses than without; the end-of-text id comes from the config or the tokenizer, and its
// absence, or a kind without attention, is a one-line error naming the key.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "launch/run/checkpoint.h"
#include "launch/run/config.h"
#include "launch/run/trainer.h"
#include "tests/support/helpers.h"
#include "tests/support/tiny_models.h"

namespace loom::test {
namespace {

// Three documents in a window of 24, each started by the end-of-text token 0: [0, 8) (its
// first token an ordinary one), [8, 16) and [16, 24).
constexpr int kEot = 0, kT = 24;
std::vector<int32_t> three_documents(uint64_t seed) {
  Rng r(seed);
  std::vector<int32_t> t(kT);
  for (auto& x : t) x = static_cast<int32_t>(1 + r.below(28));
  t[8] = t[16] = kEot;
  return t;
}

// Largest |a - b| over the logits of positions [p0, p1) (vocab V each).
double worst_in(const std::vector<float>& a, const std::vector<float>& b, int p0, int p1, int V) {
  std::vector<float> part(a.begin() + p0 * V, a.begin() + p1 * V);
  return worst_diff(part, b, static_cast<size_t>(p0) * V);
}

TEST(DocumentMask, LogitsIgnoreOtherDocuments) {
  ModelConfig c{.n_layer = 2, .n_head = 2, .d_model = 16, .seq_len = kT, .vocab = 29};
  c.document_mask = true;
  c.eot_id = kEot;
  ModelConfig plain = c;
  plain.document_mask = false;
  auto be = make_cpu_backend();
  const std::vector<float> params = init_params(c, 3);
  const std::vector<int32_t> a = three_documents(5);
  std::vector<int32_t> b = a;
  for (int p : {0, 3, 7, 17, 20, 23}) b[p] = (b[p] % 28) + 1;  // other tokens of documents 1 and 3, never eot
  ASSERT_NE(a, b);

  const std::vector<float> la = eval_logits(c, params, a, *be), lb = eval_logits(c, params, b, *be);
  EXPECT_LT(worst_in(lb, la, 8, 16, c.vocab), 1e-6) << "the middle document saw the others";
  EXPECT_GT(worst_in(lb, la, 17, kT, c.vocab), 1e-3) << "changed tokens changed nothing in their own document";
  // Without the mask the same change reaches the middle document: the check above can fail.
  const std::vector<float> pa = eval_logits(plain, params, a, *be), pb = eval_logits(plain, params, b, *be);
  EXPECT_GT(worst_in(pb, pa, 8, 16, c.vocab), 1e-3);
  // The first document, before any end-of-text, is the same with and without the mask.
  EXPECT_LT(worst_in(la, pa, 0, 8, c.vocab), 1e-6);
}

// A tiny run on text whose newlines separate documents (data.eot_id = 10, the byte '\n').
Config tiny(const std::string& data, const std::string& run, const Overrides& o) {
  return parse_config_text(tiny_config(data, run, 10), "tiny.toml", o);
}

TEST(DocumentMask, TrainingDiffersFromUnmasked) {
  TempDir d;
  const std::string data = prepare_tiny_data(d.str());
  TrainOptions o;
  o.quiet = true;
  train(tiny(data, d / "plain", {}), o);
  train(tiny(data, d / "masked", {{"data.document_mask", "true"}, {"data.eot_id", "10"}}), o);
  const auto plain = read_metrics(d / "plain"), masked = read_metrics(d / "masked");
  ASSERT_EQ(plain.size(), masked.size());
  ASSERT_FALSE(masked.empty());
  for (size_t i = 0; i < masked.size(); ++i) {
    const double lp = plain[i]["loss"], lm = masked[i]["loss"];
    EXPECT_TRUE(std::isfinite(lm)) << "step " << i + 1;
    EXPECT_NE(lp, lm) << "step " << i + 1 << ": the mask changed nothing";
  }
  EXPECT_TRUE(masked.back().contains("val_loss"));
  // The resolved config and the checkpoint keep the mask, so `loom eval` applies it too.
  EXPECT_NE(read_bytes(d / "masked/config.toml").find("document_mask = true"), std::string::npos);
  const CheckpointData ck = load_checkpoint(d / "masked", false);
  EXPECT_TRUE(ck.model.document_mask);
  EXPECT_EQ(ck.model.eot_id, 10);
  EXPECT_FALSE(load_checkpoint(d / "plain", false).model.document_mask);
}

TEST(DocumentMask, EndOfTextIdFromTheTokenizer) {
  ModelConfig m;
  m.vocab = 50257;
  m.document_mask = true;
  resolve_eot_id(m, 50256u, "gpt2");
  EXPECT_EQ(m.eot_id, 50256);
  m.eot_id = 7;  // the config's own id wins
  resolve_eot_id(m, 50256u, "gpt2");
  EXPECT_EQ(m.eot_id, 7);
  ModelConfig off;
  resolve_eot_id(off, std::nullopt, "byte");  // no mask: nothing to resolve, no error
  EXPECT_EQ(off.eot_id, -1);
}

TEST(DocumentMask, BadConfigsNameTheKey) {
  TempDir d;
  const std::string data = prepare_tiny_data(d.str(), 20000);
  TrainOptions o;
  o.quiet = true;
  // The byte tokenizer has no end-of-text token.
  expect_user_error([&] { train(tiny(data, d / "a", {{"data.document_mask", "true"}}), o); },
                    {"data.eot_id", "byte", "set data.eot_id"}, "data.eot_id: ");
  expect_user_error([&] { train(tiny(data, d / "b", {{"data.document_mask", "true"}, {"data.eot_id", "256"}}), o); },
                    {"data.eot_id", "256", "vocabulary of 256"}, "data.eot_id: ");
  expect_user_error([&] { tiny(data, d / "c", {{"data.document_mask", "yes"}}); }, {"--data.document_mask", "true or false"});
  expect_user_error([&] { tiny(data, d / "c", {{"data.eot_id", "-2"}}); }, {"data.eot_id"});
  expect_user_error(
      [&] {
        parse_config_text("[model]\nkind = \"lstm\"\nn_layer = 1\nd_model = 8\nseq_len = 8\n[optim]\nlr = 1e-3\n"
                          "[data]\npath = \"x\"\ndocument_mask = true\n[train]\nsteps = 1\nbatch_size = 1\n",
                          "lstm.toml", {});
      },
      {"lstm.toml", "data.document_mask", "lstm"});
}

}  // namespace
}  // namespace loom::test
