// config_test.cpp: the config table: parsing, overrides, validation, round trip.
#include <gtest/gtest.h>

#include "core/check.h"
#include "core/rng.h"
#include "engine/optim/schedule.h"
#include "launch/run/config.h"

namespace loom {
namespace {

const char* kBase = R"(
[model]
kind = "gpt"
n_layer = 3
n_head = 2
d_model = 64
seq_len = 16
[data]
path = "somewhere"
[train]
steps = 10
batch_size = 4
[optim]
lr = 0.01
)";

TEST(Config, ParsesAndOverrides) {
  Config c = parse_config_text(kBase, "a.toml", {{"train.steps", "77"}, {"optim.lr", "2e-3"}, {"device", "cpu"}});
  EXPECT_EQ(c.model.n_layer, 3);
  EXPECT_EQ(c.train.steps, 77);
  EXPECT_DOUBLE_EQ(c.optim.lr, 2e-3);
  EXPECT_EQ(c.device, "cpu");
  EXPECT_EQ(c.data.path, "somewhere");
  EXPECT_FALSE(c.train.deterministic);
  EXPECT_TRUE(parse_config_text(kBase, "a.toml", {{"train.deterministic", "true"}}).train.deterministic);
}

TEST(Config, RoundTripsThroughToml) {
  Rng r(5);
  Config c = parse_config_text(kBase, "a.toml",
                               {{"optim.lr", std::to_string(0.001 + r.uniform_double() * 0.01)},
                                {"train.seed", std::to_string(r.below(100000))}});
  Config d = parse_config_text(config_to_toml(c), "b.toml", {});
  EXPECT_EQ(config_to_toml(c), config_to_toml(d));
  EXPECT_EQ(c.optim.lr, d.optim.lr);
  EXPECT_EQ(c.train.seed, d.train.seed);
}

void expect_error(const std::string& text, const Overrides& ov, const std::string& needle) {
  try {
    parse_config_text(text, "bad.toml", ov);
    ADD_FAILURE() << "accepted; expected an error with " << needle;
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Config, RejectsBadInput) {
  expect_error(std::string(kBase) + "\n[extra]\nthing = 1\n", {}, "unknown key 'extra.thing'");
  expect_error(kBase, {{"model.n_layer", "four"}}, "--model.n_layer: expected an integer");
  expect_error(kBase, {{"model.n_layer", "3.5"}}, "--model.n_layer");
  expect_error(kBase, {{"optim.lr", "-1"}}, "optim.lr");
  expect_error(kBase, {{"model.d_model", "65"}}, "model.d_model");
  expect_error(kBase, {{"device", "tpu"}}, "device");
  expect_error(kBase, {{"nope.key", "1"}}, "--nope.key: unknown config key");
  expect_error(kBase, {{"train.deterministic", "yes"}}, "--train.deterministic");
  std::string s = kBase;
  s.replace(s.find("n_layer = 3"), 11, "n_layer = \"3\"");
  expect_error(s, {}, "bad.toml: model.n_layer: expected an integer");
  std::string missing = kBase;
  missing.replace(missing.find("steps = 10"), 10, "");
  expect_error(missing, {}, "missing required key 'train.steps'");
  expect_error("[model\nkind=", {}, "bad.toml:");
}

// train.length_buckets is a pair kind's key: written in its resolved config, range-checked, and
// not part of an LM kind's.
TEST(Config, LengthBucketsBelongToPairKinds) {
  std::string pairs = kBase;
  const std::string lm = "kind = \"gpt\"\nn_layer = 3";
  pairs.replace(pairs.find(lm), lm.size(), "kind = \"encdec\"\nn_enc_layer = 2\nn_dec_layer = 1\nsrc_len = 12");
  const Config c = parse_config_text(pairs, "pairs.toml", {});
  EXPECT_EQ(c.train.length_buckets, 4);
  EXPECT_NE(config_to_toml(c).find("length_buckets = 4"), std::string::npos) << config_to_toml(c);
  EXPECT_EQ(parse_config_text(pairs, "pairs.toml", {{"train.length_buckets", "1"}}).train.length_buckets, 1);
  EXPECT_EQ(config_to_toml(parse_config_text(kBase, "a.toml", {})).find("length_buckets"), std::string::npos);
  expect_error(pairs, {{"train.length_buckets", "0"}}, "bad.toml: train.length_buckets: must be in [1, 64], got 0");
  expect_error(pairs, {{"train.length_buckets", "65"}}, "train.length_buckets: must be in [1, 64], got 65");
}

TEST(Schedule, WarmupThenCosine) {
  const double lr = 1e-3, mn = 1e-4;
  EXPECT_NEAR(lr_at(0, 100, lr, mn, 10), lr / 10, 1e-12);
  EXPECT_NEAR(lr_at(9, 100, lr, mn, 10), lr, 1e-12);
  EXPECT_NEAR(lr_at(10, 100, lr, mn, 10), lr, 1e-12);
  EXPECT_NEAR(lr_at(99, 100, lr, mn, 10), mn, 1e-12);
  double prev = lr;
  for (int s = 10; s < 100; ++s) {
    const double v = lr_at(s, 100, lr, mn, 10);
    EXPECT_LE(v, prev + 1e-15);
    prev = v;
  }
}

}  // namespace
}  // namespace loom
