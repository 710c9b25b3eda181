// weights.h: a model's weights on a backend. The f32 master copy always; with mixed precision
// (the backend's float type is bf16) also the working copy that graphs read, refreshed from
// the master weights on upload and by every optimizer step.
#pragma once
#include <vector>

#include "engine/backend/backend.h"

namespace loom {

class DeviceWeights {
 public:
  DeviceWeights(Backend& be, int64_t n)
      : be_(be), n_(n), mixed_(be.float_dtype() != DType::F32 && be.float_dtype() != DType::F64),
        master_(be, static_cast<size_t>(n) * dtype_size(be.float_dtype() == DType::F64 ? DType::F64 : DType::F32)) {
    if (mixed_) work_ = DeviceBuffer(be, static_cast<size_t>(n) * dtype_size(be.float_dtype()));
  }
  void upload(const std::vector<float>& host) {
    LOOM_CHECK(static_cast<int64_t>(host.size()) == n_ && !(be_.float_dtype() == DType::F64));
    be_.to_device(master_.data(), host.data(), host.size() * 4);
    if (mixed_) be_.to_working(master(), work_.data(), n_);
  }
  void download(std::vector<float>& host) const {
    host.resize(n_);
    be_.to_host(host.data(), master_.data(), host.size() * 4);
  }
  float* master() const { return static_cast<float*>(master_.data()); }
  // What graphs bind as their parameters.
  void* graph_params() const { return mixed_ ? work_.data() : master_.data(); }
  void* working() const { return mixed_ ? work_.data() : nullptr; }
  int64_t size() const { return n_; }

 private:
  Backend& be_;
  int64_t n_;
  bool mixed_;
  DeviceBuffer master_, work_;
};

}  // namespace loom
