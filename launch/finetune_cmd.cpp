// finetune_cmd.cpp: `loom finetune --checkpoint DIR --data DIR [--lora.rank R --lora.alpha A
// --lora.targets attn,mlp] [--merge] [--resume] [--section.key value ...]`.
#include <CLI/CLI.hpp>

#include "core/check.h"
#include "launch/command.h"
#include "launch/run/finetune.h"

namespace loom {

namespace {

class FinetuneCommand final : public Command {
 public:
  explicit FinetuneCommand(CLI::App& app)
      : Command(app.add_subcommand("finetune", "fine-tune a gpt checkpoint on new data: LoRA adapters (--lora.rank R "
                                               "> 0, base weights frozen) or all weights (--lora.rank 0); any config "
                                               "key as --section.key value")) {
    cmd_->add_option("--checkpoint", o_.checkpoint, "the base: checkpoint folder, run folder or latest")->required();
    cmd_->add_option("--data", data_, "prepared data folder to fine-tune on (default: the base run's data.path)");
    cmd_->add_option("--device", device_, "auto | cpu | cuda");
    cmd_->add_flag("--merge", o_.merge, "at the end, fold the adapters into the weights: <run_dir>/merged");
    cmd_->add_flag("--resume", o_.resume, "continue the fine-tune in log.run_dir (default runs/finetune)");
    cmd_->allow_extras();
  }
  int run() override {
    o_.overrides = parse_overrides(cmd_->remaining());
    if (!data_.empty()) o_.overrides.emplace_back("data.path", data_);
    if (!device_.empty()) o_.overrides.emplace_back("device", device_);
    finetune(o_);
    return 0;
  }

 private:
  FinetuneOptions o_;
  std::string data_, device_;
};

}  // namespace

std::unique_ptr<Command> add_finetune_command(CLI::App& app) { return std::make_unique<FinetuneCommand>(app); }

}  // namespace loom
