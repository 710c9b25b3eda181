// sample_cli_test.cpp: `loom sample --prompt-file` and `--stop` through the CLI, and the whole
// BPE path: `loom tokenizer train` -> `loom prepare --tokenizer FILE` -> train -> sample/eval,
// with the checkpoint decoding on its own (the vocabulary travels inside it).
#include <gtest/gtest.h>

#include "engine/io/safetensors.h"
#include "tests/support/helpers.h"

namespace loom::test {
namespace {

class SampleCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    const std::string data = prepare_tiny_data(dir_->str(), 100000);
    std::ofstream(*dir_ / "tiny.toml") << tiny_config(data, *dir_ / "run", 60);
    RunResult r = run_loom({"train", "--config", *dir_ / "tiny.toml"});
    ASSERT_EQ(r.rc, 0) << r.err;
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string d(const std::string& s) { return *dir_ / s; }
  // Greedy, so a prompt's continuation is a function of the prompt alone.
  static RunResult sample(std::vector<std::string> extra, int tokens = 60) {
    std::vector<std::string> args = {"sample", "--checkpoint", d("run"), "--greedy", "--max-new-tokens",
                                     std::to_string(tokens)};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_loom(args);
  }
  static TempDir* dir_;
};
TempDir* SampleCli::dir_ = nullptr;

TEST_F(SampleCli, PromptFileSamplesEachPromptInTurn) {
  std::ofstream(d("prompts.txt")) << "The lord\n\nAnd they went\r\nKing\n";
  RunResult all = sample({"--prompt-file", d("prompts.txt")}, 30);
  ASSERT_EQ(all.rc, 0) << all.err;
  const std::vector<std::string> prompts = {"The lord", "And they went", "King"};
  const std::vector<int> lines = {1, 3, 4};  // blank line 2 skipped, \r dropped
  std::string expect;
  for (size_t i = 0; i < prompts.size(); ++i) {
    RunResult one = sample({"--prompt", prompts[i]}, 30);
    ASSERT_EQ(one.rc, 0) << one.err;
    ASSERT_EQ(one.out.rfind(prompts[i], 0), 0u) << one.out;
    expect += "=== sample " + std::to_string(i + 1) + " of 3 (" + d("prompts.txt") + ":" + std::to_string(lines[i]) +
              ") ===\n" + one.out;
  }
  // Each sample is exactly what --prompt alone gives (fresh context, same seed), in file order.
  EXPECT_EQ(all.out, expect);
}

TEST_F(SampleCli, StopEndsTheSampleWithoutPrintingTheStop) {
  const std::string prompt = "The lord";
  RunResult full = sample({"--prompt", prompt});
  ASSERT_EQ(full.rc, 0) << full.err;
  ASSERT_EQ(full.out.back(), '\n');
  const std::string cont = full.out.substr(prompt.size(), full.out.size() - prompt.size() - 1);
  ASSERT_GE(cont.size(), 40u) << full.out;

  // A stop string taken from the middle of the continuation: the output ends right before its
  // first occurrence in the generated text.
  const std::string stop = cont.substr(20, 3);
  RunResult cut = sample({"--prompt", prompt, "--stop", stop});
  ASSERT_EQ(cut.rc, 0) << cut.err;
  EXPECT_EQ(cut.out, prompt + cont.substr(0, cont.find(stop)) + "\n");
  EXPECT_LT(cut.out.size(), full.out.size());

  // Several stops: the earliest wins. One that never appears changes nothing.
  const std::string early = cont.substr(5, 2), never = "\x01\x02";
  RunResult two = sample({"--prompt", prompt, "--stop", stop, "--stop", early, "--stop", never});
  ASSERT_EQ(two.rc, 0) << two.err;
  EXPECT_EQ(two.out, prompt + cont.substr(0, std::min(cont.find(stop), cont.find(early))) + "\n");
  RunResult none = sample({"--prompt", prompt, "--stop", never});
  EXPECT_EQ(none.out, full.out);

  // The prompt's own text does not stop anything: only generated text is searched.
  RunResult in_prompt = sample({"--prompt", prompt, "--stop", "lord"});
  ASSERT_EQ(in_prompt.rc, 0) << in_prompt.err;
  EXPECT_EQ(in_prompt.out, prompt + cont.substr(0, cont.find("lord")) + "\n");

  // Escapes: "\n" is a newline, "\\" a backslash. (A tiny model's greedy text may hold no
  // newline; then the newline stop must change nothing.)
  const size_t nl = cont.find('\n');
  RunResult line = sample({"--prompt", prompt, "--stop", "\\n"});
  EXPECT_EQ(line.out, prompt + cont.substr(0, nl) + "\n");
  RunResult esc = sample({"--prompt", prompt, "--stop", "\\\\", "--stop", stop.substr(0, 1) + "\\q"});
  EXPECT_EQ(esc.out, full.out) << "a backslash and an unknown escape stay literal and never appear";

  // With a prompt file, the stop applies to every sample.
  std::ofstream(d("p2.txt")) << prompt << "\n" << prompt << "\n";
  RunResult both = sample({"--prompt-file", d("p2.txt"), "--stop", stop});
  ASSERT_EQ(both.rc, 0) << both.err;
  const std::string body = prompt + cont.substr(0, cont.find(stop)) + "\n";
  EXPECT_EQ(both.out, "=== sample 1 of 2 (" + d("p2.txt") + ":1) ===\n" + body + "=== sample 2 of 2 (" + d("p2.txt") +
                          ":2) ===\n" + body);
}

// Beam search through the CLI: beam 1 prints what greedy prints, --eos ends a hypothesis (not
// printed), and --n-best prints the hypotheses best first with their scores. seq_len is 32, so
// 20 new tokens after the 8-token prompt fit the context.
TEST_F(SampleCli, BeamSearch) {
  const std::string prompt = "The lord";
  RunResult greedy = sample({"--prompt", prompt}, 20);
  ASSERT_EQ(greedy.rc, 0) << greedy.err;
  auto beam = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = {"sample", "--checkpoint", d("run"), "--prompt", prompt, "--max-new-tokens", "20"};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_loom(args);
  };
  RunResult one = beam({"--beam", "1"});
  ASSERT_EQ(one.rc, 0) << one.err;
  EXPECT_EQ(one.out, greedy.out);

  // An EOS taken from the greedy continuation: beam 1 stops right before its first occurrence.
  const std::string cont = greedy.out.substr(prompt.size(), greedy.out.size() - prompt.size() - 1);
  ASSERT_GE(cont.size(), 10u) << greedy.out;
  const std::string eos = cont.substr(6, 1);
  RunResult ended = beam({"--beam", "1", "--eos", eos == "\n" ? "\\n" : eos, "--n-best", "1"});
  ASSERT_EQ(ended.rc, 0) << ended.err;
  const std::string body = prompt + cont.substr(0, cont.find(eos)) + "\n";
  ASSERT_GT(ended.out.size(), body.size()) << ended.out;
  EXPECT_EQ(ended.out.substr(ended.out.size() - body.size()), body);
  EXPECT_NE(ended.out.find(std::to_string(cont.find(eos) + 1) + " tokens, ended by EOS ---\n"), std::string::npos)
      << ended.out;

  RunResult three = beam({"--beam", "4", "--n-best", "3", "--length-penalty", "0.6"});
  ASSERT_EQ(three.rc, 0) << three.err;
  std::vector<double> scores;
  for (size_t at = three.out.find("--- hypothesis "); at != std::string::npos;
       at = three.out.find("--- hypothesis ", at + 1)) {
    const size_t s = three.out.find("score ", at);
    ASSERT_NE(s, std::string::npos) << three.out;
    scores.push_back(std::stod(three.out.substr(s + 6)));
    EXPECT_EQ(three.out.compare(three.out.find('\n', at) + 1, prompt.size(), prompt), 0) << three.out;
  }
  ASSERT_EQ(scores.size(), 3u) << three.out;
  EXPECT_EQ(three.out.rfind("--- hypothesis 1 of 3: log-prob ", 0), 0u) << three.out;
  EXPECT_GE(scores[0], scores[1]);
  EXPECT_GE(scores[1], scores[2]);
  EXPECT_LT(scores[0], 0.0);
}

TEST_F(SampleCli, BpeVocabularyEndToEnd) {
  TempDir t;
  std::ofstream(t / "corpus.txt") << make_corpus(150000, 5);
  RunResult tr = run_loom({"tokenizer", "train", "--corpus", t / "corpus.txt", "--vocab-size", "300", "--out",
                           t / "tok.json"});
  ASSERT_EQ(tr.rc, 0) << tr.err;
  EXPECT_NE(tr.out.find("44 merges, vocabulary 300"), std::string::npos) << tr.out;
  RunResult pr = run_loom({"prepare", "--corpus", t / "corpus.txt", "--tokenizer", t / "tok.json", "--out",
                           t / "data", "--val-fraction", "0.1"});
  ASSERT_EQ(pr.rc, 0) << pr.err;
  EXPECT_NE(pr.out.find("vocabulary 300 (bpe)"), std::string::npos) << pr.out;
  std::ofstream(t / "tiny.toml") << tiny_config(t / "data", t / "run", 20);
  RunResult trn = run_loom({"train", "--config", t / "tiny.toml"});
  ASSERT_EQ(trn.rc, 0) << trn.err;
  RunResult ev = run_loom({"eval", "--checkpoint", t / "run", "--batches", "2"});
  ASSERT_EQ(ev.rc, 0) << ev.err;
  EXPECT_NE(ev.out.find("perplexity"), std::string::npos);
  // The checkpoint carries its vocabulary: sampling works with the tokenizer file and the data
  // folder gone.
  fs::remove(t / "tok.json");
  fs::remove_all(t / "data");
  RunResult s = run_loom({"sample", "--checkpoint", t / "run", "--prompt", "The lord", "--max-new-tokens", "20",
                          "--greedy"});
  ASSERT_EQ(s.rc, 0) << s.err;
  EXPECT_EQ(s.out.rfind("The lord", 0), 0u) << s.out;
  EXPECT_GT(s.out.size(), std::string("The lord\n").size()) << s.out;
  const StFile model = read_safetensors(t / "run/latest/model.safetensors");
  ASSERT_TRUE(model.metadata.count("tokenizer"));
  EXPECT_EQ(model.metadata.at("tokenizer").rfind("{\"format\": \"loom-bpe\"", 0), 0u)
      << "the checkpoint should carry the vocabulary inline: " << model.metadata.at("tokenizer").substr(0, 80);
}

}  // namespace
}  // namespace loom::test
