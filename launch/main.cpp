// main.cpp: the `loom` command line. One flag table per subcommand (CLI11), so --help is
// generated from the parser and cannot drift. Bad input of any kind ends here as one line,
// "loom: error: <file or flag>: <problem>", and exit code 2.
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>

#include "engine/core/check.h"
#include "engine/data/bpe.h"
#include "engine/data/corpus.h"
#include "engine/data/shard.h"
#include "engine/data/tokenizer.h"
#include "engine/backend/device.h"
#include "engine/train/bench.h"
#include "engine/train/checkpoint.h"
#include "engine/train/config.h"
#include "engine/train/progress.h"
#include "engine/train/sampler.h"
#include "engine/train/trainer.h"
#include "launch/launch_cmd.h"
#include "launch/finetune_cmd.h"
#include "launch/io_cmd.h"

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

// A progress bar over corpus bytes on a terminal (ETA included); elsewhere the callers' plain
// lines. Created on the first report, when the corpus size is known.
struct ByteBar {
  std::optional<Progress> bar;
  const char* what;
  void operator()(uint64_t done, uint64_t total) {
    if (!bar) bar.emplace(what, static_cast<int64_t>(total));
    char note[64];
    std::snprintf(note, sizeof note, "%.1f / %.1f MiB", done / 1048576.0, total / 1048576.0);
    bar->update(static_cast<int64_t>(done), note);
    if (done >= total) bar->finish();
  }
};
bool on_terminal() { return isatty(fileno(stderr)) && isatty(fileno(stdout)); }

int cmd_prepare(const std::string& corpus, const std::string& tokenizer, const std::string& out, double val_fraction) {
  PrepareOptions po;
  po.val_fraction = val_fraction;
  ByteBar bar{{}, "loom prepare"};
  if (on_terminal()) po.progress = std::ref(bar);
  prepare_corpus(corpus, tokenizer, out, po);
  return 0;
}

int cmd_tokenizer_train(const std::string& corpus, int64_t vocab_size, const std::string& out) {
  LOOM_USER_CHECK(vocab_size >= 256, "--vocab-size: ", vocab_size,
                  " is too small (byte-level BPE starts from the 256 byte tokens)");
  LOOM_USER_CHECK(vocab_size <= (int64_t{1} << 24), "--vocab-size: ", vocab_size, " is too large (at most 16777216)");
  const std::string path = corpus_text_path(corpus);
  // Written beside --out and renamed into place at the end; opened first, so an unwritable
  // --out fails before the training time is spent, and removed on any failure.
  const std::string tmp = out + ".tmp." + std::to_string(::getpid());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  LOOM_USER_CHECK(f, out, ": cannot write the tokenizer file: ", std::strerror(errno));
  struct Cleanup {
    const std::string& p;
    std::FILE* f;
    bool keep = false;
    ~Cleanup() {
      if (f) std::fclose(f);
      if (!keep) std::remove(p.c_str());
    }
  } cleanup{tmp, f};
  ByteBar bar{{}, "loom tokenizer train: counting"};
  std::function<void(uint64_t, uint64_t)> progress;
  if (on_terminal()) progress = std::ref(bar);
  BpeTrainStats st;
  const BpeMerges m = train_bpe(path, static_cast<uint32_t>(vocab_size), &st, progress);
  const std::string text = serialize_bpe(m);
  // fsync before the rename: a crash leaves the old file or the new one, never a torn one.
  const bool wrote = std::fwrite(text.data(), 1, text.size(), f) == text.size() && std::fflush(f) == 0 &&
                     ::fsync(fileno(f)) == 0;
  cleanup.f = nullptr;
  LOOM_USER_CHECK(std::fclose(f) == 0 && wrote, out, ": cannot write the tokenizer file: ", std::strerror(errno));
  LOOM_USER_CHECK(std::rename(tmp.c_str(), out.c_str()) == 0, out, ": cannot rename the finished file into place");
  cleanup.keep = true;
  if (256 + m.merges.size() < static_cast<size_t>(vocab_size))
    std::printf("loom tokenizer train: the corpus ran out of pairs to merge after %zu merges\n", m.merges.size());
  std::printf("loom tokenizer train: %s: %.1f MiB, %llu pre-tokens (%llu distinct) -> %zu merges, vocabulary %zu, "
              "in %.2f s -> %s\n",
              path.c_str(), st.bytes / 1048576.0, static_cast<unsigned long long>(st.pieces),
              static_cast<unsigned long long>(st.distinct_pieces), m.merges.size(), 256 + m.merges.size(), st.seconds,
              out.c_str());
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
  // Data parallelism: the ranks come from the environment (loom launch, torchrun, srun, mpirun).
  const std::unique_ptr<Comm> comm = comm_for_train(cfg);
  opt.comm = comm.get();
  train(cfg, opt);  // an interrupted run has checkpointed: success (exit 0) as well
  return 0;
}

// --stop values understand \n, \t, \r and \\, so a newline needs no shell quoting.
std::string unescape(const std::string& s) {
  std::string r;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      r += s[i];
      continue;
    }
    const char c = s[++i];
    r += c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c;
    if (c != 'n' && c != 't' && c != 'r' && c != '\\') r.insert(r.size() - 1, 1, '\\');  // not an escape: keep it
  }
  return r;
}

// --prompt-file: one prompt per line; blank lines are skipped, a trailing \r is dropped.
std::vector<std::pair<std::string, std::string>> read_prompts(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  LOOM_USER_CHECK(f.good(), path, ": cannot open prompt file");
  std::vector<std::pair<std::string, std::string>> prompts;  // (where, text)
  std::string line;
  for (int n = 1; std::getline(f, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) prompts.emplace_back(path + ":" + std::to_string(n), line);
  }
  LOOM_USER_CHECK(!f.bad(), path, ": cannot read prompt file");
  LOOM_USER_CHECK(!prompts.empty(), path, ": no prompts (one prompt per line; blank lines are skipped)");
  return prompts;
}

// Streams generated text to stdout and ends it at the first stop string, which is not
// printed. Text that might be the beginning of a stop string is held back until it is not.
class StopFilter {
 public:
  explicit StopFilter(const std::vector<std::string>& stops) : stops_(stops) {}
  // Adds decoded bytes; returns true once a stop string has appeared.
  bool add(const std::string& bytes) {
    const size_t from = text_.size();
    text_ += bytes;
    size_t cut = std::string::npos;
    for (const std::string& s : stops_) {
      // Only matches that end in the new bytes are new.
      const size_t start = from >= s.size() ? from - s.size() + 1 : 0;
      const size_t at = text_.find(s, start);
      if (at != std::string::npos) cut = std::min(cut, at);
    }
    if (cut != std::string::npos) {
      emit(cut);
      return true;
    }
    size_t hold = 0;  // longest tail that is a proper prefix of a stop string
    for (const std::string& s : stops_)
      for (size_t k = std::min(s.size() - 1, text_.size()); k > hold; --k)
        if (text_.compare(text_.size() - k, k, s, 0, k) == 0) {
          hold = k;
          break;
        }
    emit(text_.size() - hold);
    return false;
  }
  void flush() { emit(text_.size()); }

 private:
  void emit(size_t upto) {
    if (upto > printed_) std::fwrite(text_.data() + printed_, 1, upto - printed_, stdout);
    printed_ = std::max(printed_, upto);
    std::fflush(stdout);
  }
  const std::vector<std::string>& stops_;
  std::string text_;
  size_t printed_ = 0;
};
struct StopReached {};

int cmd_sample(const std::string& ckpt, const std::string& prompt, const std::string& device, SampleOptions o,
               const std::string& prompt_file, std::vector<std::string> stops) {
  // (CLI11 refuses both at once.)
  LOOM_USER_CHECK(!prompt_file.empty() || !prompt.empty(),
                  "--prompt: empty prompt (give at least one character, or --prompt-file FILE)");
  for (std::string& s : stops) {
    s = unescape(s);
    LOOM_USER_CHECK(!s.empty(), "--stop: empty stop string");
  }
  LOOM_USER_CHECK(o.max_new_tokens >= 1, "--max-new-tokens: must be >= 1");
  LOOM_USER_CHECK(o.temperature > 0 || o.greedy, "--temperature: must be > 0 (or use --greedy)");
  LOOM_USER_CHECK(o.top_k >= 0, "--top-k: must be >= 0");
  LOOM_USER_CHECK(o.top_p > 0 && o.top_p <= 1, "--top-p: must be in (0, 1]");
  const auto prompts =
      prompt_file.empty() ? std::vector<std::pair<std::string, std::string>>{{"--prompt", prompt}} : read_prompts(prompt_file);
  CheckpointData ck = load_checkpoint(ckpt, false);
  auto tok = make_tokenizer(ck.tokenizer);
  std::vector<std::vector<int32_t>> prompt_ids;
  for (const auto& [where, text] : prompts) {
    std::vector<int32_t> ids;
    for (uint32_t t : tok->encode(text)) {
      LOOM_USER_CHECK(static_cast<int64_t>(t) < ck.model.vocab, where, ": token ", t,
                      " is outside the checkpoint's vocabulary of ", ck.model.vocab);
      ids.push_back(static_cast<int32_t>(t));
    }
    LOOM_USER_CHECK(!ids.empty(), where, ": encodes to no tokens");
    prompt_ids.push_back(std::move(ids));
  }
  auto be = make_backend(device);
  Decoder dec(ck.model, ck.params, *be, &ck.counts);
  // Each prompt from its own fresh context and the same seed, so a prompt's sample does not
  // depend on its place in the file. With a prompt file every sample gets a header line.
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (!prompt_file.empty()) std::printf("=== sample %zu of %zu (%s) ===\n", i + 1, prompts.size(), prompts[i].first.c_str());
    std::fputs(prompts[i].second.c_str(), stdout);
    StopFilter out(stops);
    try {
      generate(dec, prompt_ids[i], o, [&](int32_t t) {
        const uint32_t u = static_cast<uint32_t>(t);
        if (out.add(tok->decode(std::span<const uint32_t>(&u, 1)))) throw StopReached{};  // ends generate()
      });
      out.flush();
    } catch (const StopReached&) {
    }
    std::fputs("\n", stdout);
  }
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
  const double loss = evaluate(ck.model, data, ck.params, device, batch, batches, 4242, &ck.counts);
  std::printf("checkpoint %s\ndata %s (val split, %d batches of %d x %d tokens)\nval loss %.4f nats/token | "
              "perplexity %.3f | %.4f bits/token\n",
              ck.dir.c_str(), data.c_str(), batches, batch, ck.model.seq_len, loss, std::exp(loss), loss / std::log(2.0));
  return 0;
}

int cmd_bench_train(BenchTrainOptions o) {
  LOOM_USER_CHECK(is_graph_kind(o.model.kind), "--model: unknown model '", o.model.kind,
                  "' (expected gpt, lstm, gru, rnn or ffnn)");
  LOOM_USER_CHECK(o.model.n_layer >= 1 && o.model.d_model >= 1, "--n-layer, --d-model: must be positive");
  LOOM_USER_CHECK(o.model.kind != "gpt" || (o.model.n_head >= 1 && o.model.d_model % o.model.n_head == 0),
                  "--d-model: must be a multiple of --n-head");
  LOOM_USER_CHECK(o.model.kind != "ffnn" || o.model.context >= 1, "--context: must be >= 1 for ffnn");
  LOOM_USER_CHECK(o.model.vocab >= 2 && o.batch >= 1 && o.steps >= 1 && o.model.seq_len >= 1,
                  "bench train: --vocab, --batch, --steps, --seq-len must be positive");
  const BenchTrainResult r = bench_train(o);
  std::printf("bench train | device %s | %s L=%d H=%d C=%d T=%d V=%d | batch %d | %lld parameters\n",
              o.device.c_str(), o.model.kind.c_str(), o.model.n_layer, o.model.n_head, o.model.d_model,
              o.model.seq_len, o.model.vocab, o.batch, static_cast<long long>(r.params));
  std::printf("median %.1f ms/step over %d steps (after %d warm-up) | %.0f tokens/s | %.2f GFLOP/s "
              "(%.1f MFLOP/token = 6N%s)\n",
              r.median_ms, o.steps, o.warmup, r.tokens_per_s, r.gflops, r.flops_per_token / 1e6,
              o.model.kind == "gpt" ? " + 12LTC" : "");
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
  prep->add_option("--tokenizer", tokenizer,
                   "byte | gpt2 (GPT-2's 50257-token vocabulary) | FILE (written by `loom tokenizer train`)")
      ->capture_default_str();
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

  std::string tcorpus, tout;
  int64_t tvocab = 0;
  auto* tk = app.add_subcommand("tokenizer", "tokenizers");
  tk->require_subcommand(1);
  auto* tkt = tk->add_subcommand("train", "learn a byte-level BPE vocabulary (GPT-2 pre-tokenization) from a corpus");
  tkt->add_option("--corpus", tcorpus, "kjv or a text file")->required();
  tkt->add_option("--vocab-size", tvocab, "vocabulary size: 256 byte tokens + merges")->required();
  tkt->add_option("--out", tout, "tokenizer file to write (JSON; use with loom prepare --tokenizer FILE)")->required();

  std::string ckpt, prompt, prompt_file, sdevice = "auto";
  std::vector<std::string> stops;
  SampleOptions so;
  auto* sa = app.add_subcommand("sample", "generate text from a checkpoint");
  sa->add_option("--checkpoint", ckpt, "checkpoint folder, run folder or its latest")->required();
  auto* sa_prompt = sa->add_option("--prompt", prompt, "text to continue");
  sa->add_option("--prompt-file", prompt_file, "file of prompts, one per line (blank lines skipped), sampled in turn")
      ->excludes(sa_prompt);
  sa->add_option("--stop", stops,
                 "end a sample where this text appears (not printed); repeatable; \\n, \\t, \\r, \\\\ are escapes")
      ->allow_extra_args(false);
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
  bt->add_option("--model", bo.model.kind, "model kind: gpt, lstm, gru, rnn, ffnn")->capture_default_str();
  bt->add_option("--n-layer", bo.model.n_layer, "layers")->capture_default_str();
  bt->add_option("--d-model", bo.model.d_model, "width")->capture_default_str();
  bt->add_option("--n-head", bo.model.n_head, "heads (gpt)")->capture_default_str();
  bt->add_option("--d-hidden", bo.model.d_hidden, "ffnn hidden width (0: 4 x d-model)")->capture_default_str();
  bt->add_option("--context", bo.model.context, "ffnn: previous tokens seen")->capture_default_str();
  bt->add_option("--vocab", bo.model.vocab, "vocabulary")->capture_default_str();
  bt->add_option("--batch", bo.batch, "sequences per step")->capture_default_str();
  bt->add_option("--seq-len", bo.model.seq_len, "sequence length")->capture_default_str();
  bt->add_option("--steps", bo.steps, "timed steps")->capture_default_str();
  bt->add_option("--warmup", bo.warmup, "untimed steps first")->capture_default_str();
  bt->add_flag("--op-profile", bo.op_profile, "also print the time of every op kind per step");

  auto* bk = be->add_subcommand("kernels", "time every CUDA kernel against ceilings measured in the same run");
  const LaunchCli dist_cli(app, *be);  // `loom launch`, `loom bench comm`
  auto io = add_io_commands(app);  // loom import / loom export (launch/io_cmd.cpp)
  auto ft = add_finetune_command(app);  // loom finetune (launch/finetune_cmd.cpp)

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
  if (sa->parsed()) return cmd_sample(ckpt, prompt, sdevice, so, prompt_file, stops);
  if (tkt->parsed()) return cmd_tokenizer_train(tcorpus, tvocab, tout);
  if (ev->parsed()) return cmd_eval(eckpt, edata, edevice, ebatch, ebatches);
  if (bt->parsed()) return cmd_bench_train(bo);
  if (const int rc = dist_cli.run(); rc >= 0) return rc;
  if (io->parsed()) return io->run();
  if (ft->parsed()) return ft->run();
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
  } catch (const loom::CommError& e) {  // another rank was lost (loom launch tells the two apart)
    std::fflush(stdout);
    std::fprintf(stderr, "loom: error: %s\n", e.what());
    return loom::kCommLostExit;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "loom: error: %s\n", e.what());
    return 1;
  }
}
