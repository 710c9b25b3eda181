// mc_eval.h: downstream evaluation on multiple-choice completion, the HellaSwag way (as
// llm.c's dev/data/hellaswag.py scores it): each example is a context and candidate endings;
// every ending is scored by the loss of its own tokens given the context before it, and the
// model's choice is the ending with the lowest loss. Three rules, each an accuracy:
//   acc        lowest MEAN loss per ending token: the headline (llm.c's "acc_norm")
//   acc_sum    lowest SUMMED loss over the ending (llm.c's "acc"; lm-evaluation-harness's "acc")
//   acc_bytes  lowest summed loss per byte of " " + ending (lm-evaluation-harness's "acc_norm")
// `loom eval --task mc FILE` scores a checkpoint; train.eval_tasks scores the model during a
// run (docs/observability.md, "Downstream evaluation").
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/backend/backend.h"
#include "engine/comm/comm.h"
#include "engine/data/tokenizer.h"
#include "launch/run/checkpoint.h"
#include "models/model.h"

namespace loom {

// One candidate as the model reads it: the context's tokens then the ending's, cut from the
// left to at most seq_len + 1 tokens. The model reads tokens[0, n-1) and the tokens from
// `first` on (the ending's that are left) are scored, each given every token before it.
struct TokenRow {
  std::vector<int32_t> tokens;
  int first = 1;  // >= 1
};

// A row's summed loss (nats) over its scored tokens, and how many there were.
struct RowLoss {
  double sum = 0;
  int tokens = 0;
  double mean() const { return sum / tokens; }
};

// The per-token losses of rows under a model as it is now.
class RowScorer {
 public:
  virtual ~RowScorer() = default;
  // Rows of up to `tokens` tokens will come (a graph kind sizes its graph once).
  virtual void reserve(int tokens) {}
  virtual std::vector<RowLoss> score(std::span<const TokenRow> rows) = 0;
};

// A graph kind: its Eval graph with the logits kept, `batch` rows a forward pass, reading the
// flat weights at `params` (on `be`, in the graph's dtype) as they are at each call -- a
// learner's live weights. Rows are padded on the right (the models are causal) and their
// losses computed in double from the logits.
std::unique_ptr<RowScorer> make_graph_scorer(const ModelConfig& model, Backend& be, void* params, int batch);
// A counting kind's finalized model, through its log_prob.
std::unique_ptr<RowScorer> make_count_scorer(const CountingModel& model);
// A checkpoint's model on `device` (graph kinds) or on the CPU (counting kinds); it owns what
// it needs (backend, weights or counts).
std::unique_ptr<RowScorer> make_checkpoint_scorer(const CheckpointData& ck, const std::string& device, int batch);

// Limits far above real tasks (HellaSwag: 4 endings, lines under 2 KiB, 10,042 examples).
inline constexpr int kMaxEndings = 64;
inline constexpr size_t kMaxTaskLineBytes = size_t{1} << 20;
inline constexpr uint64_t kMaxTaskFileBytes = uint64_t{256} << 20;

struct McExample {
  int line = 0;  // 1-based, in the task file
  int label = 0;
  bool cut = false;                           // some row lost tokens on the left to fit seq_len
  std::vector<int32_t> context;               // its last seq_len tokens at most
  std::vector<std::vector<int32_t>> endings;  // each " " + ending, tokenized
  std::vector<int64_t> ending_bytes;          // each " " + ending's length in bytes
  TokenRow row(int ending, int seq_len) const;
};

struct McTask {
  std::string name, path;
  int seq_len = 0;
  int64_t cut = 0;  // examples cut from the left to the model's window
  std::vector<McExample> examples;
  // "" or one line saying how many examples lost context to the window (said once per task).
  std::string cut_note() const;
};

// Reads a JSONL task file, one example a line (blank lines skipped), in either format:
//   HellaSwag's:  {"ctx": "...", "endings": ["...", ...], "label": 2, ...} (other fields
//                 ignored; without "ctx", "ctx_a" + " " + "ctx_b")
//   loom's:       {"context": "...", "endings": ["...", ...], "label": 2}
// The label is an integer or a string of digits (Hugging Face's copy of HellaSwag). The
// context and each " " + ending are tokenized apart, as llm.c's hellaswag.py does. A context
// and ending longer than the model's window (seq_len + 1 tokens) lose tokens on the left.
// Every problem is a UserError "PATH:LINE: ..." (the file as a whole: "PATH: ...").
McTask read_mc_task(const std::string& path, const Tokenizer& tok, int vocab, int seq_len, const std::string& name);

// One example's losses and its choice under each rule (the first ending on a tie).
struct McScore {
  std::vector<RowLoss> endings;
  int choice = 0;        // argmin of the mean loss per token
  int choice_sum = 0;    // argmin of the summed loss
  int choice_bytes = 0;  // argmin of the summed loss per byte
};

struct McResult {
  int64_t examples = 0, correct = 0, correct_sum = 0, correct_bytes = 0;
  double chance = 0;            // the mean of 1 / endings: a guesser's expected accuracy
  std::vector<McScore> scores;  // per example (single process only)
  double acc() const { return static_cast<double>(correct) / examples; }
  double acc_sum() const { return static_cast<double>(correct_sum) / examples; }
  double acc_bytes() const { return static_cast<double>(correct_bytes) / examples; }
  // Three lines, one a rule: accuracy, counts and what the rule is.
  std::string summary() const;
};

// Scores every example. Across ranks, each takes examples i with i % world == rank and the
// counts are summed; `scores` is filled only with one rank.
McResult score_mc(const McTask& task, RowScorer& scorer, Comm& comm);

// train.eval_tasks for a run, each task named after its file's stem: read at the start (a bad
// file stops the run before its first step), scored every train.eval_tasks_every steps (0:
// with each validation, every train.eval_every steps) and at the last step.
class McTasks {
 public:
  McTasks(const std::vector<std::string>& files, int64_t every, const std::string& tokenizer, int vocab, int seq_len);
  bool empty() const { return tasks_.empty(); }
  bool due(int64_t step, bool last, int64_t eval_every) const;
  // Lines for the log: how many examples of each task lost context to the window.
  std::string cut_notes() const;
  // Scores every task into `metrics` ("mc/<name>/acc", "mc/<name>/acc_sum",
  // "mc/<name>/acc_bytes"); returns a line for the log, or "" when the model cannot score yet
  // (a counting model before its last step).
  std::string run(RowScorer* scorer, Comm& comm, nlohmann::json& metrics) const;

 private:
  std::vector<McTask> tasks_;
  int64_t every_;
};

}  // namespace loom
