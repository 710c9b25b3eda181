// prepare_cmd.cpp: `loom prepare --corpus kjv|FILE|FOLDER|GLOB --tokenizer byte|gpt2|FILE --out DIR
// [--shard-tokens N] [--jsonl-field KEY] [--threads N]`: text -> token shards
// (engine/data/prepare.h), with a progress bar on a terminal.
#include <CLI/CLI.hpp>

#include "core/check.h"
#include "engine/data/prepare.h"
#include "launch/command.h"
#include "launch/run/progress.h"

namespace loom {

namespace {

class PrepareCommand final : public Command {
 public:
  explicit PrepareCommand(CLI::App& app) : Command(app.add_subcommand("prepare", "turn a text corpus into token shards")) {
    cmd_->add_option("--corpus", corpus_,
                     "kjv (King James Bible, Debian's bible-kjv), a text file, or documents: a folder, a glob "
                     "('books/*.txt', quoted) or .jsonl files, with an end-of-text token between documents")
        ->capture_default_str();
    cmd_->add_option("--tokenizer", tokenizer_,
                     "byte | gpt2 (GPT-2's 50257-token vocabulary) | FILE (written by `loom tokenizer train`)")
        ->capture_default_str();
    cmd_->add_option("--out", out_, "output folder")->required();
    cmd_->add_option("--val-fraction", val_fraction_, "share of tokens held out for validation")->capture_default_str();
    cmd_->add_option("--shard-tokens", po_.shard_tokens,
                     "tokens per shard file (train_000000.bin, ...); 0: one train.bin and one val.bin")
        ->capture_default_str();
    cmd_->add_option("--jsonl-field", po_.jsonl_field, "key of a .jsonl line that holds the document's text")
        ->capture_default_str();
    cmd_->add_option("--threads", po_.threads, "files tokenized at once; 0: one per core (same output either way)")
        ->capture_default_str();
  }
  int run() override {
    LOOM_USER_CHECK(po_.threads >= 0, "--threads: ", po_.threads, " must be 0 or more");
    po_.val_fraction = val_fraction_;
    BytesBar bar("loom prepare");
    if (on_terminal()) po_.progress = std::ref(bar);
    prepare_corpus(corpus_, tokenizer_, out_, po_);
    return 0;
  }

 private:
  std::string corpus_ = "kjv", tokenizer_ = "byte", out_;
  double val_fraction_ = 0.05;
  PrepareOptions po_;
};

}  // namespace

std::unique_ptr<Command> add_prepare_command(CLI::App& app) { return std::make_unique<PrepareCommand>(app); }

}  // namespace loom
