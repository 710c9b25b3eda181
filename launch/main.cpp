// main.cpp: the `loom` command line. One flag table per subcommand (CLI11), so --help is
// generated from the parser and cannot drift. Bad input of any kind ends here as one line,
// "loom: error: <file or flag>: <problem>", and exit code 2.
#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <iostream>

#include "engine/core/check.h"
#include "engine/data/shard.h"
#include "engine/data/tokenizer.h"
#include "engine/backend/device.h"
#include "engine/train/bench.h"
#include "engine/train/checkpoint.h"
#include "engine/train/config.h"
#include "engine/train/sampler.h"
#include "engine/train/trainer.h"

namespace loom {
// In the CUDA backend's object library (real or emulated), when linked.
int bench_kernels_main() __attribute__((weak));
namespace {

// --section.key value | --section.key=value pairs left over by CLI11.
Overrides parse_overrides(const std::vector<std::string>& extras) {
  Overrides o;
  for (size_t i = 0; i < extras.size(); ++i) {
    const std::string& a = extras[i];
    LOOM_USER_CHECK(a.rfind("--", 0) == 0 && a.size() > 2, "unexpected argument '", a,
                    "' (config overrides look like --section.key value)");
    std::string key = a.substr(2), value;
    const auto eq = key.find('=');
    if (eq != std::string::npos) {
      value = key.substr(eq + 1);
      key = key.substr(0, eq);
    } else {
      LOOM_USER_CHECK(i + 1 < extras.size(), a, ": missing value");
      value = extras[++i];
    }
    o.emplace_back(key, value);
  }
  return o;
}

int cmd_prepare(const std::string& corpus, const std::string& tokenizer, const std::string& out, double val_fraction) {
  prepare_corpus(corpus, tokenizer, out, val_fraction);
  return 0;
}

int cmd_train(const std::string& config_path, const std::string& device, bool resume, const std::string& profile,
              const std::vector<std::string>& extras) {
  Overrides ov = parse_overrides(extras);
  if (!device.empty()) ov.emplace_back("device", device);
  Config cfg = load_config(config_path, ov);
  TrainOptions opt;
  opt.resume = resume;
  if (!profile.empty()) {
    long long a = 0, b = 0;
    char tail = 0;
    LOOM_USER_CHECK(std::sscanf(profile.c_str(), "%lld:%lld%c", &a, &b, &tail) == 2 && a >= 1 && b >= a,
                    "--profile-steps: expected A:B with 1 <= A <= B, got '", profile, "'");
    opt.profile_from = a;
    opt.profile_to = b;
  }
  train(cfg, opt);  // an interrupted run has checkpointed: success (exit 0) as well
  return 0;
}

int cmd_sample(const std::string& ckpt, const std::string& prompt, const std::string& device, SampleOptions o) {
  LOOM_USER_CHECK(!prompt.empty(), "--prompt: empty prompt (give at least one character)");
  LOOM_USER_CHECK(o.max_new_tokens >= 1, "--max-new-tokens: must be >= 1");
  LOOM_USER_CHECK(o.temperature > 0 || o.greedy, "--temperature: must be > 0 (or use --greedy)");
  LOOM_USER_CHECK(o.top_k >= 0, "--top-k: must be >= 0");
  LOOM_USER_CHECK(o.top_p > 0 && o.top_p <= 1, "--top-p: must be in (0, 1]");
  CheckpointData ck = load_checkpoint(ckpt, false);
  auto tok = make_tokenizer(ck.tokenizer);
  std::vector<int32_t> ids;
  for (uint32_t t : tok->encode(prompt)) {
    LOOM_USER_CHECK(static_cast<int64_t>(t) < ck.model.vocab, "--prompt: token ", t,
                    " is outside the checkpoint's vocabulary of ", ck.model.vocab);
    ids.push_back(static_cast<int32_t>(t));
  }
  LOOM_USER_CHECK(!ids.empty(), "--prompt: encodes to no tokens");
  auto be = make_backend(device);
  Decoder dec(ck.model, ck.params, *be);
  std::fputs(prompt.c_str(), stdout);
  generate(dec, ids, o, [&](int32_t t) {
    const uint32_t u = static_cast<uint32_t>(t);
    std::fputs(tok->decode(std::span<const uint32_t>(&u, 1)).c_str(), stdout);
    std::fflush(stdout);
  });
  std::fputs("\n", stdout);
  return 0;
}

int cmd_eval(const std::string& ckpt, std::string data, const std::string& device, int batch, int batches) {
  CheckpointData ck = load_checkpoint(ckpt, false);
  if (data.empty()) {
    LOOM_USER_CHECK(!ck.config_toml.empty(), ck.dir, ": no config.toml; pass --data");
    data = parse_config_text(ck.config_toml, ck.dir + "/config.toml", {}).data.path;
  }
  LOOM_USER_CHECK(batch >= 1, "--batch-size: must be >= 1");
  LOOM_USER_CHECK(batches >= 1, "--batches: must be >= 1");
  const double loss = evaluate(ck.model, data, ck.params, device, batch, batches, 4242);
  std::printf("checkpoint %s\ndata %s (val split, %d batches of %d x %d tokens)\nval loss %.4f nats/token | "
              "perplexity %.3f | %.4f bits/token\n",
              ck.dir.c_str(), data.c_str(), batches, batch, ck.model.seq_len, loss, std::exp(loss), loss / std::log(2.0));
  return 0;
}

int cmd_bench_train(BenchTrainOptions o) {
  LOOM_USER_CHECK(o.model.kind == "gpt", "--model: unknown model '", o.model.kind, "' (expected gpt)");
  LOOM_USER_CHECK(o.model.n_layer >= 1 && o.model.n_head >= 1 && o.model.d_model % o.model.n_head == 0,
                  "--d-model: must be a multiple of --n-head");
  LOOM_USER_CHECK(o.model.vocab >= 2 && o.batch >= 1 && o.steps >= 1 && o.model.seq_len >= 1,
                  "bench train: --vocab, --batch, --steps, --seq-len must be positive");
  const BenchTrainResult r = bench_train(o);
  std::printf("bench train | device %s | gpt L=%d H=%d C=%d T=%d V=%d | batch %d | %lld parameters\n",
              o.device.c_str(), o.model.n_layer, o.model.n_head, o.model.d_model, o.model.seq_len, o.model.vocab,
              o.batch, static_cast<long long>(r.params));
  std::printf("median %.1f ms/step over %d steps (after %d warm-up) | %.0f tokens/s | %.2f GFLOP/s "
              "(%.1f MFLOP/token = 6N + 12LTC)\n",
              r.median_ms, o.steps, o.warmup, r.tokens_per_s, r.gflops, r.flops_per_token / 1e6);
  for (const auto& [name, ms] : r.op_ms)
    std::printf("  %-18s %8.2f ms/step  %5.1f%%\n", name.c_str(), ms, 100.0 * ms / r.median_ms);
  if (r.gemm_gflops > 0)
    std::printf("matrix-product ceiling in this run: %.1f GFLOP/s (sgemm 1024^3) -> step at %.0f%% of it\n",
                r.gemm_gflops, 100.0 * r.gflops / r.gemm_gflops);
  return 0;
}

int run(int argc, char** argv) {
  CLI::App app{"loom: pretrain language models with teacher forcing on CPU or GPU"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "help for every subcommand");

  std::string corpus = "kjv", tokenizer = "byte", out;
  double val_fraction = 0.05;
  auto* prep = app.add_subcommand("prepare", "turn a text corpus into token shards");
  prep->add_option("--corpus", corpus, "kjv (King James Bible, Debian's bible-kjv) or a text file")->capture_default_str();
  prep->add_option("--tokenizer", tokenizer, "tokenizer: byte")->capture_default_str();
  prep->add_option("--out", out, "output folder")->required();
  prep->add_option("--val-fraction", val_fraction, "share of tokens held out for validation")->capture_default_str();

  std::string config_path, device;
  bool resume = false;
  auto* tr = app.add_subcommand("train", "pretrain a model; any config key can be overridden as --section.key value");
  tr->add_option("--config", config_path, "TOML config (configs/default.toml, configs/tiny.toml, ...)")->required();
  tr->add_option("--device", device, "auto | cpu | cuda (overrides the config's device)");
  tr->add_flag("--resume", resume, "continue the run in log.run_dir from its latest checkpoint");
  std::string profile;
  tr->add_option("--profile-steps", profile,
                 "A:B: bracket steps A..B with cudaProfilerStart/Stop (nsys --capture-range=cudaProfilerApi)");
  tr->allow_extras();
  tr->footer("config keys: " + [] {
    std::string s;
    for (const auto& k : config_keys()) s += (s.empty() ? "" : ", ") + k;
    return s;
  }());

  std::string ckpt, prompt, sdevice = "auto";
  SampleOptions so;
  auto* sa = app.add_subcommand("sample", "generate text from a checkpoint");
  sa->add_option("--checkpoint", ckpt, "checkpoint folder, run folder or its latest")->required();
  sa->add_option("--prompt", prompt, "text to continue")->required();
  sa->add_option("--max-new-tokens", so.max_new_tokens, "tokens to generate")->capture_default_str();
  sa->add_flag("--greedy", so.greedy, "always take the most likely token");
  sa->add_option("--temperature", so.temperature, "softmax temperature")->capture_default_str();
  sa->add_option("--top-k", so.top_k, "sample among the k most likely tokens (0 = all)")->capture_default_str();
  sa->add_option("--top-p", so.top_p, "nucleus: smallest set with this much probability")->capture_default_str();
  sa->add_option("--seed", so.seed, "random seed")->capture_default_str();
  sa->add_option("--device", sdevice, "auto | cpu | cuda")->capture_default_str();

  std::string eckpt, edata, edevice = "auto";
  int ebatch = 8, ebatches = 50;
  auto* ev = app.add_subcommand("eval", "validation loss and perplexity of a checkpoint");
  ev->add_option("--checkpoint", eckpt, "checkpoint folder, run folder or its latest")->required();
  ev->add_option("--data", edata, "prepared data folder (default: the run's data.path)");
  ev->add_option("--batch-size", ebatch, "sequences per batch")->capture_default_str();
  ev->add_option("--batches", ebatches, "batches of the val split")->capture_default_str();
  ev->add_option("--device", edevice, "auto | cpu | cuda")->capture_default_str();

  auto* be = app.add_subcommand("bench", "benchmarks");
  be->require_subcommand(1);
  BenchTrainOptions bo;
  bo.model.n_layer = 4;
  bo.model.d_model = 256;
  bo.model.n_head = 4;
  bo.model.vocab = 8192;
  bo.model.seq_len = 256;
  auto* bt = be->add_subcommand("train", "time training steps on random tokens");
  bt->add_option("--device", bo.device, "auto | cpu | cuda")->capture_default_str();
  bt->add_option("--model", bo.model.kind, "model kind")->capture_default_str();
  bt->add_option("--n-layer", bo.model.n_layer, "layers")->capture_default_str();
  bt->add_option("--d-model", bo.model.d_model, "width")->capture_default_str();
  bt->add_option("--n-head", bo.model.n_head, "heads")->capture_default_str();
  bt->add_option("--vocab", bo.model.vocab, "vocabulary")->capture_default_str();
  bt->add_option("--batch", bo.batch, "sequences per step")->capture_default_str();
  bt->add_option("--seq-len", bo.model.seq_len, "sequence length")->capture_default_str();
  bt->add_option("--steps", bo.steps, "timed steps")->capture_default_str();
  bt->add_option("--warmup", bo.warmup, "untimed steps first")->capture_default_str();
  bt->add_flag("--op-profile", bo.op_profile, "also print the time of every op kind per step");

  auto* bk = be->add_subcommand("kernels", "time every CUDA kernel against ceilings measured in the same run");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "loom: error: %s (see loom %s--help)\n", e.what(),
                 app.get_subcommands().empty() ? "" : (app.get_subcommands()[0]->get_name() + " ").c_str());
    return 2;
  }
  if (prep->parsed()) return cmd_prepare(corpus, tokenizer, out, val_fraction);
  if (tr->parsed()) return cmd_train(config_path, device, resume, profile, tr->remaining());
  if (sa->parsed()) return cmd_sample(ckpt, prompt, sdevice, so);
  if (ev->parsed()) return cmd_eval(eckpt, edata, edevice, ebatch, ebatches);
  if (bt->parsed()) return cmd_bench_train(bo);
  if (bk->parsed()) {
    LOOM_USER_CHECK(bench_kernels_main, "bench kernels: this build of loom has no CUDA kernels (configure with nvcc "
                                        "present, or -DLOOM_CUDA_EMULATION=ON to run them on the CPU)");
    return bench_kernels_main();
  }
  return 2;
}

}  // namespace
}  // namespace loom

int main(int argc, char** argv) {
  try {
    return loom::run(argc, argv);
  } catch (const loom::UserError& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "loom: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "loom: error: %s\n", e.what());
    return 1;
  }
}
