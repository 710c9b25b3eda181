// mc_task_badinput_test.cpp: bad multiple-choice task files (launch/run/mc_eval.h) and bad
// uses of them. Every one is a UserError of one line naming the file and line ("PATH:LINE: ...",
// or "PATH: ..." for the file as a whole) and the problem, before anything is scored; through
// the CLI, exit 2 with that line.
#include <gtest/gtest.h>

#include <fstream>

#include "launch/run/gpt2_io.h"
#include "launch/run/mc_eval.h"
#include "tests/support/helpers.h"

namespace loom::test {
namespace {

constexpr const char* kGood = R"({"context": "A man", "endings": ["sits.", "flies."], "label": 0})";

// `bad` as line 2 of a file whose line 1 is good: the error must name line 2.
void expect_bad_line(const std::string& bad, const std::vector<std::string>& what) {
  TempDir d;
  const std::string path = d / "task.jsonl";
  write_bytes(path, std::string(kGood) + "\n" + bad + "\n");
  std::vector<std::string> needles = what;
  needles.push_back(path + ":2: ");
  expect_user_error([&] { read_mc_task(path, *make_tokenizer("byte"), 256, 32, "t"); }, needles, path + ":2: ");
}

TEST(McTaskBadInput, BadLinesNameFileLineAndProblem) {
  expect_bad_line(R"({"context": "A man", "endings": ["sits."])", {"not valid JSON"});
  expect_bad_line("[1, 2]", {"expected an object"});
  expect_bad_line(R"({"endings": ["a", "b"], "label": 0})", {"no context"});
  expect_bad_line(R"({"context": 5, "endings": ["a", "b"], "label": 0})", {"\"context\" must be a string"});
  expect_bad_line(R"({"ctx": ["x"], "endings": ["a", "b"], "label": 0})", {"\"ctx\" must be a string"});
  expect_bad_line(R"({"context": "", "endings": ["a", "b"], "label": 0})", {"context is empty"});
  expect_bad_line(R"({"context": "x", "label": 0})", {"no \"endings\""});
  expect_bad_line(R"({"context": "x", "endings": "a b", "label": 0})", {"\"endings\" must be an array"});
  expect_bad_line(R"({"context": "x", "endings": ["only one"], "label": 0})", {"2 to 64"});
  std::string many = R"({"context": "x", "endings": [)";
  for (int i = 0; i < 65; ++i) many += std::string(i ? "," : "") + "\"e\"";
  expect_bad_line(many + R"(], "label": 0})", {"2 to 64"});
  expect_bad_line(R"({"context": "x", "endings": ["a", 7], "label": 0})", {"ending 1 must be a non-empty string"});
  expect_bad_line(R"({"context": "x", "endings": ["a", ""], "label": 0})", {"ending 1 must be a non-empty string"});
  expect_bad_line(R"({"context": "x", "endings": ["a", "b"]})", {"no \"label\""});
  expect_bad_line(R"({"context": "x", "endings": ["a", "b"], "label": 2})", {"\"label\"", "0 to 1"});
  expect_bad_line(R"({"context": "x", "endings": ["a", "b"], "label": -1})", {"\"label\"", "0 to 1"});
  expect_bad_line(R"({"context": "x", "endings": ["a", "b"], "label": "one"})", {"\"label\"", "0 to 1"});
  expect_bad_line(R"({"context": "x", "endings": ["a", "b"], "label": 0.5})", {"\"label\"", "0 to 1"});
  // Nesting deep enough to overflow a recursive parser is refused before parsing.
  expect_bad_line(std::string(100000, '[') + std::string(100000, ']'), {"nested deeper than"});
  // A line longer than any example can be (1 MiB), refused before it is parsed.
  expect_bad_line(R"({"context": ")" + std::string(size_t{1} << 20, 'a') + R"(", "endings": ["a", "b"], "label": 0})",
                  {"longer than any example can be"});
}

TEST(McTaskBadInput, BadFilesNameTheFile) {
  TempDir d;
  auto read = [](const std::string& path) { read_mc_task(path, *make_tokenizer("byte"), 256, 32, "t"); };
  expect_user_error([&] { read(d / "missing.jsonl"); }, {d / "missing.jsonl", "no such task file"});
  fs::create_directories(d / "folder.jsonl");
  expect_user_error([&] { read(d / "folder.jsonl"); }, {d / "folder.jsonl", "no such task file"});
  write_bytes(d / "empty.jsonl", "\n  \n");
  expect_user_error([&] { read(d / "empty.jsonl"); }, {d / "empty.jsonl", "no examples"});
  // A token the model's vocabulary lacks: 'x' is byte 120, past a vocabulary of 100.
  write_bytes(d / "wide.jsonl", R"({"context": "xyz", "endings": ["a", "b"], "label": 0})" "\n");
  expect_user_error([&] { read_mc_task(d / "wide.jsonl", *make_tokenizer("byte"), 100, 32, "t"); },
                    {d / "wide.jsonl:1", "outside the model's vocabulary"});
  // train.eval_tasks: the same checks at the start of a run, and names that collide.
  write_bytes(d / "ok.jsonl", std::string(kGood) + "\n");
  fs::create_directories(d / "sub");
  write_bytes(d / "sub/ok.jsonl", std::string(kGood) + "\n");
  expect_user_error([&] { McTasks({d / "ok.jsonl", d / "sub/ok.jsonl"}, 0, "byte", 256, 32); },
                    {"train.eval_tasks", "a second task named 'ok'"});
  expect_user_error([&] { McTasks({d / "ok.jsonl", ""}, 0, "byte", 256, 32); }, {"train.eval_tasks", "empty"});
}

TEST(McTaskBadInput, CliRefusesWithOneLine) {
  TempDir d;
  ModelConfig c;
  c.kind = "gpt";
  c.n_layer = 1;
  c.n_head = 2;
  c.d_model = 16;
  c.seq_len = 16;
  c.vocab = 256;
  write_safetensors(d / "gpt2.safetensors", gpt2_safetensors(c, "byte", init_params(c, 3)));
  ASSERT_EQ(run_loom({"import", "--from", "gpt2-safetensors", d / "gpt2.safetensors", "--out", d / "run", "--n-head",
                      "2"}).rc,
            0);
  write_bytes(d / "task.jsonl", std::string(kGood) + "\n{\"context\": \"x\"}\n");
  auto eval = [&](const std::vector<std::string>& task) {
    std::vector<std::string> args = {"eval", "--checkpoint", d / "run", "--device", "cpu", "--task"};
    args.insert(args.end(), task.begin(), task.end());
    return run_loom(args);
  };
  expect_user_error(eval({"mc", d / "task.jsonl"}), d / "task.jsonl:2: no \"endings\"");
  expect_user_error(eval({"qa", d / "task.jsonl"}), "unknown task kind 'qa'");
  expect_user_error(eval({"mc", d / "none.jsonl"}), d / "none.jsonl");
  // Validation data has no part in a task: --data and --batches with --task are refused.
  expect_user_error(eval({"mc", d / "task.jsonl", "--data", d.str()}), "--data");
  expect_user_error(eval({"mc", d / "task.jsonl", "--batches", "3"}), "--batches");
  // A good file scores: the failures above were the file's doing.
  write_bytes(d / "good.jsonl", std::string(kGood) + "\n");
  const RunResult ok = eval({"mc", d / "good.jsonl"});
  EXPECT_EQ(ok.rc, 0) << ok.err;
  // The config key: an array of strings, checked before the run's first step.
  const std::string data = prepare_tiny_data(d.str(), 20000);
  std::ofstream(d / "c.toml") << tiny_config(data, d / "r", 2);
  expect_user_error(run_loom({"train", "--config", d / "c.toml", "--train.eval_tasks", d / "task.jsonl"}),
                    d / "task.jsonl:2");
  std::string cfg = tiny_config(data, d / "r2", 2);
  cfg.insert(cfg.find("[train]\n") + 8, "eval_tasks = \"" + d / "good.jsonl" + "\"\n");
  std::ofstream(d / "c2.toml") << cfg;
  expect_user_error(run_loom({"train", "--config", d / "c2.toml"}), "train.eval_tasks: expected an array of strings");
}

}  // namespace
}  // namespace loom::test
