// finetune_e2e_test.cpp: LoRA and full fine-tuning of a GPT checkpoint: zero-initialised
// adapters leave the model's outputs unchanged, a LoRA fine-tune lowers the validation loss
// on new data while every base weight stays bit-identical, and merging folds the adapters
// into weights that give the same outputs.
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <cstring>

#include "launch/run/checkpoint.h"
#include "launch/run/evaluate.h"
#include "launch/run/finetune.h"
#include "launch/run/gpt2_io.h"
#include "engine/io/safetensors.h"
#include "launch/run/trainer.h"
#include "tests/support/helpers.h"
#include "tests/support/tiny_models.h"

namespace loom::test {
namespace {

std::vector<float> logits_of(const ModelConfig& c, const std::vector<float>& params, const std::vector<int32_t>& toks) {
  return eval_logits(c, params, toks, *make_cpu_backend());
}

// The LoRA model's parameters: the base weights by name, the adapters from init (B = 0).
std::vector<float> with_adapters(const ModelConfig& base_cfg, const std::vector<float>& base, const ModelConfig& lora) {
  std::vector<float> p = init_params(lora, 3);
  const auto bl = param_layout(base_cfg);
  for (const auto& q : param_layout(lora))
    for (const auto& b : bl)
      if (b.name == q.name) std::memcpy(p.data() + q.offset, base.data() + b.offset, q.count() * 4);
  return p;
}

TEST(Finetune, ZeroInitialisedAdaptersLeaveOutputsUnchanged) {
  const ModelConfig c{.n_layer = 2, .n_head = 2, .d_model = 32, .seq_len = 16, .vocab = 41};
  const std::vector<float> base = init_params(c, 11);
  Rng rng(2);
  std::vector<int32_t> toks(c.seq_len);
  for (auto& t : toks) t = static_cast<int32_t>(rng.below(c.vocab));
  const auto ref = logits_of(c, base, toks);
  for (const char* targets : {"attn", "mlp", "attn,mlp"}) {
    SCOPED_TRACE(targets);
    ModelConfig l = c;
    l.lora_rank = 4;
    l.lora_alpha = 8;
    l.lora_targets = targets;
    std::vector<float> p = with_adapters(c, base, l);
    EXPECT_EQ(logits_of(l, p, toks), ref) << "B = 0 must add exactly nothing";
    // The check can fail: a non-zero B changes the outputs.
    const auto layout = param_layout(l);
    for (const auto& q : layout)
      if (q.name.find("lora_B") != std::string::npos) p[q.offset] = 0.5f;
    EXPECT_NE(logits_of(l, p, toks), ref);
    // Trainable parameters (the adapters) are a prefix of the flat buffer.
    const ModelGraph g = build_model(l, GraphMode::Eval, 1, 1, DType::F32);
    int64_t adapters = 0;
    for (const auto& q : layout) adapters += q.name.find("lora_") != std::string::npos ? q.count() : 0;
    EXPECT_EQ(g.g.trainable_prefix(), adapters);
  }
}

std::map<std::string, std::vector<unsigned char>> tensors(const std::string& path) {
  std::map<std::string, std::vector<unsigned char>> r;
  for (const auto& t : read_safetensors(path).tensors) r[t.name] = t.data;
  return r;
}

TEST(Finetune, LoraLowersValLossBaseStaysBitIdenticalMergeAgrees) {
  TempDir d;
  // Base: a tiny GPT on one corpus; fine-tune data: the same kind of text in capitals, bytes
  // the base model has never seen, so there is something for the adapters to learn.
  const std::string base_data = prepare_tiny_data(d.str(), 120000, 11);
  TempDir d2;
  std::string upper = make_corpus(120000, 99);
  for (char& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  std::ofstream(d2 / "corpus.txt") << upper;
  const std::string ft_data = d2 / "data";
  prepare_corpus(d2 / "corpus.txt", "byte", ft_data, 0.1);
  TrainOptions q;
  q.quiet = true;
  train(parse_config_text(tiny_config(base_data, d / "base", 20), "tiny.toml", {}), q);
  const CheckpointData base = load_checkpoint(d / "base", false);
  const double before = evaluate(base.model, ft_data, base.params, base.counts, "cpu", 8, 4, 4242);

  FinetuneOptions o;
  o.checkpoint = d / "base";
  o.merge = true;
  o.overrides = {{"data.path", ft_data},      {"log.run_dir", d / "ft"},   {"lora.rank", "4"},
                 {"lora.alpha", "8"},         {"lora.targets", "attn,mlp"}, {"train.steps", "30"},
                 {"optim.lr", "1e-2"},        {"optim.warmup_steps", "2"}};
  finetune(o, q);
  const CheckpointData ft = load_checkpoint(d / "ft", false);
  ASSERT_EQ(ft.model.lora_rank, 4);
  const double after = evaluate(ft.model, ft_data, ft.params, ft.counts, "cpu", 8, 4, 4242);
  EXPECT_LT(after, before - 0.05) << "LoRA fine-tune did not lower the validation loss: " << before << " -> " << after;

  // Every base tensor is byte-identical; every adapter B moved away from zero.
  const auto b = tensors(d / "base/latest/model.safetensors"), f = tensors(d / "ft/latest/model.safetensors");
  int adapters = 0;
  for (const auto& [name, data] : f) {
    if (name.find("lora_") != std::string::npos) {
      ++adapters;
      if (name.find("lora_B") != std::string::npos) {
        std::vector<float> v(data.size() / 4);
        std::memcpy(v.data(), data.data(), data.size());
        double mx = 0;
        for (float x : v) mx = std::max(mx, static_cast<double>(std::fabs(x)));
        EXPECT_GT(mx, 0) << name << " did not train";
      }
      continue;
    }
    ASSERT_TRUE(b.count(name)) << name;
    EXPECT_EQ(b.at(name), data) << "base weight " << name << " changed";
  }
  EXPECT_EQ(adapters, 2 * 4 * 2);  // A and B, 4 projections, 2 layers

  // The merged checkpoint is a plain GPT with the same outputs.
  const CheckpointData merged = load_checkpoint(d / "ft/merged", false);
  EXPECT_EQ(merged.model.lora_rank, 0);
  Rng rng(5);
  std::vector<int32_t> toks(ft.model.seq_len);
  for (auto& t : toks) t = static_cast<int32_t>(rng.below(ft.model.vocab));
  const auto lo = logits_of(ft.model, ft.params, toks), mo = logits_of(merged.model, merged.params, toks);
  ASSERT_EQ(lo.size(), mo.size());
  double worst = 0;
  for (size_t i = 0; i < lo.size(); ++i) worst = std::max(worst, static_cast<double>(std::fabs(lo[i] - mo[i])));
  EXPECT_LT(worst, 1e-3);
  // Exporting the LoRA checkpoint to GPT-2 form folds the adapters in the same way.
  export_gpt2(d / "ft", d / "ft.safetensors");
  import_gpt2(d / "ft.safetensors", d / "reimported", {});
  EXPECT_EQ(load_checkpoint(d / "reimported", false).params, merged.params);
}

// lora.rank 0: full fine-tuning from the checkpoint (every weight trains).
TEST(Finetune, FullFinetuneTrainsEveryWeight) {
  TempDir d;
  const std::string data = prepare_tiny_data(d.str(), 100000, 5);
  TrainOptions q;
  q.quiet = true;
  train(parse_config_text(tiny_config(data, d / "base", 10), "tiny.toml", {}), q);
  FinetuneOptions o;
  o.checkpoint = d / "base";
  o.overrides = {{"log.run_dir", d / "ft"}, {"train.steps", "5"}};
  finetune(o, q);
  const auto b = tensors(d / "base/latest/model.safetensors"), f = tensors(d / "ft/latest/model.safetensors");
  ASSERT_EQ(b.size(), f.size());
  for (const auto& [name, data] : f) EXPECT_NE(b.at(name), data) << name << " did not change";
}

}  // namespace
}  // namespace loom::test
