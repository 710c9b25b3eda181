// model.h: what every graph-built model kind shares: its hyper-parameters, the three graph
// modes, and the handles the trainer and sampler need into a built graph.
#pragma once
#include <string>
#include <vector>

#include "engine/graph/graph.h"

namespace loom {

struct ModelConfig {
  std::string kind = "gpt";  // gpt | lstm | gru | rnn | ffnn | ngram
  int n_layer = 4;    // transformer blocks, recurrent layers, or ffnn hidden layers
  int n_head = 4;     // gpt
  int d_model = 256;  // gpt width; recurrent hidden size (= embedding size); ffnn embedding size
  int d_hidden = 0;   // ffnn hidden width (0: 4 * d_model)
  int context = 0;    // ffnn: previous tokens seen (n - 1 of an n-gram window)
  int order = 0;      // ngram: n
  int seq_len = 256;
  int vocab = 256;  // from the data folder, never from the user
  // LoRA (gpt): rank 0 = none. With rank r > 0 the base weights are frozen and each targeted
  // projection W gets W + (alpha / r) B A, A [r, in], B [out, r] (B starts at zero).
  int lora_rank = 0;
  double lora_alpha = 16.0;
  std::string lora_targets = "attn,mlp";  // attn (c_attn, attn.c_proj), mlp (c_fc, mlp.c_proj)
};

// Folds a LoRA model's adapters into its base weights: the parameters of the same model
// without LoRA (lora_rank 0), in that model's layout.
std::vector<float> merge_lora(const ModelConfig& cfg, const std::vector<float>& params, ModelConfig* merged_cfg);

// The kinds, for help and error texts.
inline constexpr const char* kModelKinds = "gpt, lstm, gru, rnn, ffnn, ngram";
// Kinds built as graphs (trained by gradient descent); ngram trains by counting.
bool is_graph_kind(const std::string& kind);
// Recurrent kinds carry hidden state between consecutive batches (truncated BPTT).
bool is_recurrent_kind(const std::string& kind);

// train: tokens + targets -> loss, with backward nodes (B x T windows)
// eval:  tokens + targets -> loss (and logits when asked), no backward
// decode: tokens [B, 1] at position `pos` with a KV cache -> logits [B, 1, V] (gpt); the
//         other graph kinds decode with their Eval graph and keep_logits
enum class GraphMode { Train, Eval, Decode };

struct ModelGraph {
  Graph g;
  int tokens = -1, targets = -1, loss = -1, logits = -1;
  int dloss = -1;             // seed of the loss gradient (Train)
  int pos = -1;               // decode position input [1] i32
  std::vector<int> caches;    // decode: per layer k then v, [B, H, maxT, D]
  // Recurrent kinds: per layer, the initial state (Input [NS, B, H], stat dtype) and the final
  // state (kept output) -- the next batch's initial state under truncated BPTT.
  std::vector<int> state_in, state_out;
  int B = 0, T = 0;
  explicit ModelGraph(DType dt) : g(dt) {}
};

// Builds the graph of a model kind. keep_logits: expose logits as an output in Eval mode.
ModelGraph build_model(const ModelConfig& cfg, GraphMode mode, int B, int T, DType dtype, bool keep_logits = false);

// Parameters of the model (elements), without building a graph.
int64_t count_params(const ModelConfig& cfg);

}  // namespace loom
