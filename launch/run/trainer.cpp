// trainer.cpp: the run loop, the same for every model kind. The kind's learner
// (learner.h) does the steps; around them this loop keeps the schedule -- progress and ETA,
// validation, metrics.jsonl, checkpoints, signals, a stop agreed by every rank -- in the run
// folder (run_folder.h).
#include "launch/run/trainer.h"

#include <chrono>
#include <cstdio>
#include <optional>

#include "launch/run/learner.h"
#include "launch/run/pair_batches.h"
#include "launch/run/progress.h"
#include "launch/run/run_folder.h"

namespace loom {

namespace {

// The line a step prints (lead rank), with what the learner measured.
std::string step_line(int64_t step, int64_t steps, const StepStats& s, double val, double ms, double tok_s,
                      double mfu) {
  std::string line = "step " + std::to_string(step) + "/" + std::to_string(steps);
  if (!std::isnan(s.loss)) line += " | loss " + fmt("%.4f", s.loss);
  if (val >= 0) line += " | val " + fmt("%.4f", val);
  if (!std::isnan(s.lr)) line += " | lr " + fmt("%.2e", s.lr);
  if (!std::isnan(s.grad_norm)) line += " | norm " + fmt("%.3f", s.grad_norm);
  if (!std::isnan(s.padding)) line += " | pad " + fmt("%.1f", 100 * s.padding) + "%";
  line += " | " + fmt("%.0f", ms) + " ms | " + fmt("%.0f", tok_s) + (std::isnan(s.padding) ? " tok/s" : " real tok/s");
  return std::isnan(mfu) ? line : line + " | MFU " + fmt("%.1f", 100 * mfu) + "%";
}

nlohmann::json metrics_line(const TrainProgress& p, const StepStats& s, double val, double ms, double tok_s,
                            double mfu) {
  nlohmann::json j{{"step", p.step}, {"ms", ms}, {"tokens_per_s", tok_s}, {"tokens", p.tokens_seen}};
  if (!std::isnan(s.loss)) j["loss"] = s.loss;
  if (!std::isnan(s.lr)) j["lr"] = s.lr;
  if (!std::isnan(s.grad_norm)) j["grad_norm"] = s.grad_norm;
  if (!std::isnan(s.padding)) j["padding"] = s.padding;
  if (val >= 0) j["val_loss"] = val;
  if (s.skipped) j["skipped"] = true;
  if (s.bad_rank >= 0) j["bad_rank"] = s.bad_rank;
  if (!std::isnan(mfu)) j["mfu"] = mfu;
  return j;
}

// train.init_from on a fresh run: the seeded initialisation, overwritten by the kind with what
// the named checkpoint (of the data's tokenizer) gives it. Returns the line that says what.
std::string warm_start(RunContext& rc) {
  const Config& cfg = rc.cfg;
  CheckpointData from;
  try {
    from = load_checkpoint(cfg.train.init_from, false);
  } catch (const UserError& e) {
    user_error("train.init_from: ", e.what(), " (train that run first, or set train.init_from = \"\" to start from ",
               "the seeded initialisation)");
  }
  LOOM_USER_CHECK(from.tokenizer == rc.data.tokenizer, from.dir, " (train.init_from): trained with another tokenizer than ",
                  cfg.data.path, " (prepare both with the same tokenizer file)");
  rc.warm_params = init_params(cfg.model, static_cast<uint64_t>(cfg.train.seed));
  return model_kind(cfg.model.kind).warm_start(cfg.model, rc.warm_params, from.model, from.params, from.dir);
}

}  // namespace

TrainResult train(const Config& cfg_in, const TrainOptions& opt) {
  SingleComm single;
  Comm& comm = opt.comm ? *opt.comm : single;
  const ModelKind& kind = model_kind(cfg_in.model.kind);
  // Pair kinds read a pair folder, the others a token folder (each opener names the other
  // kind of folder in its error).
  std::optional<PairFolder> pairs;
  if (kind.learns_pairs()) pairs = open_pair_folder(cfg_in.data.path);
  RunContext rc{.cfg = cfg_in,
                .data = pairs ? DataFolder{.dir = pairs->dir, .tokenizer = pairs->tokenizer, .vocab_size = pairs->vocab.size()}
                              : open_data_folder(cfg_in.data.path),
                .comm = &comm,
                .opt = &opt};
  Config& cfg = rc.cfg;
  cfg.model.vocab = static_cast<int>(rc.data.vocab_size);
  resolve_eot_id(cfg.model, rc.data.eot_id, rc.data.tokenizer);
  std::optional<Shard> train_split, val_split;
  std::optional<PairSplit> train_pairs, val_pairs;
  if (pairs) {
    train_pairs.emplace(pairs->dir, "train");
    val_pairs.emplace(pairs->dir, "val");
    check_pair_lengths(*train_pairs, cfg.model);
    check_pair_lengths(*val_pairs, cfg.model);
    rc.pair_vocab = pairs->vocab;
    rc.train_pairs = &*train_pairs;
    rc.val_pairs = &*val_pairs;
  } else {
    train_split.emplace(rc.data.train_files);
    val_split.emplace(rc.data.val_files);
    rc.train = &*train_split;
    rc.val = &*val_split;
    WindowLoader check(*val_split, cfg.model.seq_len, 0);  // UserError now if the val split is too short
  }
  const McTasks tasks(cfg.train.eval_tasks, cfg.train.eval_tasks_every, rc.data.tokenizer, cfg.model.vocab,
                      cfg.model.seq_len);  // UserError now for a bad task file

  // Before the run folder exists, so that a checkpoint it cannot start from leaves nothing behind.
  const std::string warm_note = !opt.resume && !opt.start && !cfg.train.init_from.empty() ? warm_start(rc) : "";

  RunFolder run(cfg, opt.resume, comm);  // locked from here on
  std::optional<CheckpointData> resume;
  if (opt.resume) {
    resume = load_checkpoint(cfg.log.run_dir, true);
    check_same_model(*resume, cfg.model);
    // Ranks and gradient accumulation may change on resume (the loader draws the same windows
    // in the same order whatever the split); a recurrent model's streams, one per sequence of
    // the batch, cannot be re-cut.
    if (kind.carries_state() && !resume->config_toml.empty()) {
      const Config was = parse_config_text(resume->config_toml, resume->dir + "/config.toml", {});
      LOOM_USER_CHECK(was.train.batch_size == cfg.train.batch_size, "train.batch_size: ", cfg.train.batch_size,
                      " differs from the checkpoint's ", was.train.batch_size, " (", resume->dir,
                      "): a recurrent model carries one stream per sequence of the batch; keep the batch size "
                      "(ranks and train.grad_accum may change)");
    }
  } else if (opt.start) {
    check_same_model(*opt.start, cfg.model);
  }
  const CheckpointData* from = resume ? &*resume : opt.start;
  run.open_logs(cfg, resume ? resume->progress.step : -1);
  const std::unique_ptr<Learner> learner =
      kind.counts() ? make_counting_learner(rc, from) : make_gradient_learner(rc, from);
  TrainProgress prog = from ? from->progress : TrainProgress{};
  const bool lead = rc.lead(), talk = lead && !opt.quiet;
  if (lead && resume) std::printf("resuming from %s (step %lld)\n", resume->dir.c_str(), static_cast<long long>(prog.step));
  if (lead && !warm_note.empty()) std::printf("%s\n", warm_note.c_str());
  resume.reset();  // the learner has taken what it needs
  rc.warm_params = {};
  if (talk) {
    std::printf("%s--- resolved config ---\n%s-----------------------\n", learner->banner().c_str(),
                config_to_toml(cfg).c_str());
    std::printf("%s", tasks.cut_notes().c_str());
    std::fflush(stdout);
  }

  TrainResult res;
  Progress bar(learner->verb(), cfg.train.steps, prog.step);
  int64_t bad_in_a_row = 0;
  double tok_s_avg = 0;
  auto checkpoint = [&] {
    LearnerState st = learner->snapshot(prog);
    res.last_checkpoint = run.checkpoint(cfg, rc.data.tokenizer, st.params, st.m, st.v, prog, st.extra);
  };
  while (prog.step < cfg.train.steps) {
    const auto t0 = std::chrono::steady_clock::now();
    const StepStats s = learner->step(prog);
    if (s.skipped) {
      ++prog.skipped_steps;
      const std::string where = s.bad_rank >= 0 ? " on rank " + std::to_string(s.bad_rank)
                                : s.bad_ranks > 1 ? " on " + std::to_string(s.bad_ranks) + " ranks"
                                                  : "";
      LOOM_USER_CHECK(++bad_in_a_row < cfg.train.max_bad_steps, "step ", prog.step + 1,
                      ": loss or gradient norm not finite", where, " for ", bad_in_a_row,
                      " steps in a row (lower optim.lr?); aborting");
      if (lead) bar.line("step " + std::to_string(prog.step + 1) + ": non-finite loss or gradient norm" + where +
                         "; update skipped on every rank");
    } else {
      bad_in_a_row = 0;
    }
    ++prog.step;
    prog.tokens_seen += s.tokens;
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    const double seconds = std::max(ms / 1000.0, 1e-9);
    const double tok_s = s.tokens / seconds;
    tok_s_avg = tok_s_avg == 0 ? tok_s : 0.9 * tok_s_avg + 0.1 * tok_s;
    if (!std::isnan(s.loss)) res.last_loss = s.loss;
    const bool last = prog.step == cfg.train.steps;
    const double val = learner->validates_at(prog.step, last) ? learner->validate() : -1;
    if (val >= 0) res.last_val_loss = val;
    std::string mfu_note;
    const double mfu = learner->mfu(s.flops / seconds, &mfu_note);
    if (talk && !mfu_note.empty()) bar.line(mfu_note);
    nlohmann::json metrics = metrics_line(prog, s, val, ms, tok_s, mfu);
    const std::string scored =
        tasks.due(prog.step, last, cfg.train.eval_every) ? tasks.run(learner->scorer(), comm, metrics) : "";
    run.log(metrics);
    if (talk) {
      if (prog.step % cfg.log.every == 0 || prog.step == 1 || last || val >= 0)
        bar.line(step_line(prog.step, cfg.train.steps, s, val, ms, tok_s, mfu));
      if (!scored.empty()) bar.line(scored);
      bar.update(prog.step, std::isnan(s.loss) ? std::to_string(prog.tokens_seen) + " tokens"
                                               : "loss " + fmt("%.3f", s.loss) + " | " + fmt("%.0f", tok_s_avg) + " tok/s");
    }
    if (prog.step % cfg.checkpoint.every == 0 || last) {
      checkpoint();
      if (talk) bar.line("checkpoint " + res.last_checkpoint);
    }
    const bool stop_here = run.signal() || (opt.stop_after > 0 && prog.step >= opt.stop_after);
    if (run.agree_stop(stop_here) && !last) {
      checkpoint();
      bar.finish();
      if (lead)
        std::printf("stopped (%s) after step %lld; checkpoint %s (continue with --resume)\n",
                    run.signal() ? (run.signal() == SIGINT ? "SIGINT" : "SIGTERM")
                    : stop_here  ? "stop_after"
                                 : "signal on another rank",
                    static_cast<long long>(prog.step), res.last_checkpoint.c_str());
      res.interrupted = true;
      break;
    }
  }
  bar.finish();
  res.steps_done = prog.step;
  if (talk && !res.interrupted) {
    if (res.last_checkpoint.empty())
      std::printf("nothing to do: the run is already at step %lld of %lld (raise --train.steps to continue it)\n",
                  static_cast<long long>(prog.step), static_cast<long long>(cfg.train.steps));
    else
      std::printf("done: %lld steps | %s | val loss %.4f | checkpoint %s\n", static_cast<long long>(prog.step),
                  learner->summary(res).c_str(), res.last_val_loss, res.last_checkpoint.c_str());
  }
  return res;
}

}  // namespace loom
