// finetune.cpp: see finetune.h.
#include "launch/run/finetune.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/check.h"
#include "engine/data/shard.h"
#include "launch/run/checkpoint.h"

namespace fs = std::filesystem;

namespace loom {

TrainResult finetune(const FinetuneOptions& o, const TrainOptions& topt) {
  CheckpointData base = load_checkpoint(o.checkpoint, false);
  const ModelKind& kind = model_kind(base.model.kind);
  LOOM_USER_CHECK(kind.supports_lora(), base.dir, ": fine-tuning needs a model kind with adapters (gpt), this one is ",
                  base.model.kind);
  LOOM_USER_CHECK(base.model.lora_rank == 0, base.dir,
                  ": already holds LoRA adapters; fine-tune its merged checkpoint (loom finetune --merge) instead");
  // The base run's settings (when it has them), then the model of the checkpoint, then the
  // command line.
  Config cfg = parse_config_text(base.config_toml, base.config_toml.empty() ? "" : base.dir + "/config.toml",
                                 o.overrides);
  ModelConfig m = base.model;
  m.lora_rank = cfg.model.lora_rank;
  m.lora_alpha = cfg.model.lora_alpha;
  m.lora_targets = cfg.model.lora_targets;
  cfg.model = m;
  // Never into the base run's folder unless asked.
  const bool dir_given = std::any_of(o.overrides.begin(), o.overrides.end(),
                                     [](const auto& kv) { return kv.first == "log.run_dir"; });
  if (!dir_given) cfg.log.run_dir = "runs/finetune";
  const fs::path run_dir(cfg.log.run_dir);
  TrainOptions t = topt;
  CheckpointData start;
  if (o.resume) {
    t.resume = true;
  } else {
    // The start: the base weights by name, new parameters (the adapters) from the seeded init,
    // zero moments; the run loop takes it as a fresh run's state, under its run-folder lock.
    std::vector<float> params = init_params(cfg.model, static_cast<uint64_t>(cfg.train.seed));
    const auto base_layout = param_layout(base.model);
    for (const auto& p : param_layout(cfg.model)) {
      auto it = std::find_if(base_layout.begin(), base_layout.end(), [&](const ParamInfo& b) { return b.name == p.name; });
      if (it == base_layout.end()) continue;  // an adapter
      std::memcpy(params.data() + p.offset, base.params.data() + it->offset, static_cast<size_t>(p.count()) * 4);
    }
    const ModelGraph mg = build_model(cfg.model, GraphMode::Eval, 1, 1, DType::F32);
    const std::vector<float> zeros(static_cast<size_t>(mg.g.trainable_prefix()), 0.0f);
    start.model = cfg.model;
    start.tokenizer = base.tokenizer;
    start.params = std::move(params);
    start.m = zeros;
    start.v = zeros;
    start.dir = base.dir;
    // The loader position of a fresh run with this seed (as the trainer would start).
    {
      const DataFolder data = open_data_folder(cfg.data.path);
      const Shard train_split(data.train_files);
      start.progress.loader_rng =
          WindowLoader(train_split, cfg.model.seq_len, static_cast<uint64_t>(cfg.train.seed) + 1).state();
    }
    t.start = &start;
    if (!topt.quiet)
      std::printf("finetune: %s from %s (%lld of %lld parameters trained)\n",
                  cfg.model.lora_rank ? ("LoRA rank " + std::to_string(cfg.model.lora_rank) + " on " +
                                         cfg.model.lora_targets)
                                            .c_str()
                                      : "all weights",
                  base.dir.c_str(), static_cast<long long>(mg.g.trainable_prefix()),
                  static_cast<long long>(mg.g.param_count));
  }
  TrainResult r = train(cfg, t);
  if (o.merge && !r.interrupted && cfg.model.lora_rank > 0) {
    CheckpointData done = load_checkpoint(run_dir.string(), false);
    ModelConfig merged_model;
    const std::vector<float> merged = kind.merge_lora(done.model, done.params, &merged_model);
    Config mc = cfg;
    mc.model = merged_model;
    const std::vector<float> zeros(merged.size(), 0.0f);
    TrainProgress p;
    const std::string dir =
        save_checkpoint((run_dir / "merged").string(), mc, done.tokenizer, merged, zeros, zeros, p, 1);
    if (!topt.quiet) std::printf("merged: adapters folded into the weights -> %s\n", dir.c_str());
  }
  return r;
}

}  // namespace loom
