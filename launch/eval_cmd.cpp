// eval_cmd.cpp: `loom eval --checkpoint DIR [--data DIR]`: validation loss and perplexity of
// a checkpoint (launch/run/evaluate.h), on its run's data unless told otherwise; with
// `--task mc FILE.jsonl`, its accuracy on a multiple-choice task instead (launch/run/mc_eval.h).
// A sequence-to-sequence checkpoint is evaluated on its val pairs: loss, exact match, BLEU,
// chrF and the exposure gap of free-running decodes (launch/run/pair_eval.h), also as JSON.
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
#include "launch/run/knn.h"
#include "launch/run/mc_eval.h"
#include "launch/run/pair_eval.h"
#include "launch/run/progress.h"

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
    auto no_task = [&](CLI::Option* opt) { return opt->excludes(task); };
    no_task(cmd_->add_option("--max-pairs", pairs_.max_pairs, "pair checkpoints: the first N pairs of the split (0 = all)")
                ->capture_default_str());
    no_task(cmd_->add_option("--beam", pairs_.beam, "pair checkpoints: decode by beam search with N hypotheses "
                                                   "(default: greedy)"));
    no_task(cmd_->add_option("--length-penalty", pairs_.length_penalty,
                             "pair checkpoints, with --beam: GNMT's alpha (0 = plain log-prob)"));
    no_task(cmd_->add_option("--split", pairs_.split, "pair checkpoints: the split evaluated, val or train")
                ->capture_default_str());
    knn_.add(*cmd_, [&](CLI::Option* o) { no_task(o); });
    no_task(cmd_->add_option("--json", json_, "pair checkpoints: also write the results here (JSON)"));
    no_task(cmd_->add_option("--decodes", decodes_,
                             "pair checkpoints: write each val pair's decode here, one line each (for loom score)"));
  }
  int run() override {
    LOOM_USER_CHECK(batch_ >= 1, "--batch-size: must be >= 1");
    if (!task_.empty()) return run_task();
    CheckpointData ck = load_checkpoint(ckpt_, false);
    const std::string data = checkpoint_data_path(ck, data_);
    if (model_kind(ck.model.kind).learns_pairs()) return run_pairs(ck, data);
    std::vector<const char*> pair_flags = {"--max-pairs", "--beam", "--length-penalty", "--json", "--decodes", "--split"};
    pair_flags.insert(pair_flags.end(), KnnFlags::names().begin(), KnnFlags::names().end());
    for (const char* f : pair_flags)
      LOOM_USER_CHECK(cmd_->count(f) == 0, f, ": only for checkpoints of sequence-to-sequence kinds");
    LOOM_USER_CHECK(batches_ >= 1, "--batches: must be >= 1");
    const double loss = evaluate(ck.model, data, ck.params, ck.counts, device_, batch_, batches_, 4242);
    std::printf("checkpoint %s\ndata %s (val split, %d batches of %d x %d tokens)\nval loss %.4f nats/token | "
                "perplexity %.3f | %.4f bits/token\n",
                ck.dir.c_str(), data.c_str(), batches_, batch_, ck.model.seq_len, loss, std::exp(loss),
                loss / std::log(2.0));
    return 0;
  }

 private:
  // The val pairs of a sequence-to-sequence checkpoint (pair_eval.h), with a progress line
  // while decoding: a bar with ETA on a terminal, else a plain line every 10 s.
  int run_pairs(const CheckpointData& ck, const std::string& data) {
    LOOM_USER_CHECK(cmd_->count("--batches") == 0,
                    "--batches: pair checkpoints are evaluated on the first --max-pairs val pairs");
    LOOM_USER_CHECK(pairs_.max_pairs >= 0, "--max-pairs: must be >= 0 (0 = all)");
    LOOM_USER_CHECK(cmd_->count("--beam") == 0 || pairs_.beam >= 1, "--beam: must be >= 1");
    LOOM_USER_CHECK(cmd_->count("--length-penalty") == 0 || cmd_->count("--beam") > 0,
                    "--length-penalty: needs --beam N");
    LOOM_USER_CHECK(std::isfinite(pairs_.length_penalty) && pairs_.length_penalty >= 0,
                    "--length-penalty: must be >= 0");
    knn_.check(*cmd_);
    pairs_.batch = batch_;
    pairs_.device = device_;
    const auto tok = make_tokenizer(ck.tokenizer);
    const std::unique_ptr<KnnStore> knn = knn_.load(ck);
    pairs_.knn = knn.get();
    pairs_.knn_options = knn_.options;
    const auto t0 = std::chrono::steady_clock::now();
    ProgressReport report("decoding", "loom eval: decoded", pairs_.split + " pairs");  // from the first pair decoded
    pairs_.progress = [&](int64_t done, int64_t total) { report(done, total); };
    const PairEvalResult r = evaluate_pairs(ck.model, ck.params, *tok, data, pairs_);
    report.finish();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const std::string decoding =
        (pairs_.beam > 0 ? "beam " + std::to_string(pairs_.beam) + ", length penalty " + fmt("%g", pairs_.length_penalty)
                         : std::string("greedy")) +
        (knn ? ", kNN k " + std::to_string(pairs_.knn_options.k) + " lambda " + fmt("%g", pairs_.knn_options.lambda) +
                   " temperature " + fmt("%g", pairs_.knn_options.temperature) + " probe " +
                   std::to_string(pairs_.knn_options.probe) + " gate " + fmt("%g", pairs_.knn_options.gate)
             : std::string());
    std::printf("checkpoint %s\ndata %s (%s split: %lld pairs, %lld target tokens with EOS; %s decodes; %.1f s)\n"
                "%s loss %.4f nats/token | perplexity %.3f | %.4f bits/token (target tokens, padding ignored)\n"
                "exact match %.4f (%lld of %lld)\n%s\n%s\n"
                "token accuracy: teacher-forced %.4f | free-running %.4f | exposure gap %.4f\n",
                ck.dir.c_str(), data.c_str(), pairs_.split.c_str(), static_cast<long long>(r.pairs), static_cast<long long>(r.target_tokens),
                decoding.c_str(), s, pairs_.split.c_str(), r.loss, std::exp(r.loss), r.loss / std::log(2.0), r.exact_match,
                static_cast<long long>(r.exact), static_cast<long long>(r.pairs), r.bleu.line.c_str(),
                r.chrf.line.c_str(), r.tf_accuracy, r.fr_accuracy, r.tf_accuracy - r.fr_accuracy);
    if (r.span_kinds) {
      std::printf("by target-token kind (teacher forced; the baselines count the train split's lines):\n"
                  "  %-12s %8s %10s %9s %9s %9s\n",
                  "kind", "tokens", "nats/tok", "accuracy", "unigram", "bigram");
      for (int k = 0; k < kSpanTokenKinds; ++k) {
        const auto& x = r.kinds[k];
        const bool span = is_span_token(static_cast<SpanTokenKind>(k));
        const bool any = x.tokens > 0;  // --mean-span 1 has no token inside a span
        auto num = [&](bool show, double v) { return show && any ? fmt("%.4f", v) : std::string("-"); };
        std::printf("  %-12s %8lld %10s %9s %9s %9s\n", span_token_kind_name(static_cast<SpanTokenKind>(k)),
                    static_cast<long long>(x.tokens), num(true, x.loss).c_str(), num(true, x.accuracy).c_str(),
                    num(span, x.unigram).c_str(), num(span, x.bigram).c_str());
      }
    }
    if (!decodes_.empty()) {
      std::string lines;
      for (const std::string& d : r.decodes) lines += d + "\n";
      write_file_atomic(decodes_, lines);
    }
    if (!json_.empty()) {
      const nlohmann::json j = {{"checkpoint", ck.dir},
                                {"data", data},
                                {"pairs", r.pairs},
                                {"target_tokens", r.target_tokens},
                                {"decoding", pairs_.beam > 0 ? "beam" : "greedy"},
                                {"beam", pairs_.beam},
                                {"length_penalty", pairs_.length_penalty},
                                {"split", pairs_.split},
                                {"loss", r.loss},
                                {"perplexity", std::exp(r.loss)},
                                {"exact_match", r.exact_match},
                                {"exact", r.exact},
                                {"bleu", r.bleu.score},
                                {"bleu_signature", r.bleu.line},
                                {"chrf", r.chrf.score},
                                {"chrf_signature", r.chrf.line},
                                {"teacher_forced_accuracy", r.tf_accuracy},
                                {"free_running_accuracy", r.fr_accuracy},
                                {"exposure_gap", r.tf_accuracy - r.fr_accuracy},
                                {"seconds", s}};
      nlohmann::json out = j;
      if (knn)
        out["knn"] = {{"datastore", knn_.file}, {"keys", knn->size()}, {"k", pairs_.knn_options.k},
                      {"lambda", pairs_.knn_options.lambda}, {"temperature", pairs_.knn_options.temperature},
                      {"probe", pairs_.knn_options.probe}, {"gate", pairs_.knn_options.gate}, {"lists", knn->lists()}};
      if (r.span_kinds) {
        nlohmann::json kinds = nlohmann::json::object();
        for (int k = 0; k < kSpanTokenKinds; ++k) {
          const auto& x = r.kinds[k];
          nlohmann::json e = {{"tokens", x.tokens}, {"loss", x.loss}, {"accuracy", x.accuracy}};
          if (is_span_token(static_cast<SpanTokenKind>(k))) {
            e["unigram_loss"] = x.unigram;
            e["bigram_loss"] = x.bigram;
          }
          kinds[span_token_kind_name(static_cast<SpanTokenKind>(k))] = e;
        }
        out["by_kind"] = kinds;
      }
      write_file_atomic(json_, out.dump(2) + "\n");
    }
    return 0;
  }

  int run_task() {
    LOOM_USER_CHECK(task_[0] == "mc", "--task: unknown task kind '", task_[0], "' (known: mc)");
    const std::string& file = task_[1];
    CheckpointData ck = load_checkpoint(ckpt_, false);
    LOOM_USER_CHECK(!model_kind(ck.model.kind).learns_pairs(), "--task: the checkpoint's kind ", ck.model.kind,
                    " learns pairs; evaluate it on its val pairs (leave out --task)");
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

  std::string ckpt_, data_, device_ = "auto", per_example_, json_, decodes_;
  KnnFlags knn_;
  PairEvalOptions pairs_;
  std::vector<std::string> task_;
  int batch_ = 8, batches_ = 50;
};

}  // namespace

std::unique_ptr<Command> add_eval_command(CLI::App& app) { return std::make_unique<EvalCommand>(app); }

}  // namespace loom
