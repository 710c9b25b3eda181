// eval_cmd.cpp: `loom eval --checkpoint DIR [--data DIR]`: validation loss and perplexity of
// a checkpoint (launch/run/evaluate.h), on its run's data unless told otherwise.
#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdio>

#include "core/check.h"
#include "launch/command.h"
#include "launch/run/checkpoint.h"
#include "launch/run/evaluate.h"

namespace loom {

namespace {

class EvalCommand final : public Command {
 public:
  explicit EvalCommand(CLI::App& app)
      : Command(app.add_subcommand("eval", "validation loss and perplexity of a checkpoint")) {
    cmd_->add_option("--checkpoint", ckpt_, "checkpoint folder, run folder or its latest")->required();
    cmd_->add_option("--data", data_, "prepared data folder (default: the run's data.path)");
    cmd_->add_option("--batch-size", batch_, "sequences per batch")->capture_default_str();
    cmd_->add_option("--batches", batches_, "batches of the val split")->capture_default_str();
    cmd_->add_option("--device", device_, "auto | cpu | cuda")->capture_default_str();
  }
  int run() override {
    CheckpointData ck = load_checkpoint(ckpt_, false);
    std::string data = data_;
    if (data.empty()) {
      LOOM_USER_CHECK(!ck.config_toml.empty(), ck.dir, ": no config.toml; pass --data");
      data = parse_config_text(ck.config_toml, ck.dir + "/config.toml", {}).data.path;
    }
    LOOM_USER_CHECK(batch_ >= 1, "--batch-size: must be >= 1");
    LOOM_USER_CHECK(batches_ >= 1, "--batches: must be >= 1");
    const double loss = evaluate(ck.model, data, ck.params, ck.counts, device_, batch_, batches_, 4242);
    std::printf("checkpoint %s\ndata %s (val split, %d batches of %d x %d tokens)\nval loss %.4f nats/token | "
                "perplexity %.3f | %.4f bits/token\n",
                ck.dir.c_str(), data.c_str(), batches_, batch_, ck.model.seq_len, loss, std::exp(loss),
                loss / std::log(2.0));
    return 0;
  }

 private:
  std::string ckpt_, data_, device_ = "auto";
  int batch_ = 8, batches_ = 50;
};

}  // namespace

std::unique_ptr<Command> add_eval_command(CLI::App& app) { return std::make_unique<EvalCommand>(app); }

}  // namespace loom
