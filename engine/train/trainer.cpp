// trainer.cpp: the training loop. One optimizer step = grad_accum micro-batches of forward +
// backward (gradients accumulate in the flat buffer), an all-reduce through the communicator,
// global-norm clipping, and AdamW over the flat buffers. Everything that decides the next
// step's numbers (weights, moments, step, loader RNG) is in the checkpoint, so a resumed run
// reproduces the uninterrupted one bit for bit on CPU.
//
// Data parallelism (docs/distributed.md): every rank runs the same graph on its slice of each
// global batch. Plain DP sums gradients in buckets, issued in backward order from the
// executor's node hook as soon as the last node writing a bucket has run (on NCCL the sums
// overlap the rest of backward); ZeRO-1 (dist.zero = 1) reduce-scatters the gradients, runs
// AdamW on this rank's shard of the flat buffers (moments exist only for the shard) and
// all-gathers the weights. Checkpoints gather the moments and the recurrent state, so they
// look like a single-rank run's and resume bit-exactly under the same world size.
#include "engine/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/backend/device.h"
#include "engine/data/shard.h"
#include "engine/data/stream_loader.h"
#include "engine/graph/executor.h"
#include "engine/optim/schedule.h"
#include "engine/train/checkpoint.h"
#include "engine/train/progress.h"
#include "engine/train/safetensors.h"
#include "engine/train/weights.h"
#include "models/ngram/ngram.h"

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

// Gradient buckets for data parallelism: contiguous ranges of the flat gradient buffer that
// tile it, cut at parameter boundaries from the end of the buffer (the last layers, whose
// gradients backward finishes first) towards the start, each at least `cap` floats. A bucket
// is ready after the last backward node that writes a gradient inside it.
struct Bucket {
  int64_t begin = 0, end = 0;
  size_t ready = 0;  // node index
};
std::vector<Bucket> plan_buckets(const Graph& g, int64_t cap) {
  std::vector<const ParamInfo*> ps;
  for (const auto& p : g.params)
    if (p.trainable) ps.push_back(&p);  // frozen weights have no gradients to reduce
  std::sort(ps.begin(), ps.end(), [](const ParamInfo* a, const ParamInfo* b) { return a->offset > b->offset; });
  // Last writer of every gradient value.
  std::vector<size_t> last_write(g.values.size(), 0);
  for (size_t i = g.forward_end; i < g.nodes.size(); ++i)
    for (int o : g.nodes[i].out)
      if (o >= 0) last_write[static_cast<size_t>(o)] = i;
  std::vector<Bucket> buckets;
  int64_t end = g.trainable_prefix();
  size_t ready = 0;
  bool any = false;
  for (size_t k = 0; k < ps.size(); ++k) {
    const ParamInfo& p = *ps[k];
    if (p.grad_value >= 0) ready = std::max(ready, last_write[static_cast<size_t>(p.grad_value)]), any = true;
    const bool cut = end - p.offset >= cap || k + 1 == ps.size();
    if (cut) {
      const int64_t begin = k + 1 == ps.size() ? 0 : p.offset;
      buckets.push_back({begin, end, any ? ready : g.nodes.size() - 1});
      end = begin;
      ready = 0;
      any = false;
    }
  }
  // Issue order: by readiness (the same on every rank: the graphs are identical).
  std::stable_sort(buckets.begin(), buckets.end(), [](const Bucket& a, const Bucket& b) { return a.ready < b.ready; });
  return buckets;
}

// LOOM_BUCKET_MB (default 25): the size of a gradient bucket.
int64_t bucket_floats() {
  const char* v = std::getenv("LOOM_BUCKET_MB");
  const double mb = v && *v ? std::atof(v) : 25.0;
  LOOM_USER_CHECK(mb > 0, "LOOM_BUCKET_MB: expected a size in MiB > 0, got '", v ? v : "", "'");
  return std::max<int64_t>(1, static_cast<int64_t>(mb * 1048576.0 / 4));
}

// Recurrent kinds: zero every layer's initial state (a fresh stream).
void zero_states(Executor& ex, const ModelGraph& mg) {
  for (int v : mg.state_in) ex.backend().zero(ex.view(v).data, mg.g.values[v].bytes());
}

}  // namespace

namespace {

// The n-gram model's validation loss on exactly the windows a neural model is evaluated on
// (WindowLoader, same seed), each token predicted from the tokens before it in its window.
double ngram_eval(const NgramModel& model, const Shard& val, int T, int B, int batches, uint64_t seed) {
  WindowLoader loader(val, T, seed);
  std::vector<int32_t> x(static_cast<size_t>(B) * T), y(x.size());
  double total = 0;
  for (int i = 0; i < batches; ++i) {
    loader.next_batch(B, 0, 1, x.data(), y.data());
    double sum = 0;
#pragma omp parallel for reduction(+ : sum) schedule(static)
    for (int64_t r = 0; r < static_cast<int64_t>(B) * T; ++r) {
      const int64_t row = r / T, t = r % T;
      sum -= model.log_prob(std::span<const int32_t>(x.data() + row * T, static_cast<size_t>(t + 1)), y[r]);
    }
    total += sum / (static_cast<double>(B) * T);
  }
  return total / batches;
}

// model.kind = ngram: "training" counts the train split, batch_size x grad_accum x seq_len
// tokens a step (the token budget of a neural run of the same config), with the same
// progress, metrics, checkpoints (the counts so far), signals and --resume as the neural
// kinds; after the last step the model is finalized and validated.
TrainResult train_ngram(const Config& cfg_in, const TrainOptions& opt) {
  Config cfg = cfg_in;
  DataFolder data = open_data_folder(cfg.data.path);
  cfg.model.vocab = static_cast<int>(data.vocab_size);
  Shard train_shard(data.train_path()), val_shard(data.val_path());
  const int T = cfg.model.seq_len;
  { WindowLoader check_val(val_shard, T, 0); }
  LOOM_USER_CHECK(data.vocab_size <= NgramModel::kMaxVocab, data.dir, ": vocabulary ", data.vocab_size,
                  " exceeds the ngram model's ", NgramModel::kMaxVocab);
  if (cfg.device != "cpu" && cfg.device != "auto" && !opt.quiet)
    std::printf("note: the ngram model counts on the CPU (device = %s is not used)\n", cfg.device.c_str());
  std::vector<uint32_t> tokens(train_shard.size());
  for (uint64_t i = 0; i < tokens.size(); ++i) tokens[i] = train_shard[i];

  const fs::path run_dir(cfg.log.run_dir);
  std::error_code ec;
  TrainProgress prog;
  NgramModel model(cfg.model.order, data.vocab_size);
  if (opt.resume) {
    CheckpointData ck = load_checkpoint(run_dir.string(), true);
    check_same_model(ck, cfg.model);
    model = NgramModel::from_tensors(ck.counts, ck.dir + "/model.safetensors");
    prog = ck.progress;
    std::printf("resuming from %s (step %lld)\n", ck.dir.c_str(), static_cast<long long>(prog.step));
  } else {
    LOOM_USER_CHECK(!fs::exists(run_dir / "latest", ec), run_dir.string(),
                    ": already holds a run (latest checkpoint present); use --resume to continue it or choose "
                    "another --log.run_dir");
  }
  fs::create_directories(run_dir, ec);
  LOOM_USER_CHECK(!ec, run_dir.string(), ": cannot create run folder: ", ec.message());
  write_file_atomic((run_dir / "config.toml").string(), config_to_toml(cfg));
  if (!opt.quiet) {
    const uint64_t budget = std::min<uint64_t>(tokens.size(), static_cast<uint64_t>(cfg.train.steps) *
                                                                  cfg.train.batch_size * cfg.train.grad_accum * T);
    std::printf("loom train | model ngram order=%d V=%d | counting %llu of %llu train tokens in %lld steps\n",
                cfg.model.order, cfg.model.vocab, static_cast<unsigned long long>(budget),
                static_cast<unsigned long long>(tokens.size()), static_cast<long long>(cfg.train.steps));
    std::fflush(stdout);
  }
  std::ofstream metrics(run_dir / "metrics.jsonl", opt.resume ? std::ios::app : std::ios::trunc);
  LOOM_USER_CHECK(metrics, (run_dir / "metrics.jsonl").string(), ": cannot write");

  TrainResult res;
  SignalGuard signals;
  Progress bar("count", cfg.train.steps, prog.step);
  const std::vector<float> none;
  auto checkpoint = [&]() {
    CheckpointExtra extra;
    extra.counts = model.to_tensors();
    res.last_checkpoint = save_checkpoint(run_dir.string(), cfg, data.tokenizer, none, none, none, prog,
                                          cfg.checkpoint.keep, extra);
  };
  // The same token budget as a neural run of this config: each step counts the next
  // batch_size x grad_accum x seq_len tokens of the split, from its start; once the split is
  // exhausted the remaining steps count nothing.
  const uint64_t N = tokens.size();
  const uint64_t per_step = static_cast<uint64_t>(cfg.train.batch_size * cfg.train.grad_accum) * T;
  const int64_t steps = cfg.train.steps;
  while (prog.step < steps) {
    const auto t0 = std::chrono::steady_clock::now();
    const uint64_t b = std::min(N, per_step * static_cast<uint64_t>(prog.step));
    const uint64_t e = std::min(N, per_step * static_cast<uint64_t>(prog.step + 1));
    model.count(tokens, b, e);
    ++prog.step;
    prog.tokens_seen += static_cast<int64_t>(e - b);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    const bool last = prog.step == steps;
    nlohmann::json j{{"step", prog.step}, {"tokens", prog.tokens_seen}, {"ms", ms},
                     {"tokens_per_s", (e - b) / std::max(ms / 1000.0, 1e-9)}};
    if (last) {
      model.finalize();
      res.last_val_loss = ngram_eval(model, val_shard, T, static_cast<int>(cfg.train.batch_size),
                                     static_cast<int>(cfg.train.eval_steps), static_cast<uint64_t>(cfg.train.seed) + 2);
      j["val_loss"] = res.last_val_loss;
    }
    metrics << j.dump() << "\n";
    metrics.flush();
    if (!opt.quiet) {
      if (last) bar.line("step " + std::to_string(prog.step) + "/" + std::to_string(steps) + " | val " + fmt("%.4f", res.last_val_loss));
      bar.update(prog.step, std::to_string(prog.tokens_seen) + " tokens");
    }
    if (prog.step % cfg.checkpoint.every == 0 || last) {
      checkpoint();
      if (!opt.quiet) bar.line("checkpoint " + res.last_checkpoint);
    }
    if ((g_stop_signal || (opt.stop_after > 0 && prog.step >= opt.stop_after)) && !last) {
      checkpoint();
      bar.finish();
      std::printf("stopped (%s) after step %lld; checkpoint %s (continue with --resume)\n",
                  g_stop_signal ? (g_stop_signal == SIGINT ? "SIGINT" : "SIGTERM") : "stop_after",
                  static_cast<long long>(prog.step), res.last_checkpoint.c_str());
      res.interrupted = true;
      break;
    }
  }
  bar.finish();
  res.steps_done = prog.step;
  if (!opt.quiet && !res.interrupted) {
    if (res.last_checkpoint.empty())
      std::printf("nothing to do: the run is already at step %lld of %lld\n", static_cast<long long>(prog.step),
                  static_cast<long long>(steps));
    else
      std::printf("done: %lld steps | %llu tokens counted | val loss %.4f | checkpoint %s\n",
                  static_cast<long long>(prog.step), static_cast<unsigned long long>(model.tokens_counted()),
                  res.last_val_loss, res.last_checkpoint.c_str());
  }
  return res;
}

double evaluate_ngram(const ModelConfig& cfg, const std::string& data_dir, const StFile& counts, int batch,
                      int batches, uint64_t seed) {
  DataFolder data = open_data_folder(data_dir);
  LOOM_USER_CHECK(static_cast<int>(data.vocab_size) == cfg.vocab, data_dir, ": vocabulary ", data.vocab_size,
                  " does not match the checkpoint's ", cfg.vocab);
  Shard val(data.val_path());
  NgramModel model = NgramModel::from_tensors(counts, "checkpoint");
  model.finalize();
  return ngram_eval(model, val, cfg.seq_len, batch, batches, seed);
}

}  // namespace

double evaluate(const ModelConfig& model, const std::string& data_dir, const std::vector<float>& params,
                const std::string& device, int batch, int batches, uint64_t seed, const StFile* counts) {
  if (model.kind == "ngram") {
    LOOM_CHECK(counts, "evaluate: an ngram model needs its counts");
    return evaluate_ngram(model, data_dir, *counts, batch, batches, seed);
  }
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
  zero_states(ex, eg);
  SingleComm comm;
  return run_eval(ex, eg, val, seed, batches, comm);
}

TrainResult train(const Config& cfg_in, const TrainOptions& opt) {
  if (cfg_in.model.kind == "ngram") {
    LOOM_USER_CHECK(!opt.comm || opt.comm->world() == 1, "model.kind = ngram: the n-gram model counts in one "
                    "process and has no data-parallel mode; run it without loom launch / srun / mpirun (got ",
                    opt.comm ? opt.comm->world() : 1, " ranks)");
    return train_ngram(cfg_in, opt);
  }
  SingleComm single;
  Comm& comm = opt.comm ? *opt.comm : single;
  const bool lead = comm.rank() == 0;
  const int world = comm.world();
  Config cfg = cfg_in;
  DataFolder data = open_data_folder(cfg.data.path);
  cfg.model.vocab = static_cast<int>(data.vocab_size);
  Shard train_shard(data.train_path()), val_shard(data.val_path());
  const int T = cfg.model.seq_len;
  LOOM_USER_CHECK(cfg.train.batch_size % comm.world() == 0, "train.batch_size: ", cfg.train.batch_size,
                  " is not divisible by the ", comm.world(), " ranks");
  const int B = static_cast<int>(cfg.train.batch_size / comm.world());  // per rank, per micro-batch
  // Transformers and feed-forward models see seeded random windows; recurrent models see
  // consecutive windows of fixed streams and carry their hidden state across batches.
  const bool recurrent = is_recurrent_kind(cfg.model.kind);
  WindowLoader loader(train_shard, T, static_cast<uint64_t>(cfg.train.seed) + 1);
  std::unique_ptr<StreamLoader> stream;
  if (recurrent) stream = std::make_unique<StreamLoader>(train_shard, T, static_cast<int>(cfg.train.batch_size));
  { WindowLoader check_val(val_shard, T, 0); }  // UserError now if the val split is too short

  auto be = make_backend(cfg.device);
  comm.attach_compute_stream(be->compute_stream());  // GPU collectives wait on events, not the device
  ModelGraph tg = build_model(cfg.model, GraphMode::Train, B, T, be->float_dtype());
  ModelGraph eg = build_model(cfg.model, GraphMode::Eval, B, T, be->float_dtype());
  const int64_t n = tg.g.param_count;  // f32 master weights
  // The optimizer's domain: gradients, moments and updates cover the trainable prefix of the
  // flat buffer (all of it unless the model freezes weights, as LoRA does with its base).
  const int64_t n_opt = tg.g.trainable_prefix();
  const size_t nbytes = static_cast<size_t>(n_opt) * 4;
  // ZeRO-1: rank r owns [shard_off, shard_off + shard_n) of the flat buffers; its AdamW
  // moments hold only that slice. Without ZeRO every rank owns everything.
  const bool zero = cfg.dist.zero == 1 && world > 1;
  std::vector<int64_t> shard_counts(static_cast<size_t>(world));
  for (int r = 0; r < world; ++r)
    shard_counts[static_cast<size_t>(r)] = n_opt * (r + 1) / world - n_opt * r / world;
  const int64_t shard_off = zero ? n_opt * comm.rank() / world : 0;
  const int64_t shard_n = zero ? shard_counts[static_cast<size_t>(comm.rank())] : n_opt;
  const size_t shard_bytes = static_cast<size_t>(shard_n) * 4;
  const std::vector<Bucket> buckets = plan_buckets(tg.g, bucket_floats());

  const fs::path run_dir(cfg.log.run_dir);
  std::error_code ec;
  TrainProgress prog;
  std::vector<float> params, m(n_opt, 0.0f), v(n_opt, 0.0f), rnn_state;
  if (opt.resume) {
    CheckpointData ck = load_checkpoint(run_dir.string(), true);
    check_same_model(ck, cfg.model);
    params = std::move(ck.params);
    m = std::move(ck.m);
    v = std::move(ck.v);
    prog = ck.progress;
    if (stream)
      stream->set_state(prog.loader_rng);
    else
      loader.set_state(prog.loader_rng);
    rnn_state = std::move(ck.rnn_state);
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
  DeviceBuffer d_grads(*be, nbytes), d_m(*be, shard_bytes), d_v(*be, shard_bytes);
  be->to_device(d_m.data(), m.data() + shard_off, shard_bytes);
  be->to_device(d_v.data(), v.data() + shard_off, shard_bytes);
  std::vector<uint8_t> decay(n, 0);
  for (const auto& p : tg.g.params)
    if (p.decay) std::fill(decay.begin() + p.offset, decay.begin() + p.offset + p.count(), 1);
  DeviceBuffer d_decay(*be, n);
  be->to_device(d_decay.data(), decay.data(), n);

  Executor tx(tg.g, *be), ex(eg.g, *be);
  tx.bind_params(weights.graph_params(), d_grads.data());
  ex.bind_params(weights.graph_params(), nullptr);
  // Recurrent state: validation windows start from zero; training carries it (and a resumed
  // run continues from the state in its checkpoint).
  zero_states(ex, eg);
  zero_states(tx, tg);
  size_t state_floats = 0;
  for (int s : tg.state_in) state_floats += static_cast<size_t>(numel(tg.g.values[s].shape));
  // Recurrent state in a checkpoint holds every row of the global batch ([NS, G, H] per
  // layer, as a single rank has it); rank r carries rows [r*B, (r+1)*B).
  auto state_rows = [&](bool to_local, const std::vector<float>& from) {
    std::vector<float> out(to_local ? state_floats : state_floats * static_cast<size_t>(world));
    size_t off = 0;  // this state's offset in the local layout
    for (int s : tg.state_in) {
      const Shape& sh = tg.g.values[s].shape;
      LOOM_CHECK(sh.size() == 3 && sh[1] == B, "recurrent state of unexpected shape");
      const size_t ns = static_cast<size_t>(sh[0]), rows = static_cast<size_t>(B) * static_cast<size_t>(sh[2]);
      for (size_t k = 0; k < ns; ++k)
        for (int r = 0; r < world; ++r) {
          if (to_local && r != comm.rank()) continue;
          // `from` is rank-major ([world][local]) when gathering, global when slicing.
          const size_t local = off + k * rows, global = off * world + (k * world + r) * rows;
          if (to_local)
            std::copy_n(from.begin() + global, rows, out.begin() + off + k * rows);
          else
            std::copy_n(from.begin() + r * state_floats + local, rows, out.begin() + global);
        }
      off += ns * rows;
    }
    return out;
  };
  auto upload_state = [&]() {
    if (world > 1 && rnn_state.size() == state_floats * static_cast<size_t>(world)) rnn_state = state_rows(true, rnn_state);
    LOOM_USER_CHECK(rnn_state.size() == state_floats, run_dir.string(), ": checkpoint holds ", rnn_state.size(),
                    " recurrent state values, the model needs ", state_floats);
    size_t off = 0;
    for (int s : tg.state_in) {
      const size_t bytes = tg.g.values[s].bytes();
      be->to_device(tx.view(s).data, rnn_state.data() + off, bytes);
      off += bytes / 4;
    }
  };
  auto download_state = [&]() {
    rnn_state.clear();
    for (int s : tg.state_in) {
      const auto part = tx.fetch<float>(s);
      rnn_state.insert(rnn_state.end(), part.begin(), part.end());
    }
    if (world > 1) {
      // Gather every rank's rows (in backend memory: the communicator works there).
      std::vector<float> all(state_floats * static_cast<size_t>(world));
      std::copy(rnn_state.begin(), rnn_state.end(), all.begin() + comm.rank() * state_floats);
      DeviceBuffer tmp(*be, all.size() * 4);
      be->to_device(tmp.data(), all.data(), all.size() * 4);
      comm.allgather(static_cast<float*>(tmp.data()),
                     std::vector<int64_t>(static_cast<size_t>(world), static_cast<int64_t>(state_floats)));
      be->to_host(all.data(), tmp.data(), all.size() * 4);
      rnn_state = state_rows(false, all);
    }
  };
  if (opt.resume && recurrent) upload_state();
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
    if (world > 1)
      std::printf("data parallel: %d ranks (%s) | %d sequences per rank per micro-batch | %s\n", world,
                  comm.name().c_str(), B,
                  zero ? ("ZeRO-1: AdamW state sharded, " + std::to_string(shard_n) + " parameters on rank 0").c_str()
                       : ("gradients in " + std::to_string(buckets.size()) + " bucket(s)").c_str());
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
    if (zero) {
      // Gather the moment shards so the checkpoint holds the whole optimizer state.
      DeviceBuffer tmp(*be, nbytes);
      for (auto [d, h] : {std::pair{&d_m, &m}, std::pair{&d_v, &v}}) {
        be->copy(static_cast<float*>(tmp.data()) + shard_off, d->data(), shard_bytes);
        comm.allgather(static_cast<float*>(tmp.data()), shard_counts);
        be->to_host(h->data(), tmp.data(), nbytes);
      }
    } else {
      be->to_host(m.data(), d_m.data(), nbytes);
      be->to_host(v.data(), d_v.data(), nbytes);
    }
    prog.loader_rng = stream ? stream->state() : loader.state();
    CheckpointExtra extra;
    if (recurrent) {
      download_state();
      extra.rnn_state = rnn_state;
    }
    if (lead)
      res.last_checkpoint =
          save_checkpoint(run_dir.string(), cfg, data.tokenizer, params, m, v, prog, cfg.checkpoint.keep, extra);
    comm.barrier(std::max(600.0, comm_timeout_s()));  // rank 0 may take a while to write
  };

  // The forward + backward of one micro-batch, with profiling ranges per phase and layer.
  // After two eager steps it is captured once (CUDA graphs) and replayed.
  // Plain data parallelism hangs the bucketed gradient sums on the same hook: during the last
  // micro-batch's backward, each bucket goes out once its last writer has run.
  const bool bucketed = world > 1 && !zero;
  bool sync_now = false;
  size_t next_bucket = 0;
  auto issue_buckets = [&](size_t upto) {
    float* g = static_cast<float*>(d_grads.data());
    for (; next_bucket < buckets.size() && buckets[next_bucket].ready <= upto; ++next_bucket)
      comm.bucket_ready(g + buckets[next_bucket].begin, buckets[next_bucket].end - buckets[next_bucket].begin);
  };
  tx.on_node = [&](const Node& node, bool begin) {
    if (begin) {
      be->range_push(node.scope.c_str());
    } else {
      be->range_pop();
      if (sync_now) issue_buckets(static_cast<size_t>(&node - tg.g.nodes.data()));
    }
  };
  auto micro_step = [&]() {
    {
      Range r(*be, "forward");
      tx.forward();
    }
    {
      Range r(*be, "backward");
      tx.backward();
    }
    // Truncated BPTT: this batch's final state is the next batch's initial state.
    for (size_t l = 0; l < tg.state_in.size(); ++l)
      be->copy(tx.view(tg.state_in[l]).data, tx.view(tg.state_out[l]).data, tg.g.values[tg.state_in[l]].bytes());
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
      if (stream) {
        const bool fresh = stream->next_batch(comm.rank(), comm.world(), x.data(), y.data());
        const bool reset = cfg.train.state_reset > 0 && micro == 0 && prog.step % cfg.train.state_reset == 0;
        if (fresh || reset) zero_states(tx, tg);
      } else {
        loader.next_batch(B * comm.world(), comm.rank(), comm.world(), x.data(), y.data());
      }
      tx.set_input(tg.tokens, x.data(), x.size() * 4);
      tx.set_input(tg.targets, y.data(), y.size() * 4);
      sync_now = bucketed && micro + 1 == cfg.train.grad_accum;
      next_bucket = 0;
      // (Collectives are issued from the node hook, so a multi-rank step is not captured.)
      if (captured >= 0) {
        be->replay(captured);
      } else if (be->can_capture() && world == 1 && eager_steps >= 2) {
        captured = be->capture(micro_step);
        be->replay(captured);
      } else {
        micro_step();
      }
      loss += tx.fetch_f32(tg.loss)[0];
    }
    ++eager_steps;
    loss /= static_cast<double>(cfg.train.grad_accum);
    // Data parallelism: sum the ranks' gradients (the buckets were issued during backward;
    // ZeRO-1 reduce-scatters here), then scale to the mean.
    {
      Range r(*be, "allreduce");
      if (bucketed) {
        sync_now = false;
        issue_buckets(tg.g.nodes.size());
        comm.finish_buckets();
      } else if (zero) {
        comm.reduce_scatter_sum(static_cast<float*>(d_grads.data()), shard_counts);
      }
      if (world > 1) loss = comm.allreduce_scalar(loss) / world;
    }
    Range opt_range(*be, "optimizer");
    const float inv_world = 1.0f / static_cast<float>(world);
    float* const g_shard = static_cast<float*>(d_grads.data()) + shard_off;
    double norm = 0;
    if (zero) {
      const double part = be->norm(g_shard, shard_n);
      norm = std::sqrt(comm.allreduce_scalar(part * part)) * inv_world;
    } else {
      norm = be->norm(static_cast<const float*>(d_grads.data()), n_opt) * inv_world;
    }
    const double lr = lr_at(prog.step, cfg.train.steps, cfg.optim.lr, cfg.optim.min_lr, cfg.optim.warmup_steps);
    const bool finite = std::isfinite(loss) && std::isfinite(norm);
    if (finite) {
      bad_in_a_row = 0;
      float scale = inv_world;
      if (cfg.optim.grad_clip > 0 && norm > cfg.optim.grad_clip) scale *= static_cast<float>(cfg.optim.grad_clip / norm);
      ref::AdamWArgs a{weights.master() + shard_off, g_shard,
                       static_cast<float*>(d_m.data()), static_cast<float*>(d_v.data()),
                       static_cast<const uint8_t*>(d_decay.data()) + shard_off, shard_n, static_cast<float>(lr),
                       static_cast<float>(cfg.optim.beta1), static_cast<float>(cfg.optim.beta2),
                       static_cast<float>(cfg.optim.eps), static_cast<float>(cfg.optim.weight_decay), scale,
                       prog.step + 1 - prog.skipped_steps};
      void* working = weights.working();
      if (working && zero)
        working = static_cast<char*>(working) + static_cast<size_t>(shard_off) * dtype_size(be->float_dtype());
      be->adamw(a, working, static_cast<uint64_t>(cfg.train.seed) * 1000003u + prog.step);
      if (zero) {
        // Every rank gets every shard of the updated weights (and refreshes its working copy).
        comm.allgather(weights.master(), shard_counts);
        if (weights.working()) be->to_working(weights.master(), weights.working(), n);
      }
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
    // Every rank must stop at the same step: a signal may reach the ranks at different steps.
    const bool stop_here = g_stop_signal || (opt.stop_after > 0 && prog.step >= opt.stop_after);
    const bool stop = world > 1 ? comm.allreduce_scalar(stop_here ? 1.0 : 0.0) > 0 : stop_here;
    if (stop && !last) {
      checkpoint();
      bar.finish();
      if (lead)
        std::printf("stopped (%s) after step %lld; checkpoint %s (continue with --resume)\n",
                    g_stop_signal ? (g_stop_signal == SIGINT ? "SIGINT" : "SIGTERM")
                    : stop_here   ? "stop_after"
                                  : "signal on another rank",
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
