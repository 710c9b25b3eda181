// prepare_cmd.cpp: `loom prepare --corpus kjv|FILE|FOLDER|GLOB --tokenizer byte|gpt2|FILE --out DIR
// [--shard-tokens N] [--jsonl-field KEY] [--threads N]`: text -> token shards
// (engine/data/prepare.h), with a progress bar on a terminal. With --pairs FILE.tsv,
// --source A --target B, or --task span-corruption: sequence pairs -> a pair folder
// (engine/data/prepare_pairs.h).
#include <CLI/CLI.hpp>

#include "core/check.h"
#include "engine/data/prepare.h"
#include "engine/data/prepare_pairs.h"
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
    cmd_->add_option("--pairs", pairs_, "sequence pairs: a file of source TAB target lines");
    cmd_->add_option("--source", source_, "sequence pairs: the source lines (with --target)");
    cmd_->add_option("--target", target_, "sequence pairs: the target lines, line i with --source's line i");
    cmd_->add_option("--task", task_, "span-corruption: T5's masked spans of every line of --corpus, as pairs");
    cmd_->add_option("--max-len", pp_.max_len, "pairs: the most tokens a source or target may have (--task span-corruption: a line; longer lines are skipped); 0: no limit")
        ->capture_default_str();
    cmd_->add_option("--seed", pp_.seed, "span-corruption: the seed of the masked spans")->capture_default_str();
    cmd_->add_option("--noise-density", pp_.noise_density,
                     "span-corruption: share of a line's tokens (--whole-words: words) masked")
        ->capture_default_str();
    cmd_->add_option("--mean-span", pp_.mean_span,
                     "span-corruption: mean length of a masked span, in tokens (--whole-words: words)")
        ->capture_default_str();
    cmd_->add_flag("--whole-words", pp_.whole_words,
                   "span-corruption: mask whole words (a word's tokens together), counting words, not tokens");
    cmd_->add_option("--masks", pp_.masks,
                     "span-corruption: pairs per train line, each with its own masked spans (val lines: one)")
        ->capture_default_str();
  }
  int run() override {
    const bool pairs = !pairs_.empty() || !source_.empty() || !target_.empty() || !task_.empty();
    if (pairs) return run_pairs();
    for (const char* opt : {"--max-len", "--seed", "--masks", "--noise-density", "--mean-span", "--whole-words"})
      LOOM_USER_CHECK(cmd_->count(opt) == 0, opt, ": applies to pairs (--pairs, --source/--target, --task)");
    LOOM_USER_CHECK(po_.threads >= 0, "--threads: ", po_.threads, " must be 0 or more");
    po_.val_fraction = val_fraction_;
    BytesBar bar("loom prepare");
    if (on_terminal()) po_.progress = std::ref(bar);
    prepare_corpus(corpus_, tokenizer_, out_, po_);
    return 0;
  }

 private:
  int run_pairs() {
    LOOM_USER_CHECK(task_.empty() || task_ == "span-corruption", "--task: '", task_,
                    "' is not a task (span-corruption)");
    const int inputs = !pairs_.empty() + (!source_.empty() || !target_.empty()) + !task_.empty();
    LOOM_USER_CHECK(inputs == 1, "--pairs, --source/--target and --task: give one of them");
    LOOM_USER_CHECK(task_ == "span-corruption" || cmd_->count("--corpus") == 0,
                    "--corpus: pairs come from --pairs or --source/--target, not a corpus");
    for (const char* opt : {"--seed", "--masks", "--noise-density", "--mean-span", "--whole-words"})
      LOOM_USER_CHECK(task_ == "span-corruption" || cmd_->count(opt) == 0, opt, ": only --task has one");
    for (const char* opt : {"--shard-tokens", "--jsonl-field", "--threads"})
      LOOM_USER_CHECK(cmd_->count(opt) == 0, opt, ": applies to token streams, not to pairs");
    pp_.val_fraction = val_fraction_;
    if (!pairs_.empty()) {
      prepare_pairs_tsv(pairs_, tokenizer_, out_, pp_);
    } else if (!task_.empty()) {
      prepare_span_corruption(corpus_, tokenizer_, out_, pp_);
    } else {
      LOOM_USER_CHECK(!source_.empty() && !target_.empty(), !source_.empty() ? "--target" : "--source",
                      ": --source and --target come together");
      prepare_pairs_aligned(source_, target_, tokenizer_, out_, pp_);
    }
    return 0;
  }

  std::string corpus_ = "kjv", tokenizer_ = "byte", out_;
  std::string pairs_, source_, target_, task_;
  PairPrepareOptions pp_;
  double val_fraction_ = 0.05;
  PrepareOptions po_;
};

}  // namespace

std::unique_ptr<Command> add_prepare_command(CLI::App& app) { return std::make_unique<PrepareCommand>(app); }

}  // namespace loom
