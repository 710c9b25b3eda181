// data_test.cpp: unit tests of the data pipeline: shards, the byte tokenizer, the window
// loader and `loom prepare`.
//
// Every input is random (the seed is printed on failure), and expectations are derived
// from the inputs, never written down, so a broken pipeline cannot pass by coincidence.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/check.h"
#include "core/rng.h"
#include "engine/data/prepare.h"
#include "engine/data/shard.h"
#include "engine/data/tokenizer.h"
#include "tests/support/seeded_test.h"

namespace loom::test {
namespace {

// Whether a line starts like a `bible` verse reference: [1-3]?[A-Za-z]+[0-9]+:[0-9]+ and a space.
// By hand because std::regex trips GCC 12's -Wmaybe-uninitialized inside libstdc++.
bool starts_with_reference(std::string_view line) {
  size_t i = 0;
  auto run = [&](auto pred) {
    const size_t from = i;
    while (i < line.size() && pred(static_cast<unsigned char>(line[i]))) ++i;
    return i > from;
  };
  if (i < line.size() && line[i] >= '1' && line[i] <= '3') ++i;
  if (!run([](unsigned char c) { return std::isalpha(c) != 0; })) return false;
  if (!run([](unsigned char c) { return std::isdigit(c) != 0; })) return false;
  if (i >= line.size() || line[i++] != ':') return false;
  if (!run([](unsigned char c) { return std::isdigit(c) != 0; })) return false;
  return i < line.size() && line[i] == ' ';
}

void expect_shard_equals(const loom::Shard& s, const std::vector<uint32_t>& tokens) {
  ASSERT_EQ(s.size(), tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) ASSERT_EQ(s[i], tokens[i]) << "token " << i;
}

class DataTest : public SeededTest {
 protected:
  // Random tokens below `vocab` written to shard `name` read back the same, `width` bytes each.
  void expect_round_trip(const std::string& name, uint32_t vocab, uint32_t width) {
    const auto tokens = random_tokens(rng_.below(20000), vocab);
    const std::string p = path(name);
    write_shard(p, tokens, vocab);
    Shard s(p);
    EXPECT_EQ(s.width(), width);
    EXPECT_EQ(s.vocab_size(), vocab);
    EXPECT_EQ(s.path(), p);
    EXPECT_EQ(fs::file_size(p), kShardHeaderBytes + width * tokens.size());
    expect_shard_equals(s, tokens);
  }
};

// ---------------------------------------------------------------------------------------
// Shards

TEST_F(DataTest, ShardRoundTripWidth2) {
  SEED_TRACE();
  for (int trial = 0; trial < 8; ++trial) {
    // Trial 0 pins the largest vocabulary that still fits 16 bits (token 65535).
    const uint32_t vocab = trial == 0 ? 65536u : 2u + static_cast<uint32_t>(rng_.below(65535));
    expect_round_trip("w2_" + std::to_string(trial) + ".bin", vocab, 2);
  }
}

TEST_F(DataTest, ShardRoundTripWidth4) {
  SEED_TRACE();
  for (int trial = 0; trial < 8; ++trial) {
    const uint32_t vocab = trial == 0 ? 65537u : 65537u + static_cast<uint32_t>(rng_.below(0xFFFFFFFFull - 65537));
    expect_round_trip("w4_" + std::to_string(trial) + ".bin", vocab, 4);
  }
}

TEST_F(DataTest, ShardRoundTripEmpty) {
  const std::string p = path("empty.bin");
  loom::write_shard(p, {}, 256);
  loom::Shard s(p);
  EXPECT_EQ(s.size(), 0u);
  EXPECT_EQ(s.vocab_size(), 256u);
}

TEST_F(DataTest, ShardRewriteReplacesAndLeavesNoTemporaries) {
  SEED_TRACE();
  const std::string p = path("x.bin");
  loom::write_shard(p, random_tokens(1000 + rng_.below(1000), 300), 300);
  const auto second = random_tokens(1 + rng_.below(1000), 70000);
  loom::write_shard(p, second, 70000);
  loom::Shard s(p);
  EXPECT_EQ(s.width(), 4u);
  expect_shard_equals(s, second);
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir_.str())) {
    ++files;
    EXPECT_EQ(e.path().filename(), "x.bin") << "left behind: " << e.path();
  }
  EXPECT_EQ(files, 1u);
}

// ---------------------------------------------------------------------------------------
// Tokenizer

TEST_F(DataTest, ByteTokenizerRoundTripsArbitraryBytes) {
  SEED_TRACE();
  auto tok = loom::make_tokenizer("byte");
  EXPECT_EQ(tok->name(), "byte");
  EXPECT_EQ(tok->vocab_size(), 256);
  for (int trial = 0; trial < 20; ++trial) {
    std::string bytes(rng_.below(5000), '\0');
    for (auto& c : bytes) c = static_cast<char>(rng_.below(256));  // NULs, invalid UTF-8, all of it
    const auto ids = tok->encode(bytes);
    ASSERT_EQ(ids.size(), bytes.size());
    for (size_t i = 0; i < ids.size(); ++i) ASSERT_EQ(ids[i], static_cast<unsigned char>(bytes[i]));
    EXPECT_EQ(tok->decode(ids), bytes);
  }
}

TEST_F(DataTest, ByteTokenizerRejectsIdsOutsideVocabulary) {
  SEED_TRACE();
  auto tok = loom::make_tokenizer("byte");
  auto ids = tok->encode(random_words(100));
  ids[rng_.below(ids.size())] = 256 + static_cast<uint32_t>(rng_.below(1u << 31));
  EXPECT_THROW(tok->decode(ids), loom::UserError);
}

TEST_F(DataTest, UnknownTokenizerIsUserError) {
  SEED_TRACE();
  const std::string spec = "tok" + std::to_string(rng_.next_u64());
  try {
    loom::make_tokenizer(spec);
    FAIL() << "no error for tokenizer " << spec;
  } catch (const loom::UserError& e) {
    EXPECT_NE(std::string(e.what()).find(spec), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------------------------------
// Window loader

// Every start in [0, size - T - 1] whose window equals row x of the batch.
std::vector<uint64_t> matching_starts(const loom::Shard& s, int T, const int32_t* x) {
  std::vector<uint64_t> found;
  for (uint64_t i = 0; i + T < s.size(); ++i) {
    bool same = true;
    for (int t = 0; t < T && same; ++t) same = static_cast<int32_t>(s[i + t]) == x[t];
    if (same) found.push_back(i);
  }
  return found;
}

TEST_F(DataTest, LoaderWindowsAreShiftedSlicesOfTheShard) {
  SEED_TRACE();
  for (int trial = 0; trial < 6; ++trial) {
    // A huge vocabulary makes every window unique, so a window tells us where it was drawn.
    const int T = 1 + static_cast<int>(rng_.below(40));
    const size_t n = T + 1 + rng_.below(400);
    loom::Shard s(random_shard("l" + std::to_string(trial) + ".bin", n, 0x7FFFFFFF));
    loom::WindowLoader loader(s, T, rng_.next_u64());
    const int B = 1 + static_cast<int>(rng_.below(8));
    std::vector<int32_t> x(B * T, -1), y(B * T, -1);
    for (int step = 0; step < 5; ++step) {
      loader.next_batch(B, 0, 1, x.data(), y.data());
      for (int b = 0; b < B; ++b) {
        const int32_t* xr = &x[b * T];
        const int32_t* yr = &y[b * T];
        for (int t = 0; t + 1 < T; ++t) ASSERT_EQ(yr[t], xr[t + 1]) << "row " << b << " t " << t;
        const auto starts = matching_starts(s, T, xr);
        ASSERT_EQ(starts.size(), 1u) << "row " << b << " is not one window of the shard";
        for (int t = 0; t < T; ++t) ASSERT_EQ(yr[t], static_cast<int32_t>(s[starts[0] + 1 + t]));
      }
    }
  }
}

TEST_F(DataTest, LoaderDrawsEveryStartIncludingBothEnds) {
  SEED_TRACE();
  const int T = 2 + static_cast<int>(rng_.below(10));
  const uint64_t n_starts = 2 + rng_.below(4);  // starts 0 .. size - T - 1
  loom::Shard s(random_shard("s.bin", T + n_starts, 0x7FFFFFFF));
  loom::WindowLoader loader(s, T, rng_.next_u64());
  std::set<uint64_t> seen;
  const int B = 4;
  std::vector<int32_t> x(B * T), y(B * T);
  for (int step = 0; step < 100; ++step) {
    loader.next_batch(B, 0, 1, x.data(), y.data());
    for (int b = 0; b < B; ++b) {
      const auto starts = matching_starts(s, T, &x[b * T]);
      ASSERT_EQ(starts.size(), 1u);
      seen.insert(starts[0]);
    }
  }
  // 400 draws over at most 5 starts: missing one by chance has probability < 5 * 0.8^400.
  EXPECT_EQ(seen.size(), n_starts);
  EXPECT_EQ(*seen.begin(), 0u);
  EXPECT_EQ(*seen.rbegin(), n_starts - 1);
}

TEST_F(DataTest, LoaderIsDeterministicUnderASeed) {
  SEED_TRACE();
  loom::Shard s(random_shard("d.bin", 5000 + rng_.below(5000), 256));
  const int T = 1 + static_cast<int>(rng_.below(64)), B = 1 + static_cast<int>(rng_.below(8));
  const uint64_t seed = rng_.next_u64();
  loom::WindowLoader a(s, T, seed), b(s, T, seed), c(s, T, seed + 1);
  std::vector<int32_t> xa(B * T), ya(B * T), xb(B * T), yb(B * T), xc(B * T), yc(B * T);
  bool c_differs = false, stream_moves = false;
  for (int step = 0; step < 10; ++step) {
    const std::vector<int32_t> previous = xa;
    a.next_batch(B, 0, 1, xa.data(), ya.data());
    stream_moves |= step > 0 && xa != previous;
    b.next_batch(B, 0, 1, xb.data(), yb.data());
    c.next_batch(B, 0, 1, xc.data(), yc.data());
    ASSERT_EQ(xa, xb) << "step " << step;
    ASSERT_EQ(ya, yb) << "step " << step;
    c_differs |= xa != xc;
  }
  EXPECT_TRUE(c_differs) << "another seed gave the same stream";
  EXPECT_TRUE(stream_moves) << "every batch was the same";
  EXPECT_EQ(a.state(), b.state());
}

TEST_F(DataTest, LoaderStateResumesTheSameStream) {
  SEED_TRACE();
  loom::Shard s(random_shard("r.bin", 3000 + rng_.below(3000), 1000));
  const int T = 1 + static_cast<int>(rng_.below(32)), B = 1 + static_cast<int>(rng_.below(6));
  loom::WindowLoader a(s, T, rng_.next_u64());
  std::vector<int32_t> x(B * T), y(B * T);
  const int before = static_cast<int>(rng_.below(10));
  for (int i = 0; i < before; ++i) a.next_batch(B, 0, 1, x.data(), y.data());
  const auto saved = a.state();

  std::vector<std::vector<int32_t>> xs, ys;
  for (int i = 0; i < 5; ++i) {
    a.next_batch(B, 0, 1, x.data(), y.data());
    xs.push_back(x);
    ys.push_back(y);
  }
  // A loader built with another seed continues the saved stream once given its state.
  loom::WindowLoader resumed(s, T, rng_.next_u64());
  resumed.set_state(saved);
  EXPECT_EQ(resumed.state(), saved);
  for (int i = 0; i < 5; ++i) {
    resumed.next_batch(B, 0, 1, x.data(), y.data());
    ASSERT_EQ(x, xs[i]) << "batch " << i;
    ASSERT_EQ(y, ys[i]) << "batch " << i;
  }
  EXPECT_EQ(resumed.state(), a.state());
}

TEST_F(DataTest, RankSlicesConcatenateToTheSingleRankBatch) {
  SEED_TRACE();
  loom::Shard s(random_shard("g.bin", 4000 + rng_.below(4000), 50000));
  const int T = 1 + static_cast<int>(rng_.below(48));
  const uint64_t seed = rng_.next_u64();
  for (int world : {2, 4}) {
    const int G = world * (1 + static_cast<int>(rng_.below(4)));
    const int B = G / world;
    loom::WindowLoader single(s, T, seed);
    std::vector<loom::WindowLoader> ranks;
    for (int r = 0; r < world; ++r) ranks.emplace_back(s, T, seed);
    std::vector<int32_t> x1(G * T), y1(G * T), xr(B * T), yr(B * T);
    for (int step = 0; step < 6; ++step) {
      single.next_batch(G, 0, 1, x1.data(), y1.data());
      std::vector<int32_t> xcat, ycat;
      for (int r = 0; r < world; ++r) {
        ranks[r].next_batch(G, r, world, xr.data(), yr.data());
        xcat.insert(xcat.end(), xr.begin(), xr.end());
        ycat.insert(ycat.end(), yr.begin(), yr.end());
      }
      ASSERT_EQ(xcat, x1) << "world " << world << " step " << step;
      ASSERT_EQ(ycat, y1) << "world " << world << " step " << step;
    }
    for (int r = 0; r < world; ++r) EXPECT_EQ(ranks[r].state(), single.state());
  }
}

// ---------------------------------------------------------------------------------------
// prepare

TEST_F(DataTest, PrepareSplitsATextFileIntoTrainAndVal) {
  SEED_TRACE();
  const std::string text = random_words(3 * loom::kMinSplitTokens + rng_.below(200000));
  const std::string corpus = path("corpus.txt");
  write_bytes(corpus, text);
  const double val_fraction = 0.02 + 0.3 * rng_.uniform_double();
  const std::string out = path("prepared/nested");
  loom::prepare_corpus(corpus, "byte", out, val_fraction);

  const loom::DataFolder f = loom::open_data_folder(out);
  EXPECT_EQ(f.dir, out);
  EXPECT_EQ(f.tokenizer, "byte");
  EXPECT_EQ(f.vocab_size, 256u);
  loom::Shard train(f.train_files), val(f.val_files);
  ASSERT_EQ(train.size() + val.size(), text.size());
  EXPECT_EQ(f.train_tokens, train.size());
  EXPECT_EQ(f.val_tokens, val.size());
  EXPECT_GE(val.size(), loom::kMinSplitTokens);
  EXPECT_GE(train.size(), loom::kMinSplitTokens);
  // The last val_fraction of the tokens (rounded, but never below the minimum).
  const double want = std::max<double>(text.size() * val_fraction, loom::kMinSplitTokens);
  EXPECT_NEAR(static_cast<double>(val.size()), want, 1.0);

  // train ++ val decodes back to the corpus: nothing lost, reordered or shifted.
  std::vector<uint32_t> all;
  for (uint64_t i = 0; i < train.size(); ++i) all.push_back(train[i]);
  for (uint64_t i = 0; i < val.size(); ++i) all.push_back(val[i]);
  EXPECT_EQ(loom::make_tokenizer("byte")->decode(all), text);
}

TEST_F(DataTest, PrepareKjvFetchesStripsAndTokenizesTheBible) {
  if (::access("/usr/bin/bible", X_OK) != 0 && std::system("command -v bible >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "the `bible` program (Debian bible-kjv) is not installed";
  const fs::path home = dir_ / "home";
  const std::string out = path("kjv");
  with_private_kjv_home(home, [&] { loom::prepare_corpus("kjv", "byte", out); });

  const fs::path text_path = home / "data" / "kjv.txt";
  ASSERT_TRUE(fs::is_regular_file(text_path));
  std::ifstream in(text_path, std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_GT(text.size(), 4'000'000u);
  // The checker itself must see a reference, or the loop below proves nothing.
  const std::string fake = std::to_string(1 + rng_.below(3)) + "Abc" + std::to_string(rng_.below(150)) + ":" +
                           std::to_string(rng_.below(180)) + " And";
  ASSERT_TRUE(starts_with_reference(fake)) << fake;
  ASSERT_TRUE(starts_with_reference(fake.substr(1))) << fake;
  // Every verse reference ("Ge1:1 ", "Rev22:21 ", "1Chr3:4 ") is gone, and verses remain.
  size_t lines = 0, pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    const std::string line = text.substr(pos, nl - pos);
    ASSERT_FALSE(starts_with_reference(line)) << "line " << lines << ": " << line;
    ++lines;
    pos = nl + 1;
  }
  EXPECT_GT(lines, 31000u);

  const loom::DataFolder f = loom::open_data_folder(out);
  EXPECT_EQ(f.train_tokens + f.val_tokens, text.size());
  loom::Shard val(f.val_files);
  std::vector<uint32_t> tail;
  for (uint64_t i = 0; i < val.size(); ++i) tail.push_back(val[i]);
  EXPECT_EQ(loom::make_tokenizer("byte")->decode(tail), text.substr(text.size() - val.size()));
}

}  // namespace
}  // namespace loom::test
