// state_carrier.cpp: see state_carrier.h.
#include "launch/run/state_carrier.h"

#include <algorithm>

namespace loom {

StateCarrier::StateCarrier(Executor& ex, const ModelGraph& mg, Comm& comm) : ex_(ex), mg_(mg), comm_(comm) {
  for (int s : mg.state_in) floats_ += static_cast<size_t>(numel(mg.g.values[s].shape));
}

void StateCarrier::reset() {
  for (int v : mg_.state_in) ex_.backend().zero(ex_.view(v).data, mg_.g.values[v].bytes());
}

void StateCarrier::advance() {
  for (size_t l = 0; l < mg_.state_in.size(); ++l)
    ex_.backend().copy(ex_.view(mg_.state_in[l]).data, ex_.view(mg_.state_out[l]).data,
                       mg_.g.values[mg_.state_in[l]].bytes());
}

std::vector<float> StateCarrier::rows(bool to_local, const std::vector<float>& from) const {
  const int world = comm_.world();
  std::vector<float> out(to_local ? floats_ : floats_ * static_cast<size_t>(world));
  size_t off = 0;  // this state's offset in the local layout
  for (int s : mg_.state_in) {
    const Shape& sh = mg_.g.values[s].shape;
    LOOM_CHECK(sh.size() == 3 && sh[1] == mg_.B, "recurrent state of unexpected shape");
    const size_t ns = static_cast<size_t>(sh[0]), n_rows = static_cast<size_t>(mg_.B) * static_cast<size_t>(sh[2]);
    for (size_t k = 0; k < ns; ++k)
      for (int r = 0; r < world; ++r) {
        if (to_local && r != comm_.rank()) continue;
        // `from` is rank-major ([world][local]) when gathering, global when slicing.
        const size_t local = off + k * n_rows, global = off * world + (k * world + r) * n_rows;
        if (to_local)
          std::copy_n(from.begin() + global, n_rows, out.begin() + off + k * n_rows);
        else
          std::copy_n(from.begin() + r * floats_ + local, n_rows, out.begin() + global);
      }
    off += ns * n_rows;
  }
  return out;
}

void StateCarrier::restore(std::vector<float> state, const std::string& where) {
  const int world = comm_.world();
  if (world > 1 && state.size() == floats_ * static_cast<size_t>(world)) state = rows(true, state);
  LOOM_USER_CHECK(state.size() == floats_, where, ": checkpoint holds ", state.size(),
                  " recurrent state values, the model needs ", floats_);
  size_t off = 0;
  for (int s : mg_.state_in) {
    const size_t bytes = mg_.g.values[s].bytes();
    ex_.backend().to_device(ex_.view(s).data, state.data() + off, bytes);
    off += bytes / 4;
  }
}

std::vector<float> StateCarrier::gather() {
  std::vector<float> state;
  for (int s : mg_.state_in) {
    const auto part = ex_.fetch<float>(s);
    state.insert(state.end(), part.begin(), part.end());
  }
  const int world = comm_.world();
  if (world == 1) return state;
  // Every rank's rows, gathered in backend memory (the communicator works there).
  Backend& be = ex_.backend();
  std::vector<float> all(floats_ * static_cast<size_t>(world));
  std::copy(state.begin(), state.end(), all.begin() + comm_.rank() * floats_);
  DeviceBuffer tmp(be, all.size() * 4);
  be.to_device(tmp.data(), all.data(), all.size() * 4);
  comm_.allgather(static_cast<float*>(tmp.data()), std::vector<int64_t>(static_cast<size_t>(world),
                                                                        static_cast<int64_t>(floats_)));
  be.to_host(all.data(), tmp.data(), all.size() * 4);
  return rows(false, all);
}

}  // namespace loom
