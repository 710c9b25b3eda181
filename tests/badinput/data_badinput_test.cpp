// data_badinput_test.cpp: bad data must become a one-line UserError naming the file.
//
// Truncated, foreign and mis-versioned shards, corrupt meta.json, empty and missing corpora:
// each is made from random valid data and then damaged at a random place, and each must be
// refused with a message that contains the offending path (never a crash, never accepted).
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/check.h"
#include "core/rng.h"
#include "engine/data/prepare.h"
#include "engine/data/shard.h"
#include "engine/data/tokenizer.h"
#include "tests/support/seeded_test.h"

namespace loom::test {
namespace {

class DataBadInput : public SeededTest {
 protected:
  // A valid shard of random tokens (a random vocabulary unless given); returns its path.
  std::string valid_shard(const std::string& name, uint32_t vocab = 0) {
    if (vocab == 0) vocab = 2 + static_cast<uint32_t>(rng_.below(rng_.below(2) ? 65535 : 1000000));
    return random_shard(name, 10 + rng_.below(3000), vocab);
  }
  // A valid shard whose bytes `edit` then damages; returns its path.
  std::string damaged_shard(const std::string& name, const std::function<void(std::string&)>& edit,
                            uint32_t vocab = 0) {
    const std::string p = valid_shard(name, vocab);
    std::string bytes = read_bytes(p);
    edit(bytes);
    write_bytes(p, bytes);
    return p;
  }
  // A folder written by prepare_corpus from a random corpus; returns the folder.
  std::string valid_folder() {
    return prepare_tiny_data(dir_.str(), 3 * loom::kMinSplitTokens + rng_.below(20000), rng_.next_u64());
  }
};

void patch_u32(std::string& bytes, size_t offset, uint32_t v) { std::memcpy(bytes.data() + offset, &v, 4); }

// ---------------------------------------------------------------------------------------
// Shards

TEST_F(DataBadInput, TruncatedShard) {
  SEED_TRACE();
  for (int trial = 0; trial < 5; ++trial) {
    const std::string p = damaged_shard(std::string("t") + std::to_string(trial) + ".bin", [&](std::string& bytes) {
      const size_t payload = bytes.size() - loom::kShardHeaderBytes;
      bytes.resize(bytes.size() - 1 - rng_.below(payload));  // keep the header, lose >= 1 byte
    });
    expect_user_error([&] { loom::Shard s(p); }, {p, "size mismatch"});
  }
}

TEST_F(DataBadInput, ShardShorterThanItsHeader) {
  SEED_TRACE();
  const std::string p =
      damaged_shard("h.bin", [&](std::string& bytes) { bytes.resize(rng_.below(loom::kShardHeaderBytes)); });
  expect_user_error([&] { loom::Shard s(p); }, {p, "too short"});
}

TEST_F(DataBadInput, ShardWithBytesAppended) {
  SEED_TRACE();
  const std::string p =
      damaged_shard("a.bin", [&](std::string& bytes) { bytes += std::string(1 + rng_.below(100), 'x'); });
  expect_user_error([&] { loom::Shard s(p); }, {p, "size mismatch"});
}

TEST_F(DataBadInput, ForeignFileIsNotAShard) {
  SEED_TRACE();
  const std::string p = path("foreign.bin");
  std::string bytes(loom::kShardHeaderBytes + rng_.below(4096), '\0');
  for (auto& c : bytes) c = static_cast<char>(rng_.below(256));
  if (std::memcmp(bytes.data(), loom::kShardMagic, 8) == 0) bytes[0] ^= 1;
  write_bytes(p, bytes);
  expect_user_error([&] { loom::Shard s(p); }, {p, "not a loom token shard"});
}

TEST_F(DataBadInput, EmptyFileIsNotAShard) {
  const std::string p = path("empty.bin");
  write_bytes(p, "");
  expect_user_error([&] { loom::Shard s(p); }, {p, "too short"});
}

TEST_F(DataBadInput, WrongVersion) {
  SEED_TRACE();
  uint32_t version = static_cast<uint32_t>(rng_.next_u64());
  if (version == loom::kShardVersion) ++version;
  const std::string p = damaged_shard("v.bin", [&](std::string& bytes) { patch_u32(bytes, 8, version); });
  expect_user_error([&] { loom::Shard s(p); }, {p, "version", std::to_string(version)});
}

TEST_F(DataBadInput, BadWidth) {
  SEED_TRACE();
  uint32_t width = static_cast<uint32_t>(rng_.below(64));
  if (width == 2 || width == 4) width += 1;
  const std::string p = damaged_shard("w.bin", [&](std::string& bytes) { patch_u32(bytes, 12, width); });
  expect_user_error([&] { loom::Shard s(p); }, {p, "width"});
}

TEST_F(DataBadInput, VocabularyTooLargeForWidth2) {
  SEED_TRACE();
  const std::string p = damaged_shard(
      "vw.bin", [&](std::string& bytes) { patch_u32(bytes, 16, 65537 + static_cast<uint32_t>(rng_.below(1000000))); },
      1 + static_cast<uint32_t>(rng_.below(65536)));
  expect_user_error([&] { loom::Shard s(p); }, {p, "vocabulary"});
}

TEST_F(DataBadInput, MissingShard) {
  SEED_TRACE();
  const std::string p = path("missing" + std::to_string(rng_.next_u64()) + ".bin");
  expect_user_error([&] { loom::Shard s(p); }, {p});
}

TEST_F(DataBadInput, FolderIsNotAShard) {
  const std::string p = path("folder.bin");
  fs::create_directories(p);
  expect_user_error([&] { loom::Shard s(p); }, {p});
}

// A header that validates but tokens beyond the vocabulary: the loader must refuse them
// rather than hand an out-of-range id to an embedding lookup.
TEST_F(DataBadInput, TokenOutsideVocabulary) {
  SEED_TRACE();
  const uint32_t vocab = 2 + static_cast<uint32_t>(rng_.below(60000));
  size_t n = 0;
  const std::string p = damaged_shard(
      "oov.bin",
      [&](std::string& bytes) {
        n = (bytes.size() - loom::kShardHeaderBytes) / 2;
        for (size_t i = 0; i < n; ++i) {
          const uint16_t bad = static_cast<uint16_t>(vocab + rng_.below(65536 - vocab));
          std::memcpy(bytes.data() + loom::kShardHeaderBytes + 2 * i, &bad, 2);
        }
      },
      vocab);
  loom::Shard s(p);
  loom::WindowLoader loader(s, 1 + static_cast<int>(rng_.below(n - 1)), rng_.next_u64());
  std::vector<int32_t> x(4096 * 4), y(4096 * 4);
  expect_user_error([&] { loader.next_batch(1, 0, 1, x.data(), y.data()); }, {p, "vocabulary"});
}

TEST_F(DataBadInput, ShardTooShortForTheLoader) {
  SEED_TRACE();
  const size_t n = 1 + rng_.below(100);
  const std::string p = random_shard("short.bin", n, 256);
  loom::Shard s(p);
  const int T = static_cast<int>(n + rng_.below(100));  // needs T + 1 > n tokens
  expect_user_error([&] { loom::WindowLoader l(s, T, 1); }, {p, "seq_len"});
}

// ---------------------------------------------------------------------------------------
// prepare

TEST_F(DataBadInput, EmptyCorpus) {
  const std::string p = path("empty.txt");
  write_bytes(p, "");
  expect_user_error([&] { loom::prepare_corpus(p, "byte", path("out")); }, {p, "empty"});
}

TEST_F(DataBadInput, MissingCorpus) {
  SEED_TRACE();
  const std::string p = path("no-such-corpus-" + std::to_string(rng_.next_u64()) + ".txt");
  expect_user_error([&] { loom::prepare_corpus(p, "byte", path("out")); }, {p});
  EXPECT_FALSE(fs::exists(path("out")));
}

TEST_F(DataBadInput, CorpusTooSmallForBothSplits) {
  SEED_TRACE();
  const std::string p = path("small.txt");
  write_bytes(p, random_words(1 + rng_.below(2 * loom::kMinSplitTokens - 20)).substr(0, 2 * loom::kMinSplitTokens - 1));
  expect_user_error([&] { loom::prepare_corpus(p, "byte", path("out")); }, {p, "too small"});
}

TEST_F(DataBadInput, CorpusThatIsNotUtf8) {
  SEED_TRACE();
  const std::string p = path("latin1.txt");
  std::string text = random_words(3 * loom::kMinSplitTokens);
  const size_t at = rng_.below(text.size());
  text[at] = static_cast<char>(0x80 + rng_.below(0x40));  // a lone continuation byte
  write_bytes(p, text);
  expect_user_error([&] { loom::prepare_corpus(p, "byte", path("out")); },
                    {p, "UTF-8", "offset " + std::to_string(at)});
}

TEST_F(DataBadInput, UnknownTokenizer) {
  SEED_TRACE();
  const std::string p = path("c.txt");
  write_bytes(p, random_words(3 * loom::kMinSplitTokens));
  const std::string spec = "nope" + std::to_string(rng_.below(1000));
  expect_user_error([&] { loom::prepare_corpus(p, spec, path("out")); }, {spec});
}

TEST_F(DataBadInput, OutputFolderBlockedByAFile) {
  SEED_TRACE();
  const std::string p = path("c.txt");
  write_bytes(p, random_words(3 * loom::kMinSplitTokens));
  const std::string blocker = path("blocker");
  write_bytes(blocker, "x");
  const std::string out = blocker + "/data";
  expect_user_error([&] { loom::prepare_corpus(p, "byte", out); }, {out});
}

// ---------------------------------------------------------------------------------------
// Data folders

TEST_F(DataBadInput, MissingDataFolder) {
  SEED_TRACE();
  const std::string d = path("nowhere" + std::to_string(rng_.next_u64()));
  expect_user_error([&] { loom::open_data_folder(d); }, {d});
}

TEST_F(DataBadInput, MissingMetaJson) {
  SEED_TRACE();
  const std::string d = valid_folder();
  fs::remove(d + "/meta.json");
  expect_user_error([&] { loom::open_data_folder(d); }, {d + "/meta.json"});
}

TEST_F(DataBadInput, MissingShardInFolder) {
  SEED_TRACE();
  const std::string d = valid_folder();
  const std::string victim = d + (rng_.below(2) ? "/train.bin" : "/val.bin");
  fs::remove(victim);
  expect_user_error([&] { loom::open_data_folder(d); }, {victim});
}

TEST_F(DataBadInput, CorruptMetaJson) {
  SEED_TRACE();
  const std::string d = valid_folder();
  const std::string meta_path = d + "/meta.json";
  const std::string good = read_bytes(meta_path);
  ASSERT_NO_THROW(loom::open_data_folder(d));
  const nlohmann::json meta = nlohmann::json::parse(good);
  const std::vector<std::string> keys = {"tokenizer", "vocab_size", "train_tokens", "val_tokens"};

  std::vector<std::pair<std::string, std::string>> damaged;  // (what, bytes)
  {
    std::string noise(1 + rng_.below(200), '\0');
    for (auto& c : noise) c = static_cast<char>(rng_.below(256));
    damaged.emplace_back("random bytes", noise);
  }
  damaged.emplace_back("truncated", good.substr(0, rng_.below(good.size() - 2)));
  damaged.emplace_back("not an object", "[" + std::to_string(rng_.below(1000)) + "]");
  {
    nlohmann::json j = meta;
    j.erase(keys[rng_.below(keys.size())]);
    damaged.emplace_back("missing key", j.dump());
  }
  {
    nlohmann::json j = meta;
    j[keys[1 + rng_.below(3)]] = "x" + std::to_string(rng_.below(1000));
    damaged.emplace_back("count as a string", j.dump());
  }
  {
    nlohmann::json j = meta;
    j[keys[1 + rng_.below(3)]] = -1 - static_cast<int64_t>(rng_.below(1000));
    damaged.emplace_back("negative count", j.dump());
  }
  {
    nlohmann::json j = meta;
    j["tokenizer"] = 1 + rng_.below(1000);
    damaged.emplace_back("tokenizer not a string", j.dump());
  }
  {
    nlohmann::json j = meta;
    j["tokenizer"] = "tok" + std::to_string(rng_.below(1000));
    damaged.emplace_back("unknown tokenizer", j.dump());
  }
  {
    nlohmann::json j = meta;
    j["vocab_size"] = 257 + rng_.below(100000);
    damaged.emplace_back("vocabulary mismatch", j.dump());
  }
  {
    nlohmann::json j = meta;
    const std::string key = rng_.below(2) ? "train_tokens" : "val_tokens";
    j[key] = j[key].get<uint64_t>() + 1 + rng_.below(1000);
    damaged.emplace_back("token count mismatch", j.dump());
  }
  for (const auto& [what, bytes] : damaged) {
    SCOPED_TRACE(what);
    write_bytes(meta_path, bytes);
    expect_user_error([&] { loom::open_data_folder(d); }, {meta_path});
  }
}

}  // namespace
}  // namespace loom::test
