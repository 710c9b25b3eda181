// pairs_e2e_test.cpp: `loom prepare` for sequence pairs through the CLI: the built-in span
// corruption task on the default corpus ("kjv", found through LOOM_HOME like any run finds it;
// here a private home holding verses written by the test, so no download and no source-tree
// data is touched), deterministic for --seed; pairs from a TSV file with its summary line; and
// a pair folder handed to a token-stream model is refused by name.
#include <gtest/gtest.h>

#include <cstdlib>

#include "engine/data/pair_loader.h"
#include "engine/data/pairs.h"
#include "tests/support/helpers.h"

namespace loom::test {
namespace {

// Sets an environment variable for the scope, restoring the old value after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    const char* old = std::getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() { had_ ? ::setenv(name_, old_.c_str(), 1) : ::unsetenv(name_); }

 private:
  const char* name_;
  bool had_ = false;
  std::string old_;
};

TEST(PairsE2e, SpanCorruptionOfTheDefaultCorpusIsBuiltInAndSeeded) {
  TempDir d;
  fs::create_directories(d / "home/data");
  // One verse a line, as scripts/fetch_kjv.sh writes the KJV.
  std::string verses = make_corpus(60000, 3);
  std::ofstream(d / "home/data/kjv.txt") << verses;
  const size_t lines = static_cast<size_t>(std::count(verses.begin(), verses.end(), '\n'));
  ScopedEnv home("LOOM_HOME", d / "home");
  const auto prepare = [&](const std::string& out, const std::string& seed) {
    return run_loom({"prepare", "--corpus", "kjv", "--task", "span-corruption", "--seed", seed, "--out", d / out});
  };
  const RunResult a = prepare("a", "5"), b = prepare("b", "5"), c = prepare("c", "6");
  ASSERT_EQ(a.rc, 0) << a.err;
  ASSERT_EQ(c.rc, 0) << c.err;
  EXPECT_NE(a.out.find("kjv: " + std::to_string(lines) + " pairs"), std::string::npos) << a.out;
  EXPECT_NE(a.out.find("100 sentinels"), std::string::npos) << a.out;
  EXPECT_NE(a.out.find("padding of train batches of 32 pairs"), std::string::npos) << a.out;
  EXPECT_EQ(read_bytes(d / "a/train.src.bin"), read_bytes(d / "b/train.src.bin"));
  EXPECT_EQ(read_bytes(d / "a/val.tgt.bin"), read_bytes(d / "b/val.tgt.bin"));
  EXPECT_NE(read_bytes(d / "a/train.src.bin"), read_bytes(d / "c/train.src.bin"));

  const PairFolder f = open_pair_folder(d / "a");
  EXPECT_EQ(f.task, "span-corruption");
  EXPECT_EQ(f.train_pairs + f.val_pairs, lines);
  const auto meta = nlohmann::json::parse(read_bytes(d / "a/meta.json"));
  EXPECT_EQ(meta["seed"], 5);
  EXPECT_EQ(meta["sentinel_first"], 259);  // byte (256) + pad, bos, eos
  // Every source holds at least one sentinel and every target starts with sentinel 0.
  const PairSplit val(d / "a", "val");
  for (uint64_t i = 0; i < val.size(); ++i) {
    std::vector<uint32_t> s, t;
    val.read_source(i, s);
    val.read_target(i, t);
    EXPECT_NE(std::find(s.begin(), s.end(), f.vocab.sentinel(0)), s.end()) << "pair " << i;
    EXPECT_EQ(t.front(), f.vocab.sentinel(0)) << "pair " << i;
  }
}

TEST(PairsE2e, TsvPairsPrepareAndAStreamModelRefusesThem) {
  TempDir d;
  {
    std::ofstream tsv(d / "p.tsv");
    Rng r(8);
    for (int i = 0; i < 300; ++i) {
      const std::string s = make_corpus(1 + r.below(80), r.next_u64());
      std::string line = s.substr(0, s.find('\n'));
      tsv << line << "\t" << std::string(line.rbegin(), line.rend()) << "\n";
    }
  }
  const RunResult p = run_loom({"prepare", "--pairs", d / "p.tsv", "--out", d / "data", "--val-fraction", "0.1"});
  ASSERT_EQ(p.rc, 0) << p.err;
  EXPECT_NE(p.out.find("300 pairs (270 train, 30 val)"), std::string::npos) << p.out;
  EXPECT_NE(p.out.find("pad 256, bos 257, eos 258, 0 sentinels"), std::string::npos) << p.out;
  // A GPT reads a token stream: a pair folder is named and refused, not misread.
  std::ofstream(d / "cfg.toml") << tiny_config(d / "data", d / "run", 5);
  expect_user_error(run_loom({"train", "--config", d / "cfg.toml"}), d / "data/meta.json");
}

}  // namespace
}  // namespace loom::test
