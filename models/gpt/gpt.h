// gpt.h: the GPT-2 style transformer kinds (model.kind = gpt, and gpt-pairs on pair folders).
#pragma once
#include "models/model.h"

namespace loom {

// The kind itself: code that works on GPT checkpoints only (GPT-2 import and export) asks
// `&model_kind(cfg.kind) == &gpt_kind()` rather than comparing names.
const ModelKind& gpt_kind();
const ModelKind& gpt_pairs_kind();  // GPT on pairs: source and target as one sequence

}  // namespace loom
