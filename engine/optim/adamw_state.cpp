// adamw_state.cpp: see adamw_state.h. The arithmetic of the update is the kernel family's
// (kernels/adamw); this is the bookkeeping around it: shards, clipping, gathering.
#include "engine/optim/adamw_state.h"

#include <cmath>

namespace loom {

AdamWState::AdamWState(Backend& be, Comm& comm, int64_t n_params, int64_t n_opt, const std::vector<uint8_t>& decay,
                       bool zero, const AdamWHyper& h)
    : be_(be), comm_(comm), n_(n_params), n_opt_(n_opt), zero_(zero && comm.world() > 1), h_(h) {
  LOOM_CHECK(static_cast<int64_t>(decay.size()) == n_params, "decay mask of ", decay.size(), " flags for ", n_params,
             " parameters");
  const int world = comm.world();
  shard_counts_.resize(static_cast<size_t>(world));
  for (int r = 0; r < world; ++r)
    shard_counts_[static_cast<size_t>(r)] = n_opt * (r + 1) / world - n_opt * r / world;
  shard_off_ = zero_ ? n_opt * comm.rank() / world : 0;
  shard_n_ = zero_ ? shard_counts_[static_cast<size_t>(comm.rank())] : n_opt;
  const size_t bytes = static_cast<size_t>(shard_n_) * 4;
  m_ = DeviceBuffer(be, bytes);
  v_ = DeviceBuffer(be, bytes);
  be.zero(m_.data(), bytes);
  be.zero(v_.data(), bytes);
  decay_ = DeviceBuffer(be, static_cast<size_t>(n_params));
  be.to_device(decay_.data(), decay.data(), decay.size());
}

void AdamWState::load(const std::vector<float>& m, const std::vector<float>& v) {
  LOOM_CHECK(static_cast<int64_t>(m.size()) == n_opt_ && static_cast<int64_t>(v.size()) == n_opt_,
             "moments of ", m.size(), " / ", v.size(), " values for ", n_opt_);
  const size_t bytes = static_cast<size_t>(shard_n_) * 4;
  be_.to_device(m_.data(), m.data() + shard_off_, bytes);
  be_.to_device(v_.data(), v.data() + shard_off_, bytes);
}

void AdamWState::gather(std::vector<float>& m, std::vector<float>& v) {
  const size_t nbytes = static_cast<size_t>(n_opt_) * 4;
  m.resize(static_cast<size_t>(n_opt_));
  v.resize(static_cast<size_t>(n_opt_));
  if (!zero_) {
    be_.to_host(m.data(), m_.data(), nbytes);
    be_.to_host(v.data(), v_.data(), nbytes);
    return;
  }
  // Gathered in backend memory: the communicator works there.
  DeviceBuffer tmp(be_, nbytes);
  for (auto [d, h] : {std::pair{&m_, &m}, std::pair{&v_, &v}}) {
    be_.copy(static_cast<float*>(tmp.data()) + shard_off_, d->data(), static_cast<size_t>(shard_n_) * 4);
    comm_.allgather(static_cast<float*>(tmp.data()), shard_counts_);
    be_.to_host(h->data(), tmp.data(), nbytes);
  }
}

double AdamWState::grad_norm(const float* grads) {
  const float inv_world = 1.0f / static_cast<float>(comm_.world());
  if (!zero_) return be_.norm(grads, n_opt_) * inv_world;
  const double part = be_.norm(grads + shard_off_, shard_n_);
  return std::sqrt(comm_.allreduce_scalar(part * part)) * inv_world;
}

void AdamWState::update(DeviceWeights& w, const float* grads, double norm, double lr, int64_t t, uint64_t seed) {
  float scale = 1.0f / static_cast<float>(comm_.world());
  if (h_.grad_clip > 0 && norm > h_.grad_clip) scale *= static_cast<float>(h_.grad_clip / norm);
  const ref::AdamWArgs a{.param = w.master() + shard_off_,
                         .grad = grads + shard_off_,
                         .m = static_cast<float*>(m_.data()),
                         .v = static_cast<float*>(v_.data()),
                         .decay = static_cast<const uint8_t*>(decay_.data()) + shard_off_,
                         .n = shard_n_,
                         .lr = static_cast<float>(lr),
                         .beta1 = h_.beta1,
                         .beta2 = h_.beta2,
                         .eps = h_.eps,
                         .weight_decay = h_.weight_decay,
                         .grad_scale = scale,
                         .step = t};
  void* working = w.working();
  if (working && zero_) working = static_cast<char*>(working) + static_cast<size_t>(shard_off_) * dtype_size(be_.float_dtype());
  be_.adamw(a, working, seed);
  if (zero_) {
    comm_.allgather(w.master(), shard_counts_);
    if (w.working()) be_.to_working(w.master(), w.working(), n_);
  }
}

}  // namespace loom
