// finetune.h: `loom finetune`: continue training a pretrained GPT checkpoint (a loom run or an
// imported GPT-2) on new data, either fully (lora.rank 0) or with LoRA adapters on the chosen
// projections while the base weights stay frozen (bit-identical). Runs through the ordinary
// trainer: the fine-tune's step-0 checkpoint (base weights + fresh adapters, zero moments) is
// written first and the run resumes from it, so progress, metrics, signals, checkpoints and
// --resume behave exactly as for `loom train`.
#pragma once
#include <string>

#include "launch/run/config.h"
#include "launch/run/trainer.h"

namespace loom {

struct FinetuneOptions {
  std::string checkpoint;  // the base: a checkpoint, run folder or latest
  Overrides overrides;     // --data, --lora.*, --train.*, --optim.*, --log.run_dir, ... as config keys
  bool resume = false;     // continue an interrupted fine-tune in log.run_dir
  bool merge = false;      // at the end, write <run_dir>/merged: the adapters folded into the weights
};

TrainResult finetune(const FinetuneOptions& o, const TrainOptions& topt = {});

}  // namespace loom
