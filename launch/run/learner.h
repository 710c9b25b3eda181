// learner.h: what the run loop (trainer.cpp) drives, one step at a time. Two learners serve
// every model kind: the gradient learner (graph kinds: forward, backward, gradient sums,
// AdamW) and the counting learner (counting kinds). The loop around them -- progress,
// validation schedule, metrics, checkpoints, signals, stopping -- is the same for both.
#pragma once
#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/comm/comm.h"
#include "engine/data/pairs.h"
#include "engine/data/shard.h"
#include "launch/run/checkpoint.h"
#include "launch/run/config.h"
#include "launch/run/mc_eval.h"
#include "launch/run/trainer.h"

namespace loom {

// What one step did. NaN: the learner has no such number (a counting step has no loss).
struct StepStats {
  double loss = NAN, grad_norm = NAN, lr = NAN;
  bool skipped = false;  // a non-finite loss or gradient norm: the update was skipped (on every rank)
  int bad_ranks = 0;     // with `skipped`: ranks whose own loss was not finite (0: the norm only)
  int bad_rank = -1;     // the one such rank, when there is one
  int64_t tokens = 0;    // tokens consumed (all ranks); pair kinds: real tokens only, padding not counted
  double padding = NAN;  // pair kinds: the step's padding tokens / all tokens (source and target)
  // The model FLOPs of the step's tokens (all ranks): ModelKind::flops_per_token x tokens, and
  // for pair kinds x the real target tokens, the unit their flops_per_token counts in. NaN:
  // not counted (counting kinds).
  double flops = NAN;
};

// A learner's state as a checkpoint holds it (the loader's position goes into TrainProgress).
struct LearnerState {
  std::vector<float> params, m, v;
  CheckpointExtra extra;
};

// What a run has opened before its learner: the config (vocab from the data), the data, the
// communicator, the options.
struct RunContext {
  Config cfg;
  DataFolder data;
  const Shard* train = nullptr;
  const Shard* val = nullptr;
  // Pair kinds (ModelKind::learns_pairs()): the pair folder and its splits instead of the
  // token shards (`data` then holds its directory, tokenizer and vocabulary only).
  PairVocab pair_vocab;
  const PairSplit* train_pairs = nullptr;
  const PairSplit* val_pairs = nullptr;
  Comm* comm = nullptr;
  const TrainOptions* opt = nullptr;
  // train.init_from on a fresh run: the parameters to start from (empty: the seeded init).
  std::vector<float> warm_params;
  bool lead() const { return comm->rank() == 0; }
};

class Learner {
 public:
  virtual ~Learner() = default;
  // Lines for the start of the run (device, model, data, memory), each ending in '\n'.
  virtual std::string banner() const = 0;
  // What the progress bar calls a step ("train", "count").
  virtual const char* verb() const = 0;
  // Runs step p.step + 1.
  virtual StepStats step(const TrainProgress& p) = 0;
  // Whether step `step` (1-based) ends with a validation.
  virtual bool validates_at(int64_t step, bool last) const = 0;
  virtual double validate() = 0;
  // The state a checkpoint holds (collective across ranks); sets p.loader_rng.
  virtual LearnerState snapshot(TrainProgress& p) = 0;
  // The end of the run's last line, e.g. "final loss 1.4321".
  virtual std::string summary(const TrainResult& r) const = 0;
  // Model FLOPs utilisation at this rate of model FLOPs (all ranks; engine/backend/peak.h);
  // NaN where it means nothing. Sets *note to a line to print when a measured peak had to be
  // measured again.
  virtual double mfu(double flops_per_s, std::string* note) { return NAN; }
  // The model as it is now, scoring token rows for downstream tasks (mc_eval.h); null while
  // it cannot (a counting model before its last step).
  virtual RowScorer* scorer() { return nullptr; }
};

// `resume`: the checkpoint to continue from (its model already checked), or null.
std::unique_ptr<Learner> make_gradient_learner(const RunContext& rc, const CheckpointData* resume);
std::unique_ptr<Learner> make_counting_learner(const RunContext& rc, const CheckpointData* resume);

}  // namespace loom
