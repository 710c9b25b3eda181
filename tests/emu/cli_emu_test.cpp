// cli_emu_test.cpp: the CLI with the emulated CUDA device (build/loom-emu): `bench kernels`
// runs every kernel family, `train --device cuda` trains a tiny GPT, an LSTM and an encdec whose
// losses track the CPU backend's within bf16 tolerance, and `sample --beam` finds the CPU's
// hypotheses.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>
#include <sstream>

#include "tests/support/helpers.h"
#include "tests/support/pair_tasks.h"

namespace loom::test {
namespace {

RunResult run_emu(const std::vector<std::string>& args) { return run_binary(loom_emu_binary(), args); }
RunResult run_loom_args(const std::vector<std::string>& args) { return run_loom(args); }

std::vector<double> losses(const std::string& run_dir) {
  std::vector<double> r;
  for (const auto& m : read_metrics(run_dir)) r.push_back(m["loss"].get<double>());
  return r;
}

// `train --config CONFIG` (a file in d) on the CPU and on the emulated device, into run folders
// d/cpu and d/cuda: the two runs' metrics lines.
std::pair<std::vector<nlohmann::json>, std::vector<nlohmann::json>> train_on_both(const TempDir& d,
                                                                                  const std::string& config) {
  auto args = [&](const std::string& dev) {
    return std::vector<std::string>{"train", "--config", d / config, "--device", dev, "--log.run_dir", d / dev};
  };
  const RunResult c = run_loom(args("cpu"));
  EXPECT_EQ(c.rc, 0) << c.err;
  const RunResult g = run_emu(args("cuda"));
  EXPECT_EQ(g.rc, 0) << g.err << g.out;
  if (c.rc != 0 || g.rc != 0) return {};
  return {read_metrics(d / "cpu"), read_metrics(d / "cuda")};
}

TEST(CliEmu, BenchKernelsRunsEveryFamily) {
  if (!fs::exists(loom_emu_binary())) GTEST_SKIP() << "loom-emu not built";
  RunResult r = run_emu({"bench", "kernels"});
  ASSERT_EQ(r.rc, 0) << r.err << r.out;
  for (const char* k : {"residual_layernorm", "layernorm_bwd", "gelu", "gelu_bwd", "add", "bias_grad", "embedding",
                        "embedding_bwd", "softmax_xent", "softmax_xent_bwd", "adamw", "global_norm", "attention_fwd",
                        "attention_bwd", "attention_bidir_fwd", "attention_bidir_bwd", "cross_attention_fwd",
                        "cross_attention_bwd", "cross_attention_decode", "rnn_attention_dot_fwd", "rnn_attention_dot_bwd",
                        "rnn_attention_add_fwd", "rnn_attention_add_bwd", "lstm loom", "lstm cudnn"})
    EXPECT_NE(r.out.find(k), std::string::npos) << k << " missing from:\n" << r.out;
  EXPECT_EQ(r.out.find("nan"), std::string::npos) << r.out;
}

TEST(CliEmu, TrainOnEmulatedCudaTracksCpu) {
  if (!fs::exists(loom_emu_binary())) GTEST_SKIP() << "loom-emu not built";
  TempDir d;
  const std::string data = prepare_tiny_data(d.str(), 60000);
  std::ofstream(d / "tiny.toml") << tiny_config(data, d / "unused", 4);
  auto common = [&](const std::string& dev, const std::string& run) {
    return std::vector<std::string>{"train", "--config", d / "tiny.toml", "--device", dev, "--log.run_dir", d / run,
                                    "--train.eval_every", "100", "--train.batch_size", "2", "--optim.warmup_steps", "1"};
  };
  RunResult c = run_loom(common("cpu", "cpu"));
  ASSERT_EQ(c.rc, 0) << c.err;
  RunResult g = run_emu(common("cuda", "cuda"));
  ASSERT_EQ(g.rc, 0) << g.err << g.out;
  EXPECT_NE(g.out.find("device cuda (emulated)"), std::string::npos) << g.out;
  const auto a = losses(d / "cpu"), b = losses(d / "cuda");
  ASSERT_EQ(a.size(), 4u);
  ASSERT_EQ(b.size(), 4u);
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(b[i], a[i], 0.03 * a[i]) << "step " << i + 1;
  EXPECT_LT(b.back(), b.front());
  // The emulated run's checkpoint samples on the CPU.
  RunResult s = run_loom({"sample", "--checkpoint", d / "cuda", "--prompt", "The", "--max-new-tokens", "10", "--greedy"});
  EXPECT_EQ(s.rc, 0) << s.err;
}

// Beam search on the emulated device (the KV cache saved and restored in device memory, bf16):
// the same hypotheses as on the CPU, with log-probabilities within bf16 tolerance.
TEST(CliEmu, BeamSearchOnEmulatedCudaTracksCpu) {
  if (!fs::exists(loom_emu_binary())) GTEST_SKIP() << "loom-emu not built";
  TempDir d;
  const std::string data = prepare_tiny_data(d.str(), 60000);
  std::ofstream(d / "tiny.toml") << tiny_config(data, d / "run", 20);
  RunResult t = run_loom({"train", "--config", d / "tiny.toml"});
  ASSERT_EQ(t.rc, 0) << t.err;
  auto beam = [&](RunResult (*run)(const std::vector<std::string>&), const std::string& dev) {
    RunResult r = run({"sample", "--checkpoint", d / "run", "--prompt", "The lord", "--max-new-tokens", "8", "--beam",
                       "3", "--n-best", "3", "--device", dev});
    EXPECT_EQ(r.rc, 0) << r.err;
    std::map<std::string, double> by_text;  // hypothesis -> log-prob
    std::istringstream in(r.out);
    for (std::string head, text; std::getline(in, head) && std::getline(in, text);)
      by_text[text] = std::stod(head.substr(head.find("log-prob ") + 9));
    return by_text;
  };
  const auto cpu = beam(&run_loom_args, "cpu"), gpu = beam(&run_emu, "cuda");
  ASSERT_EQ(cpu.size(), 3u);
  ASSERT_EQ(gpu.size(), 3u);
  int same = 0;
  for (const auto& [text, lp] : gpu)
    if (cpu.count(text)) {
      ++same;
      EXPECT_NEAR(lp, cpu.at(text), 0.01 * std::fabs(cpu.at(text))) << text;
    }
  EXPECT_GE(same, 2) << "the devices found different hypotheses";
}

// A recurrent kind through the whole trainer on the emulated device: the carried state, the
// per-step products and the cell kernels, four steps against the CPU backend.
TEST(CliEmu, LstmTrainOnEmulatedCudaTracksCpu) {
  if (!fs::exists(loom_emu_binary())) GTEST_SKIP() << "loom-emu not built";
  TempDir d;
  const std::string data = prepare_tiny_data(d.str(), 60000);
  std::ofstream(d / "lstm.toml") << "device = \"cpu\"\n[model]\nkind = \"lstm\"\nn_layer = 2\nd_model = 16\n"
                                 << "seq_len = 16\n[data]\npath = \"" << data << "\"\n[train]\nsteps = 4\n"
                                 << "batch_size = 2\neval_every = 100\neval_steps = 1\n[optim]\nlr = 1e-2\n"
                                 << "warmup_steps = 1\n";
  const auto [a, b] = train_on_both(d, "lstm.toml");
  ASSERT_EQ(a.size(), 4u);
  ASSERT_EQ(b.size(), 4u);
  for (size_t i = 0; i < a.size(); ++i) {
    const double la = a[i]["loss"].get<double>();
    EXPECT_NEAR(b[i]["loss"].get<double>(), la, 0.03 * la) << "step " << i + 1;
  }
}

// A model whose attention the CUDA kernels do not have (head dim 12; an encdec's cross-
// attention alike) is a one-line error before the first step, not a failed check inside it.
TEST(CliEmu, AHeadDimTheKernelsLackIsAOneLineError) {
  if (!fs::exists(loom_emu_binary())) GTEST_SKIP() << "loom-emu not built";
  TempDir d;
  const std::string data = prepare_tiny_data(d.str(), 60000);
  std::ofstream(d / "tiny.toml") << tiny_config(data, d / "run", 2);
  RunResult r = run_emu({"train", "--config", d / "tiny.toml", "--device", "cuda", "--model.d_model", "48",
                         "--model.n_head", "4"});
  expect_user_error(r, "model.d_model / model.n_head = 12: the CUDA attention kernels take head dims 16, 32, 64 and 128");
  EXPECT_FALSE(fs::exists(d / "run/checkpoints")) << "it trained";
  const std::string pairs = prepare_pairs(d, "sort", 200);
  std::ofstream(d / "encdec.toml") << encdec_config(pairs, d / "run2", 2);
  r = run_emu({"train", "--config", d / "encdec.toml", "--device", "cuda", "--model.n_head", "8"});
  expect_user_error(r, "model.d_model / model.n_head = 8:");
}

// A pair kind through the whole trainer on the emulated device: batches of several padded
// shapes (train.length_buckets), each on its own graph, all in one activation arena, six steps
// against the CPU backend.
TEST(CliEmu, EncDecTrainOnEmulatedCudaTracksCpu) {
  if (!fs::exists(loom_emu_binary())) GTEST_SKIP() << "loom-emu not built";
  TempDir d;
  const std::string data = prepare_pairs(d, "sort", 400);
  std::ofstream(d / "encdec.toml") << "device = \"cpu\"\n[model]\nkind = \"encdec\"\nn_enc_layer = 1\nn_dec_layer = 1\n"
                                   << "n_head = 2\nd_model = 32\nsrc_len = 8\nseq_len = 8\n[data]\npath = \"" << data
                                   << "\"\n[train]\nsteps = 6\nbatch_size = 4\neval_every = 100\neval_steps = 1\n"
                                   << "[optim]\nlr = 1e-2\nwarmup_steps = 1\n[log]\nevery = 1\n";
  const auto [a, b] = train_on_both(d, "encdec.toml");
  ASSERT_EQ(a.size(), 6u);
  ASSERT_EQ(b.size(), 6u);
  std::set<double> paddings;  // batches of different padded shapes
  for (size_t i = 0; i < a.size(); ++i) {
    const double la = a[i]["loss"].get<double>();
    EXPECT_NEAR(b[i]["loss"].get<double>(), la, 0.03 * la) << "step " << i + 1;
    EXPECT_EQ(b[i]["padding"].get<double>(), a[i]["padding"].get<double>()) << "step " << i + 1;
    paddings.insert(a[i]["padding"].get<double>());
  }
  EXPECT_GE(paddings.size(), 2u);
}

}  // namespace
}  // namespace loom::test
