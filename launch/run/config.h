// config.h: the run configuration. One table (config.cpp) lists every key with its type,
// whether it is required and its help; that table drives TOML parsing, command-line
// overrides (--section.key value), validation and the resolved config.toml written into
// the run folder. Bad keys and values are UserErrors naming the file or flag and the key.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "models/model.h"

namespace loom {

struct Config {
  std::string device = "auto";  // auto | cpu | cuda
  ModelConfig model;            // vocab comes from the data folder
  struct Data {
    std::string path = "data/kjv";
  } data;
  struct Train {
    int64_t steps = 2000;
    int64_t batch_size = 16;
    int64_t grad_accum = 1;
    int64_t seed = 1337;
    int64_t eval_every = 200;
    int64_t eval_steps = 20;
    int64_t max_bad_steps = 5;  // abort after this many non-finite steps in a row
    int64_t state_reset = 0;    // recurrent kinds: also zero the carried state every N steps (0: per epoch only)
    std::vector<std::string> eval_tasks;  // multiple-choice task files (launch/run/mc_eval.h)
    int64_t eval_tasks_every = 0;         // 0: with each validation
    std::string recompute = "none";  // none | attention | mlp | block (engine/graph/recompute.h)
    bool deterministic = false;      // GPU float sums in a fixed order (Backend::set_deterministic)
    // A fresh run's start: a trained checkpoint (step folder, run folder or latest) whose
    // weights the kind takes where it can (ModelKind::warm_start); "" for the seeded init.
    std::string init_from;
    // Pair kinds: the source and target lengths a batch is padded to are the nearest of
    // length_buckets lengths each (ceil(L j / k), j = 1..k), one training graph per pair of
    // them; 1: every batch padded to model.src_len and model.seq_len.
    int64_t length_buckets = 4;
  } train;
  struct Optim {
    double lr = 1e-3;
    double min_lr = 1e-4;
    int64_t warmup_steps = 100;
    double weight_decay = 0.1;
    double beta1 = 0.9;
    double beta2 = 0.95;
    double eps = 1e-8;
    double grad_clip = 1.0;
  } optim;
  struct Checkpoint {
    int64_t every = 500;
    int64_t keep = 3;  // newest checkpoints kept (0 = all)
  } checkpoint;
  struct Log {
    std::string run_dir = "runs/default";
    int64_t every = 10;
    bool tensorboard = true;  // <run_dir>/tb/events.out.tfevents.* (launch/run/tensorboard.h)
  } log;
  struct Dist {
    int64_t zero = 0;
  } dist;
};

using Overrides = std::vector<std::pair<std::string, std::string>>;  // key, value text

// Reads a TOML file (path empty: defaults only, all required keys must come from overrides),
// applies the overrides and validates. `origin` of an override names it as "--key".
Config load_config(const std::string& path, const Overrides& overrides);
// Parses the text of a config (e.g. the one stored in a checkpoint). `name` is used in errors.
Config parse_config_text(const std::string& text, const std::string& name, const Overrides& overrides);
// Every key that applies to the config's model kind, as TOML, in table order; floats in their
// shortest form that reads back exactly.
std::string config_to_toml(const Config& c);
// Names of all keys ("model.n_layer", ...), for help text.
std::vector<std::string> config_keys();
// train.recompute of a validated config.
Recompute train_recompute(const Config& c);

// With data.document_mask on, fills in data.eot_id from the data's end-of-text id
// (DataFolder::eot_id; the tokenizer spec names it in errors) when the config leaves it at -1, and checks it against m.vocab (set before): a
// UserError naming data.eot_id when no id is known or it is outside the vocabulary.
void resolve_eot_id(ModelConfig& m, std::optional<uint32_t> data_eot_id, const std::string& tokenizer_spec);

}  // namespace loom
