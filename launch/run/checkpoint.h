// checkpoint.h: crash-safe checkpoints of a run.
//
//   <run_dir>/checkpoints/step_00000500/
//     model.safetensors   weights by name (F32), metadata: model shape, tokenizer, step
//     optim.safetensors   AdamW moments "m", "v" over the flat buffer (F32)
//     state.json          step, loader RNG state, counters
//     config.toml         the resolved config of the run
//   <run_dir>/latest -> checkpoints/step_00000500
// Written into a temporary folder, every file fsynced, the folder renamed into place, and
// only then `latest` moved: a crash at any point leaves the previous checkpoint whole.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/graph/graph.h"
#include "engine/io/safetensors.h"
#include "launch/run/config.h"
#include "models/model.h"

namespace loom {

struct TrainProgress {
  int64_t step = 0;                    // optimizer steps completed
  std::array<uint64_t, 4> loader_rng{};
  int64_t tokens_seen = 0;
  int64_t skipped_steps = 0;
};

struct CheckpointData {
  ModelConfig model;
  std::string tokenizer;
  std::string config_toml;
  std::vector<float> params;           // flat, in the layout of the model's graphs
  std::vector<float> m, v;             // empty when not loaded / not present
  std::vector<float> rnn_state;        // recurrent kinds: the carried hidden state (with optim)
  StFile counts;                       // counting kinds: the count tables of model.safetensors
  TrainProgress progress;
  std::string dir;                     // the resolved step folder
};

// Writes a checkpoint of step `p.step` under run_dir, moves `latest`, prunes to `keep`
// newest (0 = keep all). Returns the step folder.
// Beyond the flat buffers: the recurrent state carried between batches (optim.safetensors,
// "rnn_state"), and for counting kinds the count tables that replace the weights.
struct CheckpointExtra {
  std::vector<float> rnn_state;
  std::vector<StTensor> counts;
};
std::string save_checkpoint(const std::string& run_dir, const Config& cfg, const std::string& tokenizer,
                            const std::vector<float>& params, const std::vector<float>& m,
                            const std::vector<float>& v, const TrainProgress& p, int64_t keep,
                            const CheckpointExtra& extra = {});

// Resolves a checkpoint path: a step folder, a run folder (uses its `latest`) or `latest`.
// UserError if nothing loadable is there.
std::string resolve_checkpoint(const std::string& path);
// Loads weights (always) and optimizer state (with_optim). Validates names and shapes against
// the model described in the checkpoint; every problem is a UserError naming the file.
CheckpointData load_checkpoint(const std::string& path, bool with_optim);
// Checks that a checkpoint's model matches `expect` (resume / fine-tune into a config).
void check_same_model(const CheckpointData& ck, const ModelConfig& expect);

}  // namespace loom
