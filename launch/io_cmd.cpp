// io_cmd.cpp: `loom import --from gpt2-safetensors FILE --out DIR` and
// `loom export --to gpt2-safetensors --checkpoint DIR --out FILE` (launch/run/gpt2_io.h
// holds the name map and both directions).
#include <CLI/CLI.hpp>

#include <cstdio>

#include "launch/command.h"

#include "launch/run/checkpoint.h"
#include "launch/run/gpt2_io.h"

namespace loom {
namespace {

class IoCommand final : public Command {
 public:
  explicit IoCommand(CLI::App& app)
      : Command(app.add_subcommand("import", "turn another format's checkpoint into a loom run folder")) {
    CLI::App* im_ = cmd_;
    im_->add_option("--from", from_, "source format: gpt2-safetensors")
        ->required()
        ->check(CLI::IsMember({"gpt2-safetensors"}));
    im_->add_option("file", file_, "the checkpoint file (GPT-2 names; F32, F16 or BF16)")->required();
    im_->add_option("--out", out_, "run folder to create (missing or empty)")->required();
    im_->add_option("--n-head", opt_.n_head,
                    "attention heads (GPT-2 files do not store it; default: the file's n_head metadata, else 12 "
                    "for d_model 768)")
        ->check(CLI::PositiveNumber);
    im_->add_option("--seq-len", opt_.seq_len, "keep only the first N positions of wpe (default: all)")
        ->check(CLI::PositiveNumber);
    im_->add_option("--tokenizer", opt_.tokenizer,
                    "byte | gpt2 | FILE (default: gpt2 for 50257 tokens, byte for 256, else required)");

    ex_ = app.add_subcommand("export", "write a loom checkpoint in another format");
    ex_->add_option("--to", to_, "target format: gpt2-safetensors")
        ->required()
        ->check(CLI::IsMember({"gpt2-safetensors"}));
    ex_->add_option("--checkpoint", ckpt_, "checkpoint folder, run folder or its latest")->required();
    ex_->add_option("--out", xout_, "safetensors file to write")->required();
  }

  bool parsed() const override { return cmd_->parsed() || ex_->parsed(); }

  int run() override {
    if (cmd_->parsed()) {
      const std::string dir = import_gpt2(file_, out_, opt_);
      const CheckpointData ck = load_checkpoint(dir, false);  // what sample / train will see
      std::printf("loom import: %s -> %s\ngpt n_layer=%d n_head=%d d_model=%d seq_len=%d vocab=%d, tokenizer %s\n"
                  "sample: loom sample --checkpoint %s --prompt TEXT\n"
                  "fine-tune: loom train --config %s/config.toml --data.path DATA --resume\n",
                  file_.c_str(), dir.c_str(), ck.model.n_layer, ck.model.n_head, ck.model.d_model,
                  ck.model.seq_len, ck.model.vocab, ck.tokenizer.size() > 40 ? "(inline BPE)" : ck.tokenizer.c_str(),
                  out_.c_str(), out_.c_str());
      return 0;
    }
    export_gpt2(ckpt_, xout_);
    std::printf("loom export: %s -> %s (GPT-2 names, F32, Conv1D layout, lm_head tied to wte)\n", ckpt_.c_str(),
                xout_.c_str());
    return 0;
  }

 private:
  CLI::App* ex_ = nullptr;
  std::string from_, file_, out_, to_, ckpt_, xout_;
  Gpt2ImportOptions opt_;
};

}  // namespace

std::unique_ptr<Command> add_import_export_command(CLI::App& app) { return std::make_unique<IoCommand>(app); }

}  // namespace loom
