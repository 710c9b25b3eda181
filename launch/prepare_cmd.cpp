// prepare_cmd.cpp: `loom prepare --corpus kjv|FILE --tokenizer byte|gpt2|FILE --out DIR`:
// text -> token shards (engine/data/shard.h), with a progress bar on a terminal.
#include <CLI/CLI.hpp>

#include "engine/data/shard.h"
#include "launch/command.h"
#include "launch/run/progress.h"

namespace loom {

namespace {

class PrepareCommand final : public Command {
 public:
  explicit PrepareCommand(CLI::App& app) : Command(app.add_subcommand("prepare", "turn a text corpus into token shards")) {
    cmd_->add_option("--corpus", corpus_, "kjv (King James Bible, Debian's bible-kjv) or a text file")
        ->capture_default_str();
    cmd_->add_option("--tokenizer", tokenizer_,
                     "byte | gpt2 (GPT-2's 50257-token vocabulary) | FILE (written by `loom tokenizer train`)")
        ->capture_default_str();
    cmd_->add_option("--out", out_, "output folder")->required();
    cmd_->add_option("--val-fraction", val_fraction_, "share of tokens held out for validation")->capture_default_str();
  }
  int run() override {
    PrepareOptions po;
    po.val_fraction = val_fraction_;
    BytesBar bar("loom prepare");
    if (on_terminal()) po.progress = std::ref(bar);
    prepare_corpus(corpus_, tokenizer_, out_, po);
    return 0;
  }

 private:
  std::string corpus_ = "kjv", tokenizer_ = "byte", out_;
  double val_fraction_ = 0.05;
};

}  // namespace

std::unique_ptr<Command> add_prepare_command(CLI::App& app) { return std::make_unique<PrepareCommand>(app); }

}  // namespace loom
