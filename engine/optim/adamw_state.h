// adamw_state.h: the optimizer of a run on a backend: AdamW's f32 moments over the optimizer's
// domain of the flat buffer (its trainable prefix, all of it unless the model freezes weights,
// as LoRA does with its base), the weight-decay mask, global-norm clipping folded into the
// update's scale, and ZeRO-1: with `zero`, rank r owns [shard_offset, shard_offset +
// shard_count) of the flat buffers, its moments exist only for that slice, and after its
// update every rank gathers every slice of the weights.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/comm/comm.h"
#include "engine/optim/weights.h"

namespace loom {

struct AdamWHyper {
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.1f;
  double grad_clip = 1.0;  // global-norm clip of the mean gradient (0: off)
};

class AdamWState {
 public:
  // n_params: the flat buffer; n_opt: its trainable prefix; decay: n_params flags (1: decay).
  AdamWState(Backend& be, Comm& comm, int64_t n_params, int64_t n_opt, const std::vector<uint8_t>& decay, bool zero,
             const AdamWHyper& h);

  // Restores the moments from whole buffers (n_opt each, as a checkpoint holds them).
  void load(const std::vector<float>& m, const std::vector<float>& v);
  // The whole moments, gathered from every rank's shard (collective under ZeRO).
  void gather(std::vector<float>& m, std::vector<float>& v);

  // The norm of the mean gradient over ranks. `grads` holds the sum over ranks: all of it
  // after an all-reduce, this rank's shard after a reduce-scatter (ZeRO; collective then).
  double grad_norm(const float* grads);
  // One AdamW update at learning rate lr with the gradients scaled to their mean and clipped
  // by `norm`; t is the 1-based step of the bias correction; seed drives the working copy's
  // stochastic rounding. Under ZeRO every rank then holds every updated weight.
  void update(DeviceWeights& w, const float* grads, double norm, double lr, int64_t t, uint64_t seed);

  int64_t domain() const { return n_opt_; }
  int64_t shard_offset() const { return shard_off_; }
  int64_t shard_count() const { return shard_n_; }
  const std::vector<int64_t>& shard_counts() const { return shard_counts_; }
  bool zero() const { return zero_; }

 private:
  Backend& be_;
  Comm& comm_;
  int64_t n_, n_opt_;
  bool zero_;
  AdamWHyper h_;
  std::vector<int64_t> shard_counts_;
  int64_t shard_off_ = 0, shard_n_ = 0;
  DeviceBuffer m_, v_, decay_;
};

}  // namespace loom
