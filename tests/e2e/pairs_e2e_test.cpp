// pairs_e2e_test.cpp: `loom prepare` for sequence pairs through the CLI: the built-in span
// corruption task on the default corpus ("kjv", found through LOOM_HOME like any run finds it;
// here a private home holding verses written by the test, so no download and no source-tree
// data is touched), deterministic for --seed; pairs from a TSV file with its summary line; and
// a pair folder handed to a token-stream model is refused by name.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>

#include "core/rng.h"
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

// --noise-density and --mean-span reach span corruption: every line of 200 random bytes loses
// round(200 density) of them in round(masked / mean span) spans, and meta.json records both.
TEST(PairsE2e, SpanCorruptionTakesItsDensityAndMeanSpanFromTheCommandLine) {
  TempDir d;
  Rng rng(static_cast<uint64_t>(std::random_device{}()));
  const double density = 0.1 + 0.4 * rng.uniform_double(), mean_span = 1.0 + 4.0 * rng.uniform_double();
  SCOPED_TRACE(::testing::Message() << "density " << density << ", mean span " << mean_span);
  std::string text;
  for (int i = 0; i < 100; ++i) {
    for (int j = 0; j < 200; ++j) text += static_cast<char>('a' + rng.below(26));
    text += "\n";
  }
  std::ofstream(d / "lines.txt") << text;
  char dens[32], span[32];
  std::snprintf(dens, sizeof dens, "%.6f", density);
  std::snprintf(span, sizeof span, "%.6f", mean_span);
  const RunResult r = run_loom({"prepare", "--corpus", d / "lines.txt", "--task", "span-corruption", "--noise-density",
                                dens, "--mean-span", span, "--out", d / "spans"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const PairFolder f = open_pair_folder(d / "spans");
  const auto want_masked = static_cast<uint64_t>(std::lround(200 * std::stod(dens)));  // what loom read
  const auto want_spans = static_cast<uint64_t>(std::lround(static_cast<double>(want_masked) / std::stod(span)));
  uint64_t total = 0;
  std::vector<uint32_t> s, t;
  for (const char* name : {"train", "val"}) {
    const PairSplit split(d / "spans", name);
    for (uint64_t i = 0; i < split.size(); ++i) {
      s.clear();
      t.clear();
      split.read_source(i, s);
      split.read_target(i, t);
      const auto n = static_cast<uint64_t>(std::count_if(t.begin(), t.end(), [&](uint32_t x) { return f.vocab.is_sentinel(x); }));
      ASSERT_EQ(t.size() - n, want_masked) << name << " pair " << i;
      ASSERT_EQ(n, std::max<uint64_t>(want_spans, 1)) << name << " pair " << i;
      total += s.size() - n + t.size() - n;
    }
  }
  ASSERT_EQ(total, 100u * 200u);
  const std::string meta = read_bytes(d / "spans/meta.json");
  EXPECT_NE(meta.find("\"noise_density\": " + std::string(dens).substr(0, 5)), std::string::npos) << meta;
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
