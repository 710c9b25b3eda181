// plan_cmd.cpp: `loom plan --config FILE [--device cpu|h100|h200|a100|...] [--gpus N]
// [--tokens T | --hours H] [--mfu F] [--vocab V] [--section.key value ...]`: what a run of the
// config needs before it is launched (launch/run/plan.h). A GPU is planned from the peak table
// (engine/backend/peak.h) at a stated MFU; the CPU at the rate this machine's training step
// reaches now (`loom bench train`'s measurement: the sgemm ceiling x the step's share of it).
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>

#include "core/check.h"
#include "engine/backend/peak.h"
#include "engine/data/pairs.h"
#include "engine/data/shard.h"
#include "launch/bench/bench_train.h"
#include "launch/command.h"
#include "launch/run/plan.h"
#include "launch/run/progress.h"

namespace loom {

namespace {

// GPT-2's BPE vocabulary: what the GPT-2 configs train on, and what a plan assumes when the
// config's data is not prepared here.
constexpr int kGpt2Vocab = 50257;
// A step a plan times on this CPU costs at most this many FLOPs (about a second on two cores);
// larger models are timed on probe_model()'s shape, whose share of the sgemm ceiling stands in.
constexpr double kTimedStepFlops = 5e10;

class PlanCommand final : public Command {
 public:
  explicit PlanCommand(CLI::App& app)
      : Command(app.add_subcommand("plan", "memory, FLOPs, compute-optimal tokens and time of a config's run, "
                                           "before launching it")) {
    cmd_->add_option("--config", config_, "TOML config (configs/gpt2-124m.toml, ...)")->required();
    std::string keys = "cpu";
    for (const std::string& k : gpu_keys()) keys += " | " + k;
    cmd_->add_option("--device", device_, keys + " (a GPU from the peak table; cpu: this machine)")
        ->capture_default_str();
    cmd_->add_option("--gpus", gpus_, "data-parallel ranks, one device each")->capture_default_str();
    cmd_->add_option("--tokens", tokens_, "tokens to train (default: train.steps x the tokens of a step)");
    cmd_->add_option("--hours", hours_, "hours to train: the tokens they buy at the rate");
    cmd_->add_option("--mfu", mfu_,
                     "share of the device's peak the run reaches (default: 0.40 on a GPU; on cpu the share the "
                     "training step measures now)");
    cmd_->add_option("--vocab", vocab_, "vocabulary (default: the prepared data's, else 50257, GPT-2's BPE)");
    cmd_->allow_extras();
  }

  int run() override {
    Overrides ov = parse_overrides(cmd_->remaining());
    LOOM_USER_CHECK(gpus_ >= 1 && gpus_ <= 4096, "--gpus: ", gpus_, " is not in [1, 4096]");
    LOOM_USER_CHECK(!(tokens_ && hours_), "--tokens, --hours: give one of them, not both");
    LOOM_USER_CHECK(!tokens_ || (std::isfinite(*tokens_) && *tokens_ >= 1 && *tokens_ <= 1e18), "--tokens: ", *tokens_,
                    " is not in [1, 1e18]");
    LOOM_USER_CHECK(!hours_ || (std::isfinite(*hours_) && *hours_ > 0 && *hours_ <= 1e6), "--hours: ", *hours_,
                    " is not in (0, 1e6]");
    LOOM_USER_CHECK(!mfu_ || (std::isfinite(*mfu_) && *mfu_ > 0 && *mfu_ <= 1), "--mfu: ", *mfu_,
                    " is not in (0, 1]");
    LOOM_USER_CHECK(!vocab_ || (*vocab_ >= 2 && *vocab_ <= (1 << 24)), "--vocab: ", *vocab_, " is not in [2, 2^24]");

    PlanInput in;
    in.config_path = config_;
    in.cfg = load_config(config_, ov);
    in.target = memory_target(device_, gpus_, in.cfg.dist.zero == 1);
    resolve_vocab(in);
    in.tokens = tokens_.value_or(0);
    in.hours = hours_.value_or(0);
    if (!model_kind(in.cfg.model.kind).counts()) set_rate(in);
    std::printf("%s", plan_report(in).c_str());
    return 0;
  }

 private:
  // model.vocab as `loom train` would set it: from the prepared data when it is here.
  void resolve_vocab(PlanInput& in) const {
    ModelConfig& m = in.cfg.model;
    const std::string& path = in.cfg.data.path;
    if (vocab_) {
      m.vocab = *vocab_;
      in.vocab_note = "vocabulary " + std::to_string(m.vocab) + " from --vocab";
    } else if (!path.empty() && std::filesystem::exists(path) && model_kind(m.kind).learns_pairs()) {
      m.vocab = static_cast<int>(open_pair_folder(path).vocab.size());
    } else if (!path.empty() && std::filesystem::exists(path)) {
      const DataFolder d = open_data_folder(path);
      m.vocab = static_cast<int>(d.vocab_size);
      resolve_eot_id(m, d.eot_id, d.tokenizer);
    } else {
      m.vocab = kGpt2Vocab;
      in.vocab_note = "data.path " + path + " is not prepared here: vocabulary " + std::to_string(kGpt2Vocab) +
                      " (GPT-2's BPE) assumed; --vocab V to plan another";
    }
    // The end-of-text id masks attention; it changes no size.
    if (m.document_mask && m.eot_id < 0) m.eot_id = m.vocab - 1;
  }

  void set_rate(PlanInput& in) const {
    const ModelConfig& m = in.cfg.model;
    if (const GpuSpec* g = find_gpu(device_)) {
      const double u = mfu_.value_or(kDefaultPlanMfu);
      in.device_flops = g->bf16_flops * u;
      in.rate_what = (in.target.world > 1 ? std::to_string(in.target.world) + " x " : "") + g->name + ": " +
                     fmt("%.1f", g->bf16_flops / 1e12) + " TFLOP/s dense bf16 x MFU " + fmt("%.2f", u) +
                     (mfu_ ? " (--mfu)" : " (assumed; --mfu to change)");
      return;
    }
    // This CPU: the ranks share its cores, so the run goes at one device's rate.
    in.rate_per_device = false;
    const double fpt = model_kind(m.kind).flops_per_token(m);
    if (mfu_) {
      const double sgemm = measure_cpu_sgemm_flops();
      in.device_flops = sgemm * *mfu_;
      in.rate_what = "this CPU's sgemm ceiling measured now, " + fmt("%.1f", sgemm / 1e9) + " GFLOP/s, x --mfu " +
                     fmt("%.2f", *mfu_);
      return;
    }
    BenchTrainOptions o;
    o.device = "cpu";
    o.steps = 3;
    o.warmup = 1;
    const double step_flops = fpt * m.seq_len;
    std::string on;
    if (step_flops <= kTimedStepFlops) {
      o.model = m;
      o.batch = static_cast<int>(std::min<double>(per_rank_batch(in.cfg, in.target.world), kTimedStepFlops / step_flops));
      on = "this config's step at micro-batch " + std::to_string(o.batch);
    } else {
      o.model = probe_model();
      o.batch = 4;
      on = "a gpt L=4 H=4 C=256 T=128 V=8192 step (this config's is too large to time here)";
    }
    const BenchTrainResult r = bench_train(o);
    const double share = std::isnan(r.mfu) ? 1.0 : r.mfu;  // NaN: the step outran the ceiling's measurement
    in.device_flops = r.gemm_gflops * 1e9 * share;
    in.rate_what = "this CPU's sgemm ceiling measured now, " + fmt("%.1f", r.gemm_gflops) + " GFLOP/s, x the share " +
                   fmt("%.2f", share) + " measured on " + on;
  }

  // ModelConfig's defaults are the default job's GPT (L=4, H=4, C=256).
  static ModelConfig probe_model() {
    ModelConfig p;
    p.seq_len = 128;
    p.vocab = 8192;
    return p;
  }

  std::string config_, device_ = "cpu";
  int gpus_ = 1;
  std::optional<double> tokens_, hours_, mfu_;
  std::optional<int> vocab_;
};

}  // namespace

std::unique_ptr<Command> add_plan_command(CLI::App& app) { return std::make_unique<PlanCommand>(app); }

}  // namespace loom
