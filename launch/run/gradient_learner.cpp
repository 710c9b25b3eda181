// gradient_learner.cpp: the learner of the graph kinds. One optimizer step = grad_accum
// micro-batches of forward + backward (gradients accumulate in the flat buffer), the sums over
// ranks (grad_sync.h), the global norm, and AdamW with the clip folded in (adamw_state.h).
// Everything that decides the next step's numbers (weights, moments, step, loader position,
// recurrent state) is in the checkpoint, so a resumed run reproduces the uninterrupted one bit
// for bit on CPU.
//
// Pair kinds (ModelKind::learns_pairs()) read bucketed batches of a pair folder
// (pair_batches.h) with teacher forcing; the loss is the mean over each micro-batch's real
// target tokens, and the loader's position {epoch, batch} is the checkpoint's loader state.
// A batch runs on the training graph of its padded shape (train.length_buckets lengths a side):
// the graphs are built the first time a batch needs them, read the same weights and gradients,
// and borrow the full shape's activation arena, so memory is that of one graph.
//
// Data parallelism (docs/distributed.md): every rank runs the same graph on its slice of each
// global batch. Checkpoints gather the moments and the recurrent state, so they look like a
// single-rank run's and resume bit-exactly under the same world size.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>

#include "engine/backend/device.h"
#include "engine/backend/peak.h"
#include "engine/data/stream_loader.h"
#include "engine/graph/executor.h"
#include "engine/optim/adamw_state.h"
#include "engine/optim/schedule.h"
#include "engine/optim/weights.h"
#include "launch/run/evaluate.h"
#include "launch/run/grad_sync.h"
#include "launch/run/learner.h"
#include "launch/run/memory_report.h"
#include "launch/run/pair_batches.h"
#include "launch/run/plan.h"
#include "launch/run/progress.h"
#include "launch/run/state_carrier.h"

namespace loom {

namespace {

class GradientLearner final : public Learner {
 public:
  GradientLearner(const RunContext& rc, const CheckpointData* resume)
      : rc_(rc), cfg_(rc.cfg), comm_(*rc.comm), kind_(model_kind(cfg_.model.kind)),
        T_(cfg_.model.seq_len), B_(per_rank_batch(cfg_, comm_.world())),
        be_(make_backend(cfg_.device)),
        tg_(train_graph(T_, cfg_.model.src_len)),
        eg_(build_model(cfg_.model, GraphMode::Eval, B_, T_, be_->float_dtype())),
        n_(fitting_param_count()), weights_(*be_, n_), grads_(*be_, static_cast<size_t>(tg_.g.trainable_prefix()) * 4),
        tx_(tg_.g, *be_), ex_(eg_.g, *be_), carrier_(tx_, tg_, comm_), eval_carrier_(ex_, eg_, comm_) {
    // Transformers and feed-forward models see seeded random windows; recurrent models see
    // consecutive windows of fixed streams and carry their hidden state across batches.
    if (kind_.learns_pairs())
      pairs_ = make_pair_loader(*rc.train_pairs, rc.pair_vocab, B_, comm_.world(), static_cast<uint64_t>(cfg_.train.seed) + 1);
    else if (kind_.carries_state())
      stream_ = std::make_unique<StreamLoader>(*rc.train, T_, static_cast<int>(cfg_.train.batch_size));
    else
      loader_ = std::make_unique<WindowLoader>(*rc.train, T_, static_cast<uint64_t>(cfg_.train.seed) + 1);
    be_->set_deterministic(cfg_.train.deterministic);
    comm_.attach_compute_stream(be_->compute_stream());  // GPU collectives wait on events, not the device
    std::vector<uint8_t> decay(static_cast<size_t>(n_), 0);
    for (const auto& p : tg_.g.params)
      if (p.decay) std::fill(decay.begin() + p.offset, decay.begin() + p.offset + p.count(), 1);
    optim_ = std::make_unique<AdamWState>(
        *be_, comm_, n_, tg_.g.trainable_prefix(), decay, cfg_.dist.zero == 1,
        AdamWHyper{.beta1 = static_cast<float>(cfg_.optim.beta1), .beta2 = static_cast<float>(cfg_.optim.beta2),
                   .eps = static_cast<float>(cfg_.optim.eps), .weight_decay = static_cast<float>(cfg_.optim.weight_decay),
                   .grad_clip = cfg_.optim.grad_clip});
    sync_ = new_sync(tg_.g);
    if (resume) {
      weights_.upload(resume->params);
      optim_->load(resume->m, resume->v);
      if (pairs_)
        pairs_->set_state(resume->progress.loader_rng);
      else if (stream_)
        stream_->set_state(resume->progress.loader_rng);
      else
        loader_->set_state(resume->progress.loader_rng);
    } else if (!rc.warm_params.empty()) {
      weights_.upload(rc.warm_params);
    } else {
      weights_.upload(init_params(cfg_.model, static_cast<uint64_t>(cfg_.train.seed)));
    }
    tx_.bind_params(weights_.graph_params(), grads_.data());
    ex_.bind_params(weights_.graph_params(), nullptr);
    // Validation windows start from zero state; training carries it (a resumed run continues
    // from the state in its checkpoint).
    eval_carrier_.reset();
    carrier_.reset();
    if (resume && !carrier_.empty()) carrier_.restore(resume->rnn_state, cfg_.log.run_dir);
    const float dloss = 1.0f / static_cast<float>(cfg_.train.grad_accum);
    tx_.set_input(tg_.dloss, &dloss, 4);
    // Profiling ranges per node; the gradient buckets hang on the same hook.
    full_ = Shape{.mg = &tg_, .ex = &tx_, .sync = sync_.get()};
    hook(full_);
    if (pairs_) {
      const auto k = static_cast<int>(cfg_.train.length_buckets);
      // A graph that reads one sequence has T = S + model.seq_len: its target side is the rest.
      src_lengths_ = bucket_lengths(tg_.S, k);
      tgt_lengths_ = bucket_lengths(graph_target_len(tg_), k);
    }
    peak_ = device_peak(*be_);
    flops_per_token_ = kind_.flops_per_token(cfg_.model);
    x_.resize(static_cast<size_t>(B_) * T_);
    y_.resize(x_.size());
  }

  std::string banner() const override {
    const int world = comm_.world();
    const int64_t tokens_per_step = cfg_.train.batch_size * cfg_.train.grad_accum * T_;
    std::string s = "loom train | device " + be_->name() + " | model " + cfg_.model.kind + " " +
                    kind_.describe(cfg_.model) + " T=" + std::to_string(T_) + " V=" + std::to_string(cfg_.model.vocab) +
                    " | " + std::to_string(n_) + " parameters\n";
    char b[256];
    if (pairs_)
      std::snprintf(b, sizeof b, "data %s: %llu train / %llu val pairs | %lld pairs per step, S=%d | tok/s counts "
                    "real target and source tokens (padding not counted)\n", rc_.data.dir.c_str(),
                    static_cast<unsigned long long>(rc_.train_pairs->size()),
                    static_cast<unsigned long long>(rc_.val_pairs->size()),
                    static_cast<long long>(cfg_.train.batch_size * cfg_.train.grad_accum), cfg_.model.src_len);
    else
      std::snprintf(b, sizeof b, "data %s: %llu train / %llu val tokens | %lld tokens per step\n", rc_.data.dir.c_str(),
                    static_cast<unsigned long long>(rc_.train->size()), static_cast<unsigned long long>(rc_.val->size()),
                    static_cast<long long>(tokens_per_step));
    s += b;
    if (pairs_) {
      auto list = [](const std::vector<int>& v) {
        std::string r;
        for (int x : v) r += (r.empty() ? "" : ", ") + std::to_string(x);
        return "{" + r + "}";
      };
      s += "padding: each batch to the nearest of S " + list(src_lengths_) + " x T " + list(tgt_lengths_) +
           " (train.length_buckets = " + std::to_string(cfg_.train.length_buckets) +
           "; one training graph per shape used, one activation arena)\n";
    }
    s += memory_report_;
    if (world > 1)
      s += "data parallel: " + std::to_string(world) + " ranks (" + comm_.name() + ") | " + std::to_string(B_) +
           " sequences per rank per micro-batch | " +
           (optim_->zero() ? "ZeRO-1: AdamW state sharded, " + std::to_string(optim_->shard_count()) + " parameters on rank 0"
                           : "gradients in " + std::to_string(sync_->buckets()) + " bucket(s)") +
           "\n";
    std::snprintf(b, sizeof b, "MFU: %.3g FLOP/%s against %s%s\n", flops_per_token_, pairs_ ? "target token" : "token",
                  peak_.what.c_str(),
                  world > 1 ? " (per device)" : "");
    s += b;
    const double planned = static_cast<double>(tokens_per_step) * cfg_.train.steps;
    const double optimal = kChinchillaTokensPerParam * static_cast<double>(n_);
    if (planned < 0.5 * optimal) {
      std::snprintf(b, sizeof b, "warning: %.3g planned training tokens are far below the ~%.3g (%.0f per parameter) that are "
                    "compute-optimal for %lld parameters (%.2f tokens/parameter)\n",
                    planned, optimal, kChinchillaTokensPerParam, static_cast<long long>(n_), planned / n_);
      s += b;
    }
    return s;
  }
  const char* verb() const override { return "train"; }

  StepStats step(const TrainProgress& p) override {
    const TrainOptions& opt = *rc_.opt;
    const int world = comm_.world();
    if (p.step + 1 == opt.profile_from) be_->profiler_start();
    Range step_range(*be_, "step");
    be_->zero(grads_.data(), grads_.bytes());
    double loss = 0;
    int64_t real = 0, all = 0, target = 0;
    for (int64_t micro = 0; micro < cfg_.train.grad_accum; ++micro) {
      double scale = 1;
      if (pairs_) {
        pairs_->next_batch(comm_.rank(), batch_);
        Shape& sh = shape_for(batch_.S, batch_.T);
        const ModelGraph& mg = *sh.mg;
        fill_pair_inputs(batch_, mg, rc_.pair_vocab.pad(), inputs_);
        set_pair_inputs(*sh.ex, mg, inputs_);
        real += inputs_.real_tokens;
        all += inputs_.all_tokens;
        target += inputs_.target_tokens;
        // The mean over this micro-batch's real target tokens, not over B x T.
        scale = loss_scale(mg, inputs_.target_tokens);
        const float dloss = static_cast<float>(scale / static_cast<double>(cfg_.train.grad_accum));
        sh.ex->set_input(mg.dloss, &dloss, 4);
        last_sync_ = sh.sync;
        sh.sync->begin_micro_batch(micro + 1 == cfg_.train.grad_accum);
        run_micro_batch(world, sh);
        loss += sh.ex->fetch_f32(mg.loss)[0] * scale;
        continue;
      }
      if (stream_) {
        const bool fresh = stream_->next_batch(comm_.rank(), world, x_.data(), y_.data());
        const bool reset = cfg_.train.state_reset > 0 && micro == 0 && p.step % cfg_.train.state_reset == 0;
        if (fresh || reset) carrier_.reset();
      } else {
        loader_->next_batch(B_ * world, comm_.rank(), world, x_.data(), y_.data());
      }
      tx_.set_input(tg_.tokens, x_.data(), x_.size() * 4);
      tx_.set_input(tg_.targets, y_.data(), y_.size() * 4);
      last_sync_ = sync_.get();
      sync_->begin_micro_batch(micro + 1 == cfg_.train.grad_accum);
      run_micro_batch(world, full_);
      loss += tx_.fetch_f32(tg_.loss)[0];
    }
    ++eager_steps_;
    loss /= static_cast<double>(cfg_.train.grad_accum);
    if (comm_.rank() == opt.fault_rank &&
        std::find(opt.fault_steps.begin(), opt.fault_steps.end(), p.step + 1) != opt.fault_steps.end())
      loss = NAN;
    const double local_loss = loss;
    // Data parallelism: sum the ranks' gradients (the buckets went out during backward; ZeRO-1
    // reduce-scatters here), then the mean loss.
    {
      Range r(*be_, "allreduce");
      last_sync_->finish();  // the sync of the last micro-batch's graph, which issued the buckets
      if (world > 1) loss = comm_.allreduce_scalar(loss) / world;
    }
    Range opt_range(*be_, "optimizer");
    StepStats s;
    s.loss = loss;
    s.grad_norm = optim_->grad_norm(static_cast<const float*>(grads_.data()));
    s.lr = lr_at(p.step, cfg_.train.steps, cfg_.optim.lr, cfg_.optim.min_lr, cfg_.optim.warmup_steps);
    // The mean loss and the norm are the same numbers on every rank, so every rank skips
    // together; when it does, the ranks agree on which of them went non-finite.
    s.skipped = !std::isfinite(s.loss) || !std::isfinite(s.grad_norm);
    if (s.skipped) {
      const bool here = !std::isfinite(local_loss);
      s.bad_ranks = world > 1 ? static_cast<int>(comm_.allreduce_scalar(here ? 1.0 : 0.0)) : here;
      if (s.bad_ranks == 1)
        s.bad_rank = world > 1 ? static_cast<int>(comm_.allreduce_scalar(here ? comm_.rank() : 0.0)) : 0;
    }
    if (!s.skipped)
      optim_->update(weights_, static_cast<const float*>(grads_.data()), s.grad_norm, s.lr,
                     p.step + 1 - p.skipped_steps, static_cast<uint64_t>(cfg_.train.seed) * 1000003u + p.step);
    be_->synchronize();
    if (p.step + 1 == opt.profile_to) be_->profiler_stop();
    s.tokens = cfg_.train.batch_size * cfg_.train.grad_accum * T_;
    if (pairs_) {
      auto summed = [&](int64_t v) {  // over the ranks
        return world > 1 ? comm_.allreduce_scalar(static_cast<double>(v)) : static_cast<double>(v);
      };
      const double r = summed(real), a = summed(all);
      s.tokens = static_cast<int64_t>(r);
      s.padding = a > 0 ? 1.0 - r / a : 0.0;
      s.flops = flops_per_token_ * summed(target);
    } else {
      s.flops = flops_per_token_ * static_cast<double>(s.tokens);
    }
    return s;
  }

  bool validates_at(int64_t step, bool last) const override { return step % cfg_.train.eval_every == 0 || last; }
  double validate() override {
    if (pairs_)
      return eval_pairs(ex_, eg_, *rc_.val_pairs, rc_.pair_vocab, static_cast<uint64_t>(cfg_.train.seed) + 2,
                        static_cast<int>(cfg_.train.eval_steps), comm_);
    return eval_graph(ex_, eg_, *rc_.val, static_cast<uint64_t>(cfg_.train.seed) + 2,
                      static_cast<int>(cfg_.train.eval_steps), comm_);
  }

  LearnerState snapshot(TrainProgress& p) override {
    LearnerState st;
    weights_.download(st.params);
    optim_->gather(st.m, st.v);
    p.loader_rng = pairs_ ? pairs_->state() : stream_ ? stream_->state() : loader_->state();
    if (!carrier_.empty()) st.extra.rnn_state = carrier_.gather();
    return st;
  }
  std::string summary(const TrainResult& r) const override { return "final loss " + fmt("%.4f", r.last_loss); }
  double mfu(double flops_per_s, std::string* note) override {
    *note = remeasure_if_beaten(peak_, flops_per_s / comm_.world());
    return loom::mfu(flops_per_s, peak_, comm_.world());
  }
  RowScorer* scorer() override {
    if (pairs_) return nullptr;  // token rows mean nothing to a model of pairs
    if (!scorer_) scorer_ = make_graph_scorer(cfg_.model, *be_, weights_.graph_params(), B_);
    return scorer_.get();
  }

 private:
  // The flat buffer's size, once it is clear that the run fits the device (before anything is
  // allocated; memory_report.h counts what this learner allocates), with the report the banner
  // prints.
  int64_t fitting_param_count() {
    const MemoryTarget t = memory_target(*be_, comm_.world(), cfg_.dist.zero == 1);
    const MemoryUse use = memory_use(tg_.g, eg_.g, t);
    require_fits(cfg_, use, t);
    memory_report_ = memory_report(cfg_, use, t);
    return tg_.g.param_count;
  }

  // The training graph of target length T and source length S (pair kinds; others ignore S).
  // Called from the constructor too: it reads only cfg_, B_ and be_.
  ModelGraph train_graph(int T, int S) const {
    return build_model(cfg_.model, GraphMode::Train, B_, T, be_->float_dtype(), false, train_recompute(cfg_), S);
  }
  // The gradient sums of a training graph over the shared gradient buffer (ZeRO-1: its shards).
  std::unique_ptr<GradSync> new_sync(const Graph& g) {
    return std::make_unique<GradSync>(g, comm_, static_cast<float*>(grads_.data()),
                                      optim_->zero() ? optim_->shard_counts() : std::vector<int64_t>{});
  }

  // A training graph with its executor and gradient sync: the full shape (tg_, tx_, sync_),
  // or one of the smaller ones of pair kinds (owned).
  struct Shape {
    ModelGraph* mg = nullptr;
    Executor* ex = nullptr;
    GradSync* sync = nullptr;
    int captured = -1;  // its CUDA graph, once captured
    int64_t eager = 0;  // micro-batches it ran eagerly
    std::unique_ptr<ModelGraph> own_mg;
    std::unique_ptr<Executor> own_ex;
    std::unique_ptr<GradSync> own_sync;
  };

  // Profiling ranges per node; the gradient buckets hang on the same hook.
  void hook(Shape& sh) {
    sh.ex->on_node = [this, &sh](const Node& node, bool begin) {
      if (begin) {
        be_->range_push(node.scope.c_str());
      } else {
        be_->range_pop();
        sh.sync->after_node(static_cast<size_t>(&node - sh.mg->g.nodes.data()));
      }
    };
  }

  // The training graph of a pair batch of longest source s and target t (EOS included): the
  // nearest bucket lengths that hold them, built on first use.
  Shape& shape_for(int s, int t) {
    const int S = bucket_for(src_lengths_, s), T = bucket_for(tgt_lengths_, t);
    if (S == src_lengths_.back() && T == tgt_lengths_.back()) return full_;
    std::unique_ptr<Shape>& slot = shapes_[{S, T}];
    if (slot) return *slot;
    slot = std::make_unique<Shape>();
    Shape& sh = *slot;
    sh.own_mg = std::make_unique<ModelGraph>(train_graph(T, S));
    sh.mg = sh.own_mg.get();
    sh.own_ex = std::make_unique<Executor>(sh.mg->g, *be_, tx_);
    sh.ex = sh.own_ex.get();
    sh.ex->bind_params(weights_.graph_params(), grads_.data());
    sh.own_sync = new_sync(sh.mg->g);
    sh.sync = sh.own_sync.get();
    hook(sh);
    return sh;
  }

  // Forward + backward of one micro-batch on a training graph, then the state carried to the
  // next. After two eager runs a graph's micro-batch is captured once (CUDA graphs) and
  // replayed; a multi-rank step is not captured (its collectives are issued from the node hook).
  void run_micro_batch(int world, Shape& sh) {
    // Kept by the backend to capture again (Backend::replay): it holds the executor by pointer.
    auto micro_step = [this, ex = sh.ex] {
      {
        Range r(*be_, "forward");
        ex->forward();
      }
      {
        Range r(*be_, "backward");
        ex->backward();
      }
      carrier_.advance();
    };
    const bool ready = pairs_ ? sh.eager >= 2 : eager_steps_ >= 2;
    if (sh.captured >= 0) {
      be_->replay(sh.captured);
    } else if (be_->can_capture() && world == 1 && ready) {
      sh.captured = be_->capture(micro_step);
      be_->replay(sh.captured);
    } else {
      micro_step();
      ++sh.eager;
    }
  }

  const RunContext& rc_;
  const Config& cfg_;
  Comm& comm_;
  const ModelKind& kind_;
  const int T_, B_;
  std::unique_ptr<WindowLoader> loader_;
  std::unique_ptr<StreamLoader> stream_;
  std::unique_ptr<PairLoader> pairs_;
  PairBatch batch_;
  PairInputs inputs_;
  std::unique_ptr<Backend> be_;
  ModelGraph tg_, eg_;
  std::string memory_report_;  // set with n_
  const int64_t n_;
  DeviceWeights weights_;
  DeviceBuffer grads_;
  Executor tx_, ex_;
  StateCarrier carrier_, eval_carrier_;
  std::unique_ptr<AdamWState> optim_;
  std::unique_ptr<GradSync> sync_;
  std::vector<int32_t> x_, y_;
  Peak peak_;
  double flops_per_token_ = 0;
  Shape full_;
  std::map<std::pair<int, int>, std::unique_ptr<Shape>> shapes_;  // (S, T) -> a smaller pair graph
  std::vector<int> src_lengths_, tgt_lengths_;  // pair kinds' bucket lengths (the last: tg_'s)
  GradSync* last_sync_ = nullptr;
  int64_t eager_steps_ = 0;
  std::unique_ptr<RowScorer> scorer_;  // on be_, reading weights_: destroyed first
};

}  // namespace

std::unique_ptr<Learner> make_gradient_learner(const RunContext& rc, const CheckpointData* resume) {
  return std::make_unique<GradientLearner>(rc, resume);
}

}  // namespace loom
