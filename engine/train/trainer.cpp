// trainer.cpp: the training loop. One optimizer step = grad_accum micro-batches of forward +
// backward (gradients accumulate in the flat buffer), an all-reduce through the communicator,
// global-norm clipping, and AdamW over the flat buffers. Everything that decides the next
// step's numbers (weights, moments, step, loader RNG) is in the checkpoint, so a resumed run
// reproduces the uninterrupted one bit for bit on CPU.
#include "engine/train/trainer.h"

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/backend/device.h"
#include "engine/data/shard.h"
#include "engine/graph/executor.h"
#include "engine/optim/schedule.h"
#include "engine/train/checkpoint.h"
#include "engine/train/progress.h"
#include "engine/train/safetensors.h"
#include "engine/train/weights.h"

namespace fs = std::filesystem;

namespace loom {

namespace {

volatile std::sig_atomic_t g_stop_signal = 0;
void on_stop_signal(int s) { g_stop_signal = s; }

struct SignalGuard {
  using Handler = void (*)(int);
  Handler old_int, old_term;
  SignalGuard() {
    g_stop_signal = 0;
    old_int = std::signal(SIGINT, on_stop_signal);
    old_term = std::signal(SIGTERM, on_stop_signal);
  }
  ~SignalGuard() {
    std::signal(SIGINT, old_int);
    std::signal(SIGTERM, old_term);
  }
};

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

// Mean loss over `batches` batches drawn by a loader seeded afresh: the same windows every
// time, so validation losses are comparable across steps and runs.
double run_eval(Executor& ex, const ModelGraph& mg, const Shard& shard, uint64_t seed, int batches, Comm& comm) {
  WindowLoader loader(shard, mg.T, seed);
  const int B = mg.B;
  std::vector<int32_t> x(static_cast<size_t>(B) * mg.T), y(x.size());
  double total = 0;
  for (int i = 0; i < batches; ++i) {
    loader.next_batch(B * comm.world(), comm.rank(), comm.world(), x.data(), y.data());
    ex.set_input(mg.tokens, x.data(), x.size() * 4);
    ex.set_input(mg.targets, y.data(), y.size() * 4);
    ex.forward();
    total += ex.fetch_f32(mg.loss)[0];
  }
  return comm.allreduce_scalar(total / batches) / comm.world();
}

}  // namespace

double evaluate(const ModelConfig& model, const std::string& data_dir, const std::vector<float>& params,
                const std::string& device, int batch, int batches, uint64_t seed) {
  DataFolder data = open_data_folder(data_dir);
  LOOM_USER_CHECK(static_cast<int>(data.vocab_size) == model.vocab, data_dir, ": vocabulary ", data.vocab_size,
                  " does not match the checkpoint's ", model.vocab);
  Shard val(data.val_path());
  auto be = make_backend(device);
  ModelGraph eg = build_model(model, GraphMode::Eval, batch, model.seq_len, be->float_dtype());
  DeviceWeights w(*be, static_cast<int64_t>(params.size()));
  w.upload(params);
  Executor ex(eg.g, *be);
  ex.bind_params(w.graph_params(), nullptr);
  SingleComm comm;
  return run_eval(ex, eg, val, seed, batches, comm);
}

TrainResult train(const Config& cfg_in, const TrainOptions& opt) {
  SingleComm single;
  Comm& comm = opt.comm ? *opt.comm : single;
  const bool lead = comm.rank() == 0;
  Config cfg = cfg_in;
  DataFolder data = open_data_folder(cfg.data.path);
  cfg.model.vocab = static_cast<int>(data.vocab_size);
  Shard train_shard(data.train_path()), val_shard(data.val_path());
  const int T = cfg.model.seq_len;
  LOOM_USER_CHECK(cfg.train.batch_size % comm.world() == 0, "train.batch_size: ", cfg.train.batch_size,
                  " is not divisible by the ", comm.world(), " ranks");
  const int B = static_cast<int>(cfg.train.batch_size / comm.world());  // per rank, per micro-batch
  WindowLoader loader(train_shard, T, static_cast<uint64_t>(cfg.train.seed) + 1);
  { WindowLoader check_val(val_shard, T, 0); }  // UserError now if the val split is too short

  auto be = make_backend(cfg.device);
  ModelGraph tg = build_model(cfg.model, GraphMode::Train, B, T, be->float_dtype());
  ModelGraph eg = build_model(cfg.model, GraphMode::Eval, B, T, be->float_dtype());
  const int64_t n = tg.g.param_count;
  const size_t nbytes = static_cast<size_t>(n) * 4;  // f32 master weights, gradients, moments

  const fs::path run_dir(cfg.log.run_dir);
  std::error_code ec;
  TrainProgress prog;
  std::vector<float> params, m(n, 0.0f), v(n, 0.0f);
  if (opt.resume) {
    CheckpointData ck = load_checkpoint(run_dir.string(), true);
    check_same_model(ck, cfg.model);
    params = std::move(ck.params);
    m = std::move(ck.m);
    v = std::move(ck.v);
    prog = ck.progress;
    loader.set_state(prog.loader_rng);
    if (lead) std::printf("resuming from %s (step %lld)\n", ck.dir.c_str(), static_cast<long long>(prog.step));
  } else {
    LOOM_USER_CHECK(!fs::exists(run_dir / "latest", ec), run_dir.string(),
                    ": already holds a run (latest checkpoint present); use --resume to continue it or choose "
                    "another --log.run_dir");
    params = init_params(cfg.model, static_cast<uint64_t>(cfg.train.seed));
  }
  if (lead) {
    fs::create_directories(run_dir, ec);
    LOOM_USER_CHECK(!ec, run_dir.string(), ": cannot create run folder: ", ec.message());
    write_file_atomic((run_dir / "config.toml").string(), config_to_toml(cfg));
  }

  DeviceWeights weights(*be, n);
  weights.upload(params);
  DeviceBuffer d_grads(*be, nbytes), d_m(*be, nbytes), d_v(*be, nbytes);
  be->to_device(d_m.data(), m.data(), nbytes);
  be->to_device(d_v.data(), v.data(), nbytes);
  std::vector<uint8_t> decay(n, 0);
  for (const auto& p : tg.g.params)
    if (p.decay) std::fill(decay.begin() + p.offset, decay.begin() + p.offset + p.count(), 1);
  DeviceBuffer d_decay(*be, n);
  be->to_device(d_decay.data(), decay.data(), n);

  Executor tx(tg.g, *be), ex(eg.g, *be);
  tx.bind_params(weights.graph_params(), d_grads.data());
  ex.bind_params(weights.graph_params(), nullptr);
  const float dloss = 1.0f / static_cast<float>(cfg.train.grad_accum);
  tx.set_input(tg.dloss, &dloss, 4);

  const int64_t tokens_per_step = cfg.train.batch_size * cfg.train.grad_accum * T;
  if (lead && !opt.quiet) {
    std::printf("loom train | device %s | model %s L=%d H=%d C=%d T=%d V=%d | %lld parameters\n", be->name().c_str(),
                cfg.model.kind.c_str(), cfg.model.n_layer, cfg.model.n_head, cfg.model.d_model, T, cfg.model.vocab,
                static_cast<long long>(n));
    std::printf("data %s: %llu train / %llu val tokens | %lld tokens per step | arena %.1f MiB (%.1f MiB without reuse)\n",
                data.dir.c_str(), static_cast<unsigned long long>(train_shard.size()),
                static_cast<unsigned long long>(val_shard.size()), static_cast<long long>(tokens_per_step),
                tx.plan().arena_bytes / 1048576.0, tx.plan().total_bytes / 1048576.0);
    std::printf("--- resolved config ---%s-----------------------\n", config_to_toml(cfg).c_str());
    const double planned = static_cast<double>(tokens_per_step) * cfg.train.steps;
    const double optimal = 20.0 * static_cast<double>(n);
    if (planned < 0.5 * optimal)
      std::printf("warning: %.3g planned training tokens are far below the ~%.3g (20 per parameter) that are "
                  "compute-optimal for %lld parameters (%.2f tokens/parameter)\n",
                  planned, optimal, static_cast<long long>(n), planned / n);
    std::fflush(stdout);
  }

  std::ofstream metrics;
  if (lead) {
    metrics.open(run_dir / "metrics.jsonl", opt.resume ? std::ios::app : std::ios::trunc);
    LOOM_USER_CHECK(metrics, (run_dir / "metrics.jsonl").string(), ": cannot write");
  }

  TrainResult res;
  SignalGuard signals;
  Progress bar("train", cfg.train.steps, prog.step);
  std::vector<int32_t> x(static_cast<size_t>(B) * T), y(x.size());
  int64_t bad_in_a_row = 0;
  double tok_s_avg = 0;
  const uint64_t val_seed = static_cast<uint64_t>(cfg.train.seed) + 2;
  auto checkpoint = [&]() {
    weights.download(params);
    be->to_host(m.data(), d_m.data(), nbytes);
    be->to_host(v.data(), d_v.data(), nbytes);
    prog.loader_rng = loader.state();
    if (lead)
      res.last_checkpoint =
          save_checkpoint(run_dir.string(), cfg, data.tokenizer, params, m, v, prog, cfg.checkpoint.keep);
    comm.barrier();
  };

  // The forward + backward of one micro-batch, with profiling ranges per phase and layer.
  // After two eager steps it is captured once (CUDA graphs) and replayed.
  tx.on_node = [&](const Node& node, bool begin) {
    if (begin)
      be->range_push(node.scope.c_str());
    else
      be->range_pop();
  };
  auto micro_step = [&]() {
    {
      Range r(*be, "forward");
      tx.forward();
    }
    Range r(*be, "backward");
    tx.backward();
  };
  int captured = -1;
  int64_t eager_steps = 0;
  while (prog.step < cfg.train.steps) {
    const auto t0 = std::chrono::steady_clock::now();
    if (prog.step + 1 == opt.profile_from) be->profiler_start();
    Range step_range(*be, "step");
    be->zero(d_grads.data(), nbytes);
    double loss = 0;
    for (int64_t micro = 0; micro < cfg.train.grad_accum; ++micro) {
      loader.next_batch(B * comm.world(), comm.rank(), comm.world(), x.data(), y.data());
      tx.set_input(tg.tokens, x.data(), x.size() * 4);
      tx.set_input(tg.targets, y.data(), y.size() * 4);
      if (captured >= 0) {
        be->replay(captured);
      } else if (be->can_capture() && eager_steps >= 2) {
        captured = be->capture(micro_step);
        be->replay(captured);
      } else {
        micro_step();
      }
      loss += tx.fetch_f32(tg.loss)[0];
    }
    ++eager_steps;
    loss /= static_cast<double>(cfg.train.grad_accum);
    // Data parallelism: sum the ranks' gradients, then scale to the mean.
    {
      Range r(*be, "allreduce");
      comm.allreduce_sum(static_cast<float*>(d_grads.data()), n);
      loss = comm.allreduce_scalar(loss) / comm.world();
    }
    Range opt_range(*be, "optimizer");
    const float inv_world = 1.0f / static_cast<float>(comm.world());
    const double norm = be->norm(static_cast<const float*>(d_grads.data()), n) * inv_world;
    const double lr = lr_at(prog.step, cfg.train.steps, cfg.optim.lr, cfg.optim.min_lr, cfg.optim.warmup_steps);
    const bool finite = std::isfinite(loss) && std::isfinite(norm);
    if (finite) {
      bad_in_a_row = 0;
      float scale = inv_world;
      if (cfg.optim.grad_clip > 0 && norm > cfg.optim.grad_clip) scale *= static_cast<float>(cfg.optim.grad_clip / norm);
      ref::AdamWArgs a{weights.master(), static_cast<const float*>(d_grads.data()),
                       static_cast<float*>(d_m.data()), static_cast<float*>(d_v.data()),
                       static_cast<const uint8_t*>(d_decay.data()), n, static_cast<float>(lr),
                       static_cast<float>(cfg.optim.beta1), static_cast<float>(cfg.optim.beta2),
                       static_cast<float>(cfg.optim.eps), static_cast<float>(cfg.optim.weight_decay), scale,
                       prog.step + 1 - prog.skipped_steps};
      be->adamw(a, weights.working(), static_cast<uint64_t>(cfg.train.seed) * 1000003u + prog.step);
    } else {
      ++prog.skipped_steps;
      if (++bad_in_a_row >= cfg.train.max_bad_steps)
        throw std::runtime_error("step " + std::to_string(prog.step + 1) + ": loss or gradient norm not finite for " +
                                 std::to_string(bad_in_a_row) + " steps in a row (lower optim.lr?); aborting");
      bar.line("step " + std::to_string(prog.step + 1) + ": non-finite loss or gradient norm; update skipped");
    }
    be->synchronize();
    if (prog.step + 1 == opt.profile_to) be->profiler_stop();
    ++prog.step;
    prog.tokens_seen += tokens_per_step;
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    const double tok_s = tokens_per_step / (ms / 1000.0);
    tok_s_avg = tok_s_avg == 0 ? tok_s : 0.9 * tok_s_avg + 0.1 * tok_s;
    res.last_loss = loss;

    double val = -1;
    const bool last = prog.step == cfg.train.steps;
    if (prog.step % cfg.train.eval_every == 0 || last) {
      val = run_eval(ex, eg, val_shard, val_seed, static_cast<int>(cfg.train.eval_steps), comm);
      res.last_val_loss = val;
    }
    if (lead) {
      nlohmann::json j{{"step", prog.step}, {"loss", loss}, {"lr", lr}, {"grad_norm", norm}, {"ms", ms},
                       {"tokens_per_s", tok_s}, {"tokens", prog.tokens_seen}};
      if (val >= 0) j["val_loss"] = val;
      if (!finite) j["skipped"] = true;
      metrics << j.dump() << "\n";
      metrics.flush();
      if (!opt.quiet && (prog.step % cfg.log.every == 0 || prog.step == 1 || last || val >= 0)) {
        std::string s = "step " + std::to_string(prog.step) + "/" + std::to_string(cfg.train.steps) + " | loss " +
                        fmt("%.4f", loss) + (val >= 0 ? " | val " + fmt("%.4f", val) : "") + " | lr " +
                        fmt("%.2e", lr) + " | norm " + fmt("%.3f", norm) + " | " + fmt("%.0f", ms) + " ms | " +
                        fmt("%.0f", tok_s) + " tok/s";
        bar.line(s);
      }
      if (!opt.quiet) bar.update(prog.step, "loss " + fmt("%.3f", loss) + " | " + fmt("%.0f", tok_s_avg) + " tok/s");
    }
    if (prog.step % cfg.checkpoint.every == 0 || last) {
      checkpoint();
      if (lead && !opt.quiet) bar.line("checkpoint " + res.last_checkpoint);
    }
    if ((g_stop_signal || (opt.stop_after > 0 && prog.step >= opt.stop_after)) && !last) {
      checkpoint();
      bar.finish();
      if (lead)
        std::printf("stopped (%s) after step %lld; checkpoint %s (continue with --resume)\n",
                    g_stop_signal ? (g_stop_signal == SIGINT ? "SIGINT" : "SIGTERM") : "stop_after",
                    static_cast<long long>(prog.step), res.last_checkpoint.c_str());
      res.interrupted = true;
      break;
    }
  }
  bar.finish();
  res.steps_done = prog.step;
  if (lead && !opt.quiet && !res.interrupted && res.last_checkpoint.empty()) {
    std::printf("nothing to do: the run is already at step %lld of %lld (raise --train.steps to continue it)\n",
                static_cast<long long>(prog.step), static_cast<long long>(cfg.train.steps));
    return res;
  }
  if (lead && !opt.quiet && !res.interrupted)
    std::printf("done: %lld steps | final loss %.4f | val loss %.4f | checkpoint %s\n",
                static_cast<long long>(prog.step), res.last_loss, res.last_val_loss, res.last_checkpoint.c_str());
  return res;
}

}  // namespace loom
