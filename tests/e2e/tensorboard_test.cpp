// tensorboard_test.cpp: a run's TensorBoard event files (launch/run/tensorboard.h), read back by
// an independent reader (tests/e2e/tfevents_reader.py: Python's protobuf and crc32c, Debian's
// python3-protobuf and python3-crc32c) that checks every record's CRCs, the file_version event,
// the config text, and every scalar against metrics.jsonl; a resumed run adds a second file
// whose START event supersedes the steps run again; of two ranks only the lead writes;
// log.tensorboard = false writes none; downstream task scores come through too.
// Skipped, saying why, where the build has no protobuf or Python lacks those packages.
#include <gtest/gtest.h>

#include "tests/support/helpers.h"

namespace loom::test {
namespace {

const std::string kPb2Dir = std::string(LOOM_BINARY_DIR) + "/launch/run";
const std::string kReader = std::string(LOOM_SOURCE_DIR) + "/tests/e2e/tfevents_reader.py";

// The reader's verdict on `run` (exit 0, 1 or 77 and what it printed), by the first Python that
// has protobuf and crc32c: Debian's, which a pyenv or venv python3 on PATH may hide.
RunResult read_events(const std::string& run, int files) {
  RunResult r;
  for (const std::string python : {"/usr/bin/python3", "python3"}) {
    RunResult c = run_binary("/usr/bin/env", {python, kReader, kPb2Dir, run, "--files", std::to_string(files)});
    if (c.rc != 77) return c;
    r.rc = 77;
    r.out += c.out;
  }
  return r;
}

#define SKIP_WITHOUT_TENSORBOARD()                                                                   \
  do {                                                                                               \
    if (!fs::exists(kPb2Dir + "/tensorboard_pb2.py"))                                                \
      GTEST_SKIP() << "this build has no protobuf (cmake/Dependencies.cmake): no event files to read"; \
  } while (0)

// The reader accepts `run`'s event files: `files` of them, holding `steps` steps.
#define EXPECT_EVENTS_MATCH_METRICS(run, files, steps)                                                    \
  do {                                                                                                  \
    const RunResult r_ = read_events(run, files);                                                       \
    if (r_.rc == 77) GTEST_SKIP() << "no Python with protobuf and crc32c: " << r_.out;                  \
    EXPECT_EQ(r_.rc, 0) << r_.out << r_.err;                                                            \
    EXPECT_NE(r_.out.find(std::to_string(files) + " files, " + std::to_string(steps) + " steps"),     \
              std::string::npos)                                                                        \
        << r_.out;                                                                                      \
  } while (0)

std::string train_run(const TempDir& t, int steps, const std::vector<std::string>& extra = {}) {
  const std::string data = prepare_tiny_data(t.str());
  std::ofstream(t / "c.toml") << tiny_config(data, t / "run", steps);
  std::vector<std::string> args{"train", "--config", t / "c.toml"};
  args.insert(args.end(), extra.begin(), extra.end());
  const RunResult r = run_loom(args);
  EXPECT_EQ(r.rc, 0) << r.err;
  return t / "run";
}

TEST(TensorBoard, EveryScalarOfMetricsAndTheConfigReadBackIndependently) {
  SKIP_WITHOUT_TENSORBOARD();
  TempDir t;
  const std::string run = train_run(t, 12);
  // The run logs every kind of scalar at least once, so the reader compares each of them.
  const auto metrics = read_metrics(run);
  ASSERT_EQ(metrics.size(), 12u);
  for (const char* key : {"loss", "val_loss", "lr", "grad_norm", "tokens_per_s", "mfu"})
    EXPECT_TRUE(std::any_of(metrics.begin(), metrics.end(), [&](const auto& m) { return m.contains(key); })) << key;
  EXPECT_EVENTS_MATCH_METRICS(run, 1, 12);
}

// Downstream task scores (train.eval_tasks) reach TensorBoard under their metrics.jsonl names.
TEST(TensorBoard, TaskScoresReadBackIndependently) {
  SKIP_WITHOUT_TENSORBOARD();
  TempDir t;
  {
    std::ofstream f(t / "words.jsonl");
    f << R"({"context": "In the beginning", "endings": [" God", " the", " and", " of"], "label": 0})" << "\n"
      << R"({"context": "and the earth was", "endings": [" God", " without form", " of", " light"], "label": 1})" << "\n";
  }
  const std::string run = train_run(t, 12, {"--train.eval_tasks", t / "words.jsonl"});
  const auto metrics = read_metrics(run);
  EXPECT_TRUE(std::any_of(metrics.begin(), metrics.end(), [](const auto& m) { return m.contains("mc/words/acc"); }));
  EXPECT_EVENTS_MATCH_METRICS(run, 1, 12);
}

// The reader is no rubber stamp: a flipped bit fails the CRC, a scalar that differs from
// metrics.jsonl fails the comparison.
TEST(TensorBoard, ReaderCatchesACorruptRecordAndAWrongScalar) {
  SKIP_WITHOUT_TENSORBOARD();
  TempDir t;
  const std::string run = train_run(t, 3);
  EXPECT_EVENTS_MATCH_METRICS(run, 1, 3);

  const std::string metrics = read_bytes(run + "/metrics.jsonl");
  const size_t at = metrics.find("\"loss\":");
  ASSERT_NE(at, std::string::npos);
  write_bytes(run + "/metrics.jsonl", metrics.substr(0, at + 7) + "1" + metrics.substr(at + 7));  // 5.5 -> 15.5
  const RunResult wrong = read_events(run, 1);
  EXPECT_EQ(wrong.rc, 1) << wrong.out;
  EXPECT_NE(wrong.out.find("train/loss"), std::string::npos) << wrong.out;
  write_bytes(run + "/metrics.jsonl", metrics);

  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(run + "/tb")) files.push_back(e.path());
  ASSERT_EQ(files.size(), 1u);
  std::string bytes = read_bytes(files[0].string());
  bytes[bytes.size() - 10] ^= 0x10;  // inside the last record's data
  write_bytes(files[0].string(), bytes);
  const RunResult corrupt = read_events(run, 1);
  EXPECT_EQ(corrupt.rc, 1) << corrupt.out;
  EXPECT_NE(corrupt.out.find("bad data CRC"), std::string::npos) << corrupt.out;
}

// A resumption writes a new file. Resumed from step 4 after the first run had reached step 6,
// its steps 5 and 6 (run again, with other timings) must supersede the first file's.
TEST(TensorBoard, ResumeAddsAFileThatSupersedesTheStepsRunAgain) {
  SKIP_WITHOUT_TENSORBOARD();
  TempDir t;
  const std::string run = train_run(t, 6, {"--checkpoint.every", "2"});
  fs::remove(run + "/latest");
  fs::create_directory_symlink("checkpoints/step_00000004", run + "/latest");
  const RunResult r = run_loom({"train", "--config", t / "c.toml", "--resume", "--train.steps", "7"});
  ASSERT_EQ(r.rc, 0) << r.err;
  ASSERT_EQ(read_metrics(run).size(), 7u);
  EXPECT_EVENTS_MATCH_METRICS(run, 2, 7);
}

// Two ranks, one writer: the lead rank's file is the only one, and holds the run's metrics.
TEST(TensorBoard, OnlyTheLeadRankWrites) {
  SKIP_WITHOUT_TENSORBOARD();
  TempDir t;
  const std::string data = prepare_tiny_data(t.str());
  std::ofstream(t / "c.toml") << tiny_config(data, t / "run", 3);
  const RunResult r = run_loom({"launch", "--nproc-per-node", "2", "--", "train", "--config", t / "c.toml"});
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  ASSERT_NE(r.out.find("data parallel: 2 ranks"), std::string::npos) << r.out;
  EXPECT_EVENTS_MATCH_METRICS(t / "run", 1, 3);
}

TEST(TensorBoard, OffWritesNoEventFiles) {
  TempDir t;
  const std::string run = train_run(t, 2, {"--log.tensorboard", "false"});
  EXPECT_EQ(read_metrics(run).size(), 2u);
  EXPECT_FALSE(fs::exists(run + "/tb"));
}

TEST(TensorBoard, KeyTakesOnlyTrueOrFalse) {
  TempDir t;
  const std::string data = prepare_tiny_data(t.str());
  std::ofstream(t / "c.toml") << tiny_config(data, t / "run", 2);
  expect_user_error(run_loom({"train", "--config", t / "c.toml", "--log.tensorboard", "yes"}), "log.tensorboard");
  std::ofstream(t / "c.toml", std::ios::app) << "tensorboard = 1\n";  // in [log], the config's last table
  expect_user_error(run_loom({"train", "--config", t / "c.toml"}), "log.tensorboard");
}

}  // namespace
}  // namespace loom::test
