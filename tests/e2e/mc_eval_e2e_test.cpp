// mc_eval_e2e_test.cpp: downstream evaluation (launch/run/mc_eval.h) end to end.
//  - A task whose answer a trained model knows for certain and an untrained one can only
//    guess: a byte model trained on a fixed set of sentences completes each one with its true
//    ending (accuracy near 1), while the same model untrained picks near chance (1/4).
//  - Every model kind scores a task during its run (train.eval_tasks) and through
//    `loom eval --task mc` on its checkpoint, with the same result both ways.
//  - Parity with PyTorch: tests/e2e/mc_reference.py scores a task file in HellaSwag's format
//    with a hand-written GPT-2 forward pass in torch, on the weights loom imports; every
//    example's choice under every rule must match and every loss agree within f32 error.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "core/rng.h"
#include "engine/data/corpus.h"
#include "launch/run/config.h"
#include "launch/run/trainer.h"
#include "tests/support/helpers.h"

namespace loom::test {
namespace {

// Sentences cut into a context and its ending: the ending follows from the context's last
// word (and only from it: every ending is as common in the text), a few bytes back, which a
// tiny byte model learns in a few hundred steps.
struct Sentence {
  const char* context;
  const char* ending;
};
constexpr Sentence kSentences[] = {
    {"Bees make", "honey."},  {"Cows give", "milk."},       {"Hens lay", "eggs."},       {"Dogs chase", "balls."},
    {"Cats hunt", "mice."},   {"Kids fly", "kites."},       {"Bakers bake", "bread."},   {"Pilots steer", "planes."},
    {"Poets write", "verses."}, {"Farmers plant", "seeds."}, {"Sailors tie", "knots."},   {"Miners dig", "coal."},
    {"Tailors sew", "jackets."}, {"Owls eat", "voles."},     {"Ants carry", "leaves."},  {"Frogs catch", "flies."},
};
constexpr int kN = sizeof(kSentences) / sizeof(kSentences[0]);

// The corpus: the sentences one a line, over and over in random order.
std::string sentence_corpus(size_t bytes, uint64_t seed) {
  Rng r(seed);
  std::string s;
  while (s.size() < bytes) {
    const Sentence& x = kSentences[r.below(kN)];
    s += std::string(x.context) + " " + x.ending + "\n";
  }
  return s;
}

// Example i: sentence i's context, its true ending among the endings of the three sentences
// after it (so every ending is offered four times, once as the answer), at position i % 4.
void write_sentence_task(const std::string& path) {
  std::ofstream f(path);
  for (int i = 0; i < kN; ++i) {
    nlohmann::json endings = nlohmann::json::array();
    for (int k = 1; k <= 3; ++k) endings.push_back(kSentences[(i + k) % kN].ending);
    endings.insert(endings.begin() + i % 4, kSentences[i].ending);
    f << nlohmann::json{{"context", kSentences[i].context}, {"endings", endings}, {"label", i % 4}}.dump() << "\n";
  }
}

std::string prepare_sentences(const std::string& dir) {
  std::ofstream(dir + "/corpus.txt") << sentence_corpus(60000, 3);
  prepare_corpus(dir + "/corpus.txt", "byte", dir + "/data", 0.1);
  return dir + "/data";
}

// `loom eval --task mc`'s accuracy under `rule` ("acc", "acc_sum", "acc_bytes"), read from
// its report line "<rule> 0.8125 (13/16) ...", and the counts.
struct Reported {
  double acc = NAN;
  int correct = -1, examples = -1;
};
Reported reported(const std::string& out, const std::string& rule) {
  Reported r;
  const size_t at = out.find("\n" + rule + " ");
  if (at == std::string::npos) return r;
  std::sscanf(out.c_str() + at + rule.size() + 2, " %lf (%d/%d)", &r.acc, &r.correct, &r.examples);
  return r;
}

// A GPT config for the sentences: tiny_config with the task during the run.
std::string sentence_config(const std::string& data, const std::string& run, int steps, const std::string& task,
                            const std::string& optim) {
  std::string s = tiny_config(data, run, steps);
  const std::string train = "[train]\n";
  s.insert(s.find(train) + train.size(), "eval_tasks = ['" + task + "']\neval_tasks_every = 100\n");
  const std::string opt = "[optim]\n", end = "[checkpoint]";
  s.replace(s.find(opt), s.find(end) - s.find(opt), opt + optim);
  return s;
}

TEST(McEval, TrainedModelKnowsTheEndingsUntrainedGuesses) {
  TempDir d;
  const std::string data = prepare_sentences(d.str());
  const std::string task = d / "sentences.jsonl";
  write_sentence_task(task);
  TrainOptions quiet;
  quiet.quiet = true;

  // Untrained: one step at a learning rate that changes nothing, scored at that last step.
  train(parse_config_text(sentence_config(data, d / "untrained", 1, task, "lr = 1e-12\nmin_lr = 0\nwarmup_steps = 0\n"),
                          "untrained.toml", {}),
        quiet);
  const auto m0 = read_metrics(d / "untrained");
  ASSERT_EQ(m0.size(), 1u);
  ASSERT_TRUE(m0[0].contains("mc/sentences/acc")) << m0[0].dump();
  const double acc0 = m0[0]["mc/sentences/acc"];
  std::printf("untrained: acc %.4f, acc_sum %.4f, acc_bytes %.4f (chance 0.25)\n", acc0,
              m0[0]["mc/sentences/acc_sum"].get<double>(), m0[0]["mc/sentences/acc_bytes"].get<double>());
  // 16 examples at chance 1/4: 9 or more right has probability 0.008.
  EXPECT_LE(acc0, 0.5) << "an untrained model should only guess";

  // Trained: scored at steps 100, 200, 300, 400 (train.eval_tasks_every) and nowhere else.
  const TrainResult r = train(
      parse_config_text(sentence_config(data, d / "trained", 400, task, "lr = 1e-2\nmin_lr = 2e-3\nwarmup_steps = 10\n"),
                        "trained.toml", {}),
      quiet);
  EXPECT_LT(r.last_val_loss, 1.0) << "the model did not learn the sentences";
  const auto m = read_metrics(d / "trained");
  ASSERT_EQ(m.size(), 400u);
  for (const auto& line : m) {
    const int64_t step = line["step"];
    EXPECT_EQ(line.contains("mc/sentences/acc"), step % 100 == 0) << line.dump();
  }
  const auto& last = m.back();
  for (const char* rule : {"acc", "acc_sum", "acc_bytes"}) {
    const double acc = last[std::string("mc/sentences/") + rule];
    std::printf("trained: %s %.4f\n", rule, acc);
    EXPECT_GE(acc, 0.9) << rule << ": a model trained on the sentences should know their endings";
  }

  // The CLI on the checkpoints: the same numbers as the runs logged, with counts.
  for (const auto& [run, logged] : {std::pair{d / "untrained", m0[0]}, std::pair{d / "trained", last}}) {
    const RunResult e = run_loom({"eval", "--task", "mc", task, "--checkpoint", run, "--device", "cpu",
                                  "--per-example", run + "/per_example.jsonl"});
    ASSERT_EQ(e.rc, 0) << e.err;
    for (const char* rule : {"acc", "acc_sum", "acc_bytes"}) {
      const Reported rep = reported(e.out, rule);
      EXPECT_EQ(rep.examples, kN) << e.out;
      EXPECT_NEAR(rep.acc, logged[std::string("mc/sentences/") + rule].get<double>(), 1e-4) << rule << "\n" << e.out;
      EXPECT_EQ(rep.correct, static_cast<int>(std::lround(rep.acc * kN))) << e.out;
    }
    std::ifstream pe(run + "/per_example.jsonl");
    int lines = 0;
    for (std::string l; std::getline(pe, l); ++lines) {
      const auto j = nlohmann::json::parse(l);
      EXPECT_EQ(j["line"], lines + 1);
      EXPECT_EQ(j["loss_sum"].size(), 4u);
      for (const auto& t : j["tokens"]) EXPECT_GT(t.get<int>(), 1);
    }
    EXPECT_EQ(lines, kN);
  }
}

class McKinds : public ::testing::TestWithParam<std::string> {};

// Every kind: the task scored at each validation (train.eval_tasks_every = 0; the counting
// kind only once its counts are final, at the last step), and `loom eval --task mc` on the
// checkpoint agrees with what the run logged.
TEST_P(McKinds, ScoredDuringTheRunAndFromTheCheckpoint) {
  const std::string kind = GetParam();
  TempDir d;
  const std::string data = prepare_sentences(d.str());
  const std::string task = d / "sentences.jsonl";
  write_sentence_task(task);
  std::ostringstream s;
  s << "device = \"cpu\"\n[model]\nkind = \"" << kind << "\"\nseq_len = 32\n";
  if (kind == "ngram")
    s << "order = 6\n";
  else
    s << "n_layer = 1\nd_model = 16\n" << (kind == "gpt" ? "n_head = 2\n" : "");
  if (kind == "ffnn") s << "context = 8\nd_hidden = 32\n";
  s << "[data]\npath = \"" << data << "\"\n[train]\nsteps = 20\nbatch_size = 8\nseed = 7\neval_every = 10\n"
    << "eval_steps = 1\neval_tasks = [\"" << task << "\"]\n" << (kind == "ngram" ? "" : "[optim]\nlr = 1e-2\n") << "[checkpoint]\nevery = 20\nkeep = 0\n[log]\nrun_dir = \""
    << (d / "run") << "\"\nevery = 10\n";
  const RunResult t = run_loom({"train", "--config", [&] {
                                  std::ofstream(d / "c.toml") << s.str();
                                  return d / "c.toml";
                                }()});
  ASSERT_EQ(t.rc, 0) << t.err << t.out;
  EXPECT_NE(t.out.find("task sentences: acc "), std::string::npos) << t.out;
  const auto m = read_metrics(d / "run");
  ASSERT_EQ(m.size(), 20u);
  EXPECT_EQ(m[9].contains("mc/sentences/acc"), kind != "ngram") << m[9].dump();
  ASSERT_TRUE(m[19].contains("mc/sentences/acc")) << m[19].dump();
  EXPECT_FALSE(m[10].contains("mc/sentences/acc")) << m[10].dump();
  if (kind == "ngram") {
    // 20 x 8 x 32 bytes counted: an order-6 model has seen every sentence many times.
    EXPECT_GE(m[19]["mc/sentences/acc"].get<double>(), 0.9);
  }
  const RunResult e = run_loom({"eval", "--task", "mc", task, "--checkpoint", d / "run", "--device", "cpu"});
  ASSERT_EQ(e.rc, 0) << e.err;
  for (const char* rule : {"acc", "acc_sum", "acc_bytes"})
    EXPECT_NEAR(reported(e.out, rule).acc, m[19][std::string("mc/sentences/") + rule].get<double>(), 1e-4)
        << rule << "\n" << e.out;
}

INSTANTIATE_TEST_SUITE_P(AllKinds, McKinds, ::testing::Values("gpt", "lstm", "gru", "rnn", "ffnn", "ngram"));

// Debian's python3-torch installs into /usr/bin/python3's packages (a pyenv or venv python3 on
// PATH does not see it).
constexpr const char* kTorchPython = "/usr/bin/python3";

// A HellaSwag validation line: its own fields, the context in ctx (= ctx_a + " " + ctx_b).
std::string hellaswag_line(int ind, const std::string& ctx_a, const std::string& ctx_b,
                           const std::vector<std::string>& endings, int label) {
  return nlohmann::json{{"ind", ind},
                        {"activity_label", "Testing"},
                        {"ctx_a", ctx_a},
                        {"ctx_b", ctx_b},
                        {"ctx", ctx_a + " " + ctx_b},
                        {"split", "val"},
                        {"split_type", "indomain"},
                        {"label", label},
                        {"endings", endings},
                        {"source_id", "loom-test~" + std::to_string(ind)}}
             .dump();
}

TEST(McEval, MatchesPyTorchOnAnImportedGpt2Checkpoint) {
  if (std::system((std::string(kTorchPython) + " -c 'import torch' >/dev/null 2>&1").c_str()) != 0)
    GTEST_SKIP() << kTorchPython << " cannot import torch (Debian's python3-torch, scripts/install_deps.sh)";
  TempDir d;
  // 24 examples of 4 endings from make_corpus's words, with contexts of 10 to 90 bytes: the
  // longer ones do not fit the window of 64 and lose tokens on the left.
  const std::string words = make_corpus(20000, 17);
  Rng r(41);
  auto piece = [&](size_t n) {
    const size_t at = r.below(words.size() - n);
    std::string s = words.substr(at, n);
    for (char& c : s)
      if (c == '\n') c = ' ';
    return s;
  };
  {
    std::ofstream f(d / "hellaswag_val.jsonl");
    for (int i = 0; i < 24; ++i) {
      std::vector<std::string> endings;
      for (int k = 0; k < 4; ++k) endings.push_back(piece(5 + r.below(25)));
      f << hellaswag_line(i, piece(5 + r.below(40)), piece(5 + r.below(45)), endings, static_cast<int>(r.below(4)))
        << "\n";
    }
  }
  const std::string py = std::string(kTorchPython) + " '" + LOOM_SOURCE_DIR + "/tests/e2e/mc_reference.py' --out '" +
                         d.str() + "' --task '" + (d / "hellaswag_val.jsonl") +
                         "' --seed 9 --n-layer 2 --n-head 2 --d-model 32 --positions 64 2>'" + (d / "py.err") + "'";
  ASSERT_EQ(std::system(py.c_str()), 0) << "mc_reference.py failed: " << read_bytes(d / "py.err");
  const RunResult im = run_loom({"import", "--from", "gpt2-safetensors", d / "model.safetensors", "--out", d / "run",
                                 "--n-head", "2"});
  ASSERT_EQ(im.rc, 0) << im.err;
  // Batches of 3 rows: examples straddle batches and rows of different lengths share one.
  const RunResult e = run_loom({"eval", "--task", "mc", d / "hellaswag_val.jsonl", "--checkpoint", d / "run",
                                "--device", "cpu", "--batch-size", "3", "--per-example", d / "loom.jsonl"});
  ASSERT_EQ(e.rc, 0) << e.err;
  EXPECT_NE(e.err.find("context is cut from the left"), std::string::npos) << "no note of the cut contexts: " << e.err;
  EXPECT_EQ(std::count(e.err.begin(), e.err.end(), '\n'), 1) << "the cut is said once: " << e.err;

  const auto ref = nlohmann::json::parse(read_bytes(d / "reference.json"));
  std::vector<nlohmann::json> got;
  {
    std::ifstream f(d / "loom.jsonl");
    for (std::string l; std::getline(f, l);) got.push_back(nlohmann::json::parse(l));
  }
  ASSERT_EQ(ref.size(), 24u);
  ASSERT_EQ(got.size(), ref.size());
  // f32 logits against a float64 reference: each token's loss within 2e-6 nats, so a sum of n
  // within n * 2e-6 (measured: 5e-7 a token at worst).
  constexpr double kPerToken = 2e-6;
  double worst = 0, closest = INFINITY;  // worst error / allowance; smallest gap between two means
  int correct[3] = {0, 0, 0};
  for (size_t i = 0; i < ref.size(); ++i) {
    const auto &a = got[i], &b = ref[i];
    EXPECT_EQ(a["line"], b["line"]);
    EXPECT_EQ(a["label"], b["label"]);
    EXPECT_EQ(a["choice"], b["choice"]) << "example " << i << " (mean loss per token)";
    EXPECT_EQ(a["choice_sum"], b["choice_sum"]) << "example " << i << " (summed loss)";
    EXPECT_EQ(a["choice_bytes"], b["choice_bytes"]) << "example " << i << " (loss per byte)";
    correct[0] += b["choice"] == b["label"], correct[1] += b["choice_sum"] == b["label"];
    correct[2] += b["choice_bytes"] == b["label"];
    ASSERT_EQ(a["tokens"], b["tokens"]) << "example " << i;
    for (size_t k = 0; k < 4; ++k) {
      const double l = a["loss_sum"][k], want = b["loss_sum"][k];
      const int n = b["tokens"][k];
      ASSERT_FALSE(std::isnan(l));
      worst = std::max(worst, std::fabs(l - want) / (n * kPerToken));
      for (size_t j = 0; j < k; ++j)
        closest = std::min(closest, std::fabs(want / n - b["loss_sum"][j].get<double>() / b["tokens"][j].get<int>()));
    }
  }
  std::printf("parity vs PyTorch on 24 HellaSwag-format examples: worst loss error at %.3f of "
              "its allowance (%.0e nats a token); closest two mean losses %.3g apart\n",
              worst, kPerToken, closest);
  EXPECT_LE(worst, 1.0);
  // The report's accuracies are the reference's.
  EXPECT_EQ(reported(e.out, "acc").correct, correct[0]) << e.out;
  EXPECT_EQ(reported(e.out, "acc_sum").correct, correct[1]) << e.out;
  EXPECT_EQ(reported(e.out, "acc_bytes").correct, correct[2]) << e.out;
}

}  // namespace
}  // namespace loom::test
