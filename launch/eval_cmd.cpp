// eval_cmd.cpp: `loom eval --checkpoint DIR [--data DIR]`: validation loss and perplexity of
// a checkpoint (launch/run/evaluate.h), on its run's data unless told otherwise; with
// `--task mc FILE.jsonl`, its accuracy on a multiple-choice task instead (launch/run/mc_eval.h).
#include <CLI/CLI.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>

#include "core/check.h"
#include "engine/data/tokenizer.h"
#include "engine/io/atomic_file.h"
#include "launch/command.h"
#include "launch/run/checkpoint.h"
#include "launch/run/evaluate.h"
#include "launch/run/mc_eval.h"

namespace loom {

namespace {

class EvalCommand final : public Command {
 public:
  explicit EvalCommand(CLI::App& app)
      : Command(app.add_subcommand("eval", "validation loss and perplexity of a checkpoint, or its accuracy on a task")) {
    cmd_->add_option("--checkpoint", ckpt_, "checkpoint folder, run folder or its latest")->required();
    auto* data = cmd_->add_option("--data", data_, "prepared data folder (default: the run's data.path)");
    auto* task = cmd_->add_option("--task", task_,
                                  "KIND FILE: score a downstream task instead; mc = multiple choice, a JSONL file "
                                  "in HellaSwag's format or {\"context\", \"endings\", \"label\"} a line")
                     ->expected(2)
                     ->excludes(data);
    cmd_->add_option("--per-example", per_example_, "with --task: write each example's scores here (JSONL)")->needs(task);
    cmd_->add_option("--batch-size", batch_, "sequences (--task: candidate rows) per batch")->capture_default_str();
    cmd_->add_option("--batches", batches_, "batches of the val split")->capture_default_str()->excludes(task);
    cmd_->add_option("--device", device_, "auto | cpu | cuda")->capture_default_str();
  }
  int run() override {
    LOOM_USER_CHECK(batch_ >= 1, "--batch-size: must be >= 1");
    if (!task_.empty()) return run_task();
    CheckpointData ck = load_checkpoint(ckpt_, false);
    std::string data = data_;
    if (data.empty()) {
      LOOM_USER_CHECK(!ck.config_toml.empty(), ck.dir, ": no config.toml; pass --data");
      data = parse_config_text(ck.config_toml, ck.dir + "/config.toml", {}).data.path;
    }
    LOOM_USER_CHECK(batches_ >= 1, "--batches: must be >= 1");
    const double loss = evaluate(ck.model, data, ck.params, ck.counts, device_, batch_, batches_, 4242);
    std::printf("checkpoint %s\ndata %s (val split, %d batches of %d x %d tokens)\nval loss %.4f nats/token | "
                "perplexity %.3f | %.4f bits/token\n",
                ck.dir.c_str(), data.c_str(), batches_, batch_, ck.model.seq_len, loss, std::exp(loss),
                loss / std::log(2.0));
    return 0;
  }

 private:
  int run_task() {
    LOOM_USER_CHECK(task_[0] == "mc", "--task: unknown task kind '", task_[0], "' (known: mc)");
    const std::string& file = task_[1];
    CheckpointData ck = load_checkpoint(ckpt_, false);
    const McTask task = read_mc_task(file, *make_tokenizer(ck.tokenizer), ck.model.vocab, ck.model.seq_len, "mc");
    if (!task.cut_note().empty()) std::fprintf(stderr, "note: task %s\n", task.cut_note().c_str());
    const auto t0 = std::chrono::steady_clock::now();
    const auto scorer = make_checkpoint_scorer(ck, device_, batch_);
    SingleComm comm;
    const McResult r = score_mc(task, *scorer, comm);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!per_example_.empty()) write_file_atomic(per_example_, per_example_lines(task, r));
    std::printf("checkpoint %s\ntask %s: %lld examples (chance %.4f), %.1f s\n%s\n", ck.dir.c_str(), file.c_str(),
                static_cast<long long>(r.examples), r.chance, s, r.summary().c_str());
    return 0;
  }

  // One JSON object per example: where it is, its label, each rule's choice and every ending's loss.
  static std::string per_example_lines(const McTask& task, const McResult& r) {
    std::string out;
    for (size_t i = 0; i < r.scores.size(); ++i) {
      const McScore& s = r.scores[i];
      nlohmann::json sums = nlohmann::json::array(), means = nlohmann::json::array(), tokens = nlohmann::json::array();
      for (const RowLoss& l : s.endings) sums.push_back(l.sum), means.push_back(l.mean()), tokens.push_back(l.tokens);
      out += nlohmann::json{{"line", task.examples[i].line}, {"label", task.examples[i].label},
                            {"choice", s.choice}, {"choice_sum", s.choice_sum}, {"choice_bytes", s.choice_bytes},
                            {"loss_mean", means}, {"loss_sum", sums}, {"tokens", tokens},
                            {"bytes", task.examples[i].ending_bytes}}.dump() + "\n";
    }
    return out;
  }

  std::string ckpt_, data_, device_ = "auto", per_example_;
  std::vector<std::string> task_;
  int batch_ = 8, batches_ = 50;
};

}  // namespace

std::unique_ptr<Command> add_eval_command(CLI::App& app) { return std::make_unique<EvalCommand>(app); }

}  // namespace loom
