// cli_badinput_test.cpp: every kind of bad input reaches the user as one line naming the file
// or key and the problem, with exit code 2: never a crash, never a silent default.
#include <gtest/gtest.h>

#include "launch/run/checkpoint.h"
#include "launch/run/trainer.h"
#include "tests/support/helpers.h"

namespace loom::test {
namespace {

class BadInput : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    data_ = prepare_tiny_data(dir_->str(), 60000);
    std::ofstream(*dir_ / "good.toml") << tiny_config(data_, *dir_ / "run", 4);
    RunResult r = run_loom({"train", "--config", *dir_ / "good.toml"});
    ASSERT_EQ(r.rc, 0) << r.err;
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string d(const std::string& s) { return *dir_ / s; }
  static void write(const std::string& name, const std::string& text) { std::ofstream(d(name)) << text; }
  static TempDir* dir_;
  static std::string data_;
};
TempDir* BadInput::dir_ = nullptr;
std::string BadInput::data_;

std::string replace(std::string s, const std::string& from, const std::string& to) {
  const auto p = s.find(from);
  EXPECT_NE(p, std::string::npos) << from;
  return s.replace(p, from.size(), to);
}

TEST_F(BadInput, MissingConfigFile) {
  expect_user_error(run_loom({"train", "--config", d("absent.toml")}), "absent.toml: cannot open");
}

TEST_F(BadInput, MissingKey) {
  write("missing.toml", replace(tiny_config(data_, d("r1")), "n_layer = 2\n", ""));
  expect_user_error(run_loom({"train", "--config", d("missing.toml")}), "missing required key 'model.n_layer'");
}

TEST_F(BadInput, IllTypedKey) {
  write("typed.toml", replace(tiny_config(data_, d("r2")), "n_layer = 2", "n_layer = \"two\""));
  expect_user_error(run_loom({"train", "--config", d("typed.toml")}), "model.n_layer: expected an integer");
  expect_user_error(run_loom({"train", "--config", d("good.toml"), "--train.steps", "ten"}),
                    "--train.steps: expected an integer");
}

TEST_F(BadInput, UnknownKeyAndFlag) {
  write("unknown.toml", tiny_config(data_, d("r3")) + "dropout = 0.1\n");
  expect_user_error(run_loom({"train", "--config", d("unknown.toml")}), "unknown key 'log.dropout'");
  expect_user_error(run_loom({"train", "--config", d("good.toml"), "--optim.momentum", "0.9"}), "--optim.momentum");
  expect_user_error(run_loom({"sample", "--checkpoint", d("run"), "--prompt", "a", "--frobnicate"}), "frobnicate");
}

TEST_F(BadInput, InvalidToml) {
  write("syntax.toml", "[model\nkind = ");
  expect_user_error(run_loom({"train", "--config", d("syntax.toml")}), "syntax.toml:");
}

TEST_F(BadInput, TruncatedShard) {
  fs::create_directories(d("trunc"));
  for (auto f : {"meta.json", "val.bin", "train.bin"}) fs::copy_file(data_ + "/" + f, d("trunc/") + f);
  fs::resize_file(d("trunc/train.bin"), fs::file_size(d("trunc/train.bin")) - 7);
  write("trunc.toml", tiny_config(d("trunc"), d("r4")));
  expect_user_error(run_loom({"train", "--config", d("trunc.toml")}), "trunc/train.bin");
}

TEST_F(BadInput, ForeignShard) {
  fs::create_directories(d("foreign"));
  for (auto f : {"meta.json", "val.bin"}) fs::copy_file(data_ + "/" + f, d("foreign/") + f);
  Rng r(4);
  std::string junk(5000, ' ');
  for (auto& c : junk) c = static_cast<char>(r.below(256));
  write("foreign/train.bin", junk);
  write("foreign.toml", tiny_config(d("foreign"), d("r5")));
  expect_user_error(run_loom({"train", "--config", d("foreign.toml")}), "foreign/train.bin");
}

TEST_F(BadInput, MissingDataFolder) {
  write("nodata.toml", tiny_config(d("nowhere"), d("r6")));
  expect_user_error(run_loom({"train", "--config", d("nodata.toml")}), "nowhere");
}

TEST_F(BadInput, CheckpointOfAnotherShape) {
  expect_user_error(run_loom({"train", "--config", d("good.toml"), "--resume", "--model.d_model", "64"}),
                    "checkpoint of another shape");
}

TEST_F(BadInput, ExistingRunWithoutResume) {
  expect_user_error(run_loom({"train", "--config", d("good.toml")}), "already holds a run");
}

TEST_F(BadInput, ResumeWithoutCheckpoint) {
  expect_user_error(run_loom({"train", "--config", d("good.toml"), "--resume", "--log.run_dir", d("fresh")}), "fresh");
}

TEST_F(BadInput, EmptyPrompt) {
  expect_user_error(run_loom({"sample", "--checkpoint", d("run"), "--prompt", ""}), "--prompt: empty prompt");
}

TEST_F(BadInput, PromptOutsideVocabulary) {
  // A checkpoint whose model knows only the first 64 byte values: 'z' (122) is outside.
  Config c = parse_config_text(tiny_config(data_, d("small_vocab")), "x.toml", {});
  c.model.vocab = 64;
  auto params = init_params(c.model, 1);
  std::vector<float> zeros(params.size(), 0.0f);
  TrainProgress p;
  p.step = 1;
  save_checkpoint(d("small_vocab"), c, "byte", params, zeros, zeros, p, 0);
  expect_user_error(run_loom({"sample", "--checkpoint", d("small_vocab"), "--prompt", "zebra"}),
                    "outside the checkpoint's vocabulary");
}

TEST_F(BadInput, SamplingFlags) {
  expect_user_error(run_loom({"sample", "--checkpoint", d("run"), "--prompt", "a", "--top-p", "1.5"}), "--top-p");
  expect_user_error(run_loom({"sample", "--checkpoint", d("run"), "--prompt", "a", "--temperature", "0"}),
                    "--temperature");
  expect_user_error(run_loom({"sample", "--checkpoint", d("run"), "--prompt", "a", "--max-new-tokens", "x"}),
                    "max-new-tokens");
}

TEST_F(BadInput, BeamFlags) {
  auto beam = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = {"sample", "--checkpoint", d("run"), "--prompt", "a"};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_loom(args);
  };
  expect_user_error(beam({"--beam", "0"}), "--beam: must be >= 1");
  expect_user_error(beam({"--beam", "2", "--temperature", "0.5"}), "--temperature: beam search does not sample");
  expect_user_error(beam({"--beam", "2", "--greedy"}), "--greedy: beam search does not sample");
  expect_user_error(beam({"--beam", "2", "--n-best", "3"}), "--n-best: must be in [1, --beam (2)]");
  expect_user_error(beam({"--beam", "2", "--n-best", "0"}), "--n-best: must be in [1, --beam (2)]");
  expect_user_error(beam({"--n-best", "2"}), "--n-best: needs --beam N");
  expect_user_error(beam({"--eos", "x"}), "--eos: needs --beam N");
  expect_user_error(beam({"--beam", "2", "--length-penalty", "-1"}), "--length-penalty: must be >= 0");
  expect_user_error(beam({"--beam", "2", "--eos", "ab"}), "--eos: \"ab\" encodes to 2 tokens");
  EXPECT_EQ(beam({"--beam", "2", "--max-new-tokens", "3"}).rc, 0);
}

TEST_F(BadInput, MissingCheckpoint) {
  expect_user_error(run_loom({"sample", "--checkpoint", d("no_such_run"), "--prompt", "a"}), "no_such_run");
  expect_user_error(run_loom({"eval", "--checkpoint", d("no_such_run")}), "no_such_run");
}

TEST_F(BadInput, CorruptCheckpoint) {
  fs::copy(d("run/latest"), d("corrupt"), fs::copy_options::recursive);
  fs::resize_file(d("corrupt/model.safetensors"), fs::file_size(d("corrupt/model.safetensors")) / 2);
  expect_user_error(run_loom({"sample", "--checkpoint", d("corrupt"), "--prompt", "a"}), "corrupt/model.safetensors");
}

TEST_F(BadInput, MissingCorpus) {
  expect_user_error(run_loom({"prepare", "--corpus", d("no_corpus.txt"), "--out", d("o")}), "no_corpus.txt");
  write("empty.txt", "");
  expect_user_error(run_loom({"prepare", "--corpus", d("empty.txt"), "--out", d("o")}), "empty.txt");
}

TEST_F(BadInput, ScoreFiles) {
  write("hyp.txt", "a b c\nd e\n");
  write("ref.txt", "a b c\nd e\n");
  write("short.txt", "a b c\n");
  write("latin1.txt", "a b c\nd \xe9\n");
  write("empty.txt", "");
  const std::string h = d("hyp.txt");
  expect_user_error(run_loom({"score", "--hyp", h, "--ref", d("short.txt")}), "short.txt: 1 lines, but --hyp");
  expect_user_error(run_loom({"score", "--hyp", h, "--ref", d("ref.txt"), "--ref", d("no_ref.txt")}),
                    "no_ref.txt: cannot open");
  expect_user_error(run_loom({"score", "--hyp", d("no_hyp.txt"), "--ref", d("ref.txt")}), "no_hyp.txt: cannot open");
  expect_user_error(run_loom({"score", "--hyp", h, "--ref", d("latin1.txt")}), "latin1.txt:2: not UTF-8");
  expect_user_error(run_loom({"score", "--hyp", d("empty.txt"), "--ref", d("ref.txt")}), "empty.txt: empty");
  expect_user_error(run_loom({"score", "--hyp", h}), "--ref");
  expect_user_error(run_loom({"score", "--hyp", h, "--ref", d("ref.txt"), "--metric", "ter"}), "--metric");
  EXPECT_EQ(run_loom({"score", "--hyp", h, "--ref", d("ref.txt")}).rc, 0);
}

TEST_F(BadInput, NoSubcommandOrUnknownOne) {
  EXPECT_EQ(run_loom({}).rc, 2);
  EXPECT_EQ(run_loom({"frob"}).rc, 2);
  EXPECT_EQ(run_loom({"--help"}).rc, 0);
}

}  // namespace
}  // namespace loom::test
