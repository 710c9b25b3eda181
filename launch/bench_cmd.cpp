// bench_cmd.cpp: `loom bench train` (the training step on random tokens: launch/bench/
// bench_train.h) and `loom bench kernels` (every CUDA kernel: launch/bench/bench_kernels.h).
#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdio>
#include <optional>

#include "core/check.h"
#include "launch/bench/bench_kernels.h"
#include "launch/bench/bench_train.h"
#include "launch/command.h"

namespace loom {

namespace {

class BenchTrainCommand final : public Command {
 public:
  explicit BenchTrainCommand(CLI::App& app)
      : Command(bench_group(app).add_subcommand("train", "time training steps on random tokens")) {
    o_.model.n_layer = 4;
    o_.model.d_model = 256;
    o_.model.n_head = 4;
    o_.model.vocab = 8192;
    o_.model.seq_len = 256;
    cmd_->add_option("--device", o_.device, "auto | cpu | cuda")->capture_default_str();
    cmd_->add_option("--model", o_.model.kind, "model kind: " + model_kind_names())->capture_default_str();
    cmd_->add_option("--n-layer", o_.model.n_layer, "layers")->capture_default_str();
    cmd_->add_option("--d-model", o_.model.d_model, "width")->capture_default_str();
    cmd_->add_option("--n-head", o_.model.n_head, "heads (gpt)")->capture_default_str();
    cmd_->add_option("--d-hidden", o_.model.d_hidden, "ffnn hidden width (0: 4 x d-model)")->capture_default_str();
    cmd_->add_option("--context", o_.model.context, "ffnn: previous tokens seen")->capture_default_str();
    cmd_->add_option("--vocab", o_.model.vocab, "vocabulary")->capture_default_str();
    cmd_->add_option("--batch", o_.batch, "sequences per step")->capture_default_str();
    cmd_->add_option("--seq-len", o_.model.seq_len, "sequence length (pair kinds: target length)")->capture_default_str();
    cmd_->add_option("--src-len", o_.model.src_len, "pair kinds: source length")->capture_default_str();
    cmd_->add_option("--n-enc-layer", o_.model.n_enc_layer, "encoder-decoder kinds: encoder layers")
        ->capture_default_str();
    cmd_->add_option("--n-dec-layer", o_.model.n_dec_layer, "encoder-decoder kinds: decoder layers")
        ->capture_default_str();
    cmd_->add_option("--steps", o_.steps, "timed steps")->capture_default_str();
    cmd_->add_option("--warmup", o_.warmup, "untimed steps first")->capture_default_str();
    cmd_->add_flag("--op-profile", o_.op_profile, "also print the time of every op kind per step");
    cmd_->add_option("--recompute", recompute_, "activations re-run in backward: none | attention | mlp | block (gpt)")
        ->capture_default_str();
  }
  int run() override {
    LOOM_USER_CHECK(!model_kind(o_.model.kind).counts(), "bench train: --model ", o_.model.kind,
                    " counts rather than trains (it has no training step to time)");
    validate_model(o_.model, "bench train");
    LOOM_USER_CHECK(o_.model.vocab >= 2 && o_.batch >= 1 && o_.steps >= 1,
                    "bench train: --vocab, --batch, --steps must be positive");
    const std::optional<Recompute> rc = parse_recompute(recompute_);
    LOOM_USER_CHECK(rc, "bench train: --recompute: '", recompute_, "' is not one of none, attention, mlp, block");
    LOOM_USER_CHECK(*rc == Recompute::None || model_kind(o_.model.kind).has_recompute_segments(),
                    "bench train: --recompute: --model ", o_.model.kind, " has no segments to recompute (only none)");
    o_.recompute = *rc;
    const BenchTrainResult r = bench_train(o_);
    std::printf("bench train | device %s | %s %s T=%d V=%d | batch %d | %lld parameters\n", o_.device.c_str(),
                o_.model.kind.c_str(), model_kind(o_.model.kind).describe(o_.model).c_str(), o_.model.seq_len,
                o_.model.vocab, o_.batch, static_cast<long long>(r.params));
    std::printf("arena %.1f MiB (planner's peak; recompute %s)\n", r.arena_bytes / 1048576.0, recompute_.c_str());
    std::printf("median %.1f ms/step over %d steps (after %d warm-up) | %.0f tokens/s | %.2f GFLOP/s "
                "(%.1f MFLOP/token)\n",
                r.median_ms, o_.steps, o_.warmup, r.tokens_per_s, r.gflops, r.flops_per_token / 1e6);
    for (const auto& [name, ms] : r.op_ms)
      std::printf("  %-18s %8.2f ms/step  %5.1f%%\n", name.c_str(), ms, 100.0 * ms / r.median_ms);
    if (r.gemm_gflops > 0)
      std::printf("matrix-product ceiling in this run: %.1f GFLOP/s (sgemm 1024^3) -> step at %.0f%% of it\n",
                  r.gemm_gflops, 100.0 * r.gflops / r.gemm_gflops);
    if (r.bound_share() > 0)
      std::printf("bound at this shape: the optimizer moves %.0f MB/step at %.1f GB/s measured now (%.1f ms) -> a step "
                  "with every FLOP at the ceiling reaches at most %.0f%% of it\n",
                  r.optimizer_bytes / 1e6, r.stream_gbs, r.optimizer_bytes / (r.stream_gbs * 1e6),
                  100.0 * r.bound_share());
    if (std::isnan(r.mfu))
      std::printf("MFU n/a (%s)\n", r.peak.c_str());
    else
      std::printf("MFU %.1f%% (peak: %s)\n", 100.0 * r.mfu, r.peak.c_str());
    return 0;
  }

 private:
  BenchTrainOptions o_;
  std::string recompute_ = "none";
};

class BenchKernelsCommand final : public Command {
 public:
  explicit BenchKernelsCommand(CLI::App& app)
      : Command(bench_group(app).add_subcommand("kernels",
                                                "time every CUDA kernel against ceilings measured in the same run")) {}
  int run() override { return bench_kernels_main(); }

 private:
};

}  // namespace

std::unique_ptr<Command> add_bench_train_command(CLI::App& app) { return std::make_unique<BenchTrainCommand>(app); }
std::unique_ptr<Command> add_bench_kernels_command(CLI::App& app) { return std::make_unique<BenchKernelsCommand>(app); }

}  // namespace loom
