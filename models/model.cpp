// model.cpp: dispatch from model.kind to the builder of that kind.
#include "models/model.h"

#include "engine/core/check.h"

namespace loom {

ModelGraph build_gpt(const ModelConfig& c, GraphMode mode, int B, int T, DType dt, bool keep_logits);

ModelGraph build_model(const ModelConfig& cfg, GraphMode mode, int B, int T, DType dtype, bool keep_logits) {
  if (cfg.kind == "gpt") return build_gpt(cfg, mode, B, T, dtype, keep_logits);
  user_error("model.kind: unknown kind '", cfg.kind, "' (expected: gpt)");
}

int64_t count_params(const ModelConfig& cfg) {
  return build_model(cfg, GraphMode::Eval, 1, 1, DType::F32).g.param_count;
}

}  // namespace loom
