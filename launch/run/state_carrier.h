// state_carrier.h: the hidden state recurrent kinds carry from batch to batch (truncated
// BPTT). Each layer's initial state is an Input of the training graph and its final state a
// kept output: after every micro-batch the final state is copied over the initial one on the
// device (in stream order, so a captured step carries it too). At each epoch of the stream
// loader, or every train.state_reset steps, the state starts from zero.
//
// Checkpoints hold the state of every row of the global batch ([NS, G, H] per layer, as a
// single rank has it); rank r carries rows [r*B, (r+1)*B), so saving gathers the ranks'
// rows and resuming slices them out again.
#pragma once
#include <vector>

#include "engine/comm/comm.h"
#include "engine/graph/executor.h"
#include "models/model.h"

namespace loom {

class StateCarrier {
 public:
  StateCarrier(Executor& ex, const ModelGraph& mg, Comm& comm);
  bool empty() const { return mg_.state_in.empty(); }
  // Zero initial state: a fresh stream.
  void reset();
  // This batch's final state becomes the next batch's initial state.
  void advance();
  // The global batch's state (collective across ranks).
  std::vector<float> gather();
  // From a checkpoint: the global batch's state (or, from an older single-rank layout, this
  // rank's). UserError naming `where` if it does not fit the model.
  void restore(std::vector<float> state, const std::string& where);

 private:
  // Global <-> this rank's layout.
  std::vector<float> rows(bool to_local, const std::vector<float>& from) const;

  Executor& ex_;
  const ModelGraph& mg_;
  Comm& comm_;
  size_t floats_ = 0;  // this rank's state
};

}  // namespace loom
