// graph_decoder.h: what the graph kinds' decoders share: a graph on a backend with the
// model's weights uploaded and bound. Eval graphs compute a loss too, so they get valid
// (zero) targets once.
#pragma once
#include <memory>
#include <vector>

#include "engine/graph/executor.h"
#include "engine/optim/weights.h"
#include "models/model.h"

namespace loom {

class GraphDecoder : public TokenDecoder {
 protected:
  GraphDecoder(ModelGraph mg, const std::vector<float>& params, Backend& be) : be_(be), mg_(std::move(mg)) {
    LOOM_CHECK(static_cast<int64_t>(params.size()) == mg_.g.param_count, "parameter count mismatch");
    weights_ = std::make_unique<DeviceWeights>(be, mg_.g.param_count);
    weights_->upload(params);
    ex_ = std::make_unique<Executor>(mg_.g, be);
    ex_->bind_params(weights_->graph_params(), nullptr);
    if (mg_.targets >= 0) {
      std::vector<int32_t> zeros(static_cast<size_t>(mg_.B) * mg_.T, 0);
      ex_->set_input(mg_.targets, zeros.data(), zeros.size() * 4);
    }
  }
  Backend& be_;
  ModelGraph mg_;
  std::unique_ptr<DeviceWeights> weights_;
  std::unique_ptr<Executor> ex_;
};

}  // namespace loom
