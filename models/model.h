// model.h: what every graph-built model kind shares: its hyper-parameters, the three graph
// modes, and the handles the trainer and sampler need into a built graph.
#pragma once
#include <string>
#include <vector>

#include "engine/graph/graph.h"

namespace loom {

struct ModelConfig {
  std::string kind = "gpt";  // gpt (more kinds plug in here)
  int n_layer = 4;
  int n_head = 4;
  int d_model = 256;
  int seq_len = 256;
  int vocab = 256;  // from the data folder, never from the user
};

// train: tokens + targets -> loss, with backward nodes (B x T windows)
// eval:  tokens + targets -> loss (and logits when asked), no backward
// decode: tokens [B, 1] at position `pos` with a KV cache -> logits [B, 1, V]
enum class GraphMode { Train, Eval, Decode };

struct ModelGraph {
  Graph g;
  int tokens = -1, targets = -1, loss = -1, logits = -1;
  int dloss = -1;             // seed of the loss gradient (Train)
  int pos = -1;               // decode position input [1] i32
  std::vector<int> caches;    // decode: per layer k then v, [B, H, maxT, D]
  int B = 0, T = 0;
  explicit ModelGraph(DType dt) : g(dt) {}
};

// Builds the graph of a model kind. keep_logits: expose logits as an output in Eval mode.
ModelGraph build_model(const ModelConfig& cfg, GraphMode mode, int B, int T, DType dtype, bool keep_logits = false);

// Parameters of the model (elements), without building a graph.
int64_t count_params(const ModelConfig& cfg);

}  // namespace loom
