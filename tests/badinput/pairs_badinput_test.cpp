// pairs_badinput_test.cpp: bad sequence-pair input must be one line naming the file (and the
// line), exit 2: malformed TSV lines, unequal aligned files, empty sides, unreadable files,
// over-long sides, option mix-ups, and pair folders damaged after they were written.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/data/pairs.h"
#include "engine/data/prepare_pairs.h"
#include "tests/support/seeded_test.h"

namespace loom::test {
namespace {

class PairsBadInput : public SeededTest {
 protected:
  // n random lines of words (no TAB).
  std::vector<std::string> lines(size_t n) {
    std::vector<std::string> out;
    for (size_t i = 0; i < n; ++i) {
      std::string s = random_words(1 + rng_.below(30));
      for (char& c : s)
        if (c == '\n') c = ' ';
      out.push_back(s);
    }
    return out;
  }
  std::string write_lines(const std::string& name, const std::vector<std::string>& l) {
    std::ofstream f(path(name));
    for (const auto& s : l) f << s << "\n";
    return path(name);
  }
  // A valid TSV of n pairs, with line `bad` (1-based) replaced by `line`.
  std::string tsv(size_t n, size_t bad = 0, const std::string& line = "") {
    auto a = lines(n), b = lines(n);
    std::vector<std::string> l;
    for (size_t i = 0; i < n; ++i) l.push_back(i + 1 == bad ? line : a[i] + "\t" + b[i]);
    return write_lines("p.tsv", l);
  }
  // A valid pair folder; returns it.
  std::string folder() {
    PairPrepareOptions o;
    prepare_pairs_tsv(tsv(20 + rng_.below(100)), "byte", path("d"), o);
    return path("d");
  }
};

TEST_F(PairsBadInput, MalformedTsvLinesNameFileAndLine) {
  SEED_TRACE();
  const size_t n = 5 + rng_.below(50), bad = 1 + rng_.below(n);
  const std::string at = "p.tsv:" + std::to_string(bad) + ":";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"no tab here", "no TAB"},
      {"a\tb\tc", "2 TABs"},
      {"\ttarget", "empty source"},
      {"source\t", "empty target"},
      {"", "no TAB"},
      {std::string("bad \xC3\x28 utf8\tx"), "not UTF-8"},
  };
  for (const auto& [line, what] : cases) {
    const auto r = run_loom({"prepare", "--pairs", tsv(n, bad, line), "--out", path("out")});
    SCOPED_TRACE(what);
    expect_user_error(r, at);
    EXPECT_NE(r.err.find(what), std::string::npos) << r.err;
  }
}

TEST_F(PairsBadInput, AlignedFilesMustHaveTheSameLineCount) {
  SEED_TRACE();
  const size_t n = 3 + rng_.below(40), extra = 1 + rng_.below(3);
  const std::string a = write_lines("a.txt", lines(n)), b = write_lines("b.txt", lines(n + extra));
  auto r = run_loom({"prepare", "--source", a, "--target", b, "--out", path("o")});
  expect_user_error(r, "b.txt:" + std::to_string(n + 1) + ": no line " + std::to_string(n + 1) + " in " + a);
  r = run_loom({"prepare", "--source", b, "--target", a, "--out", path("o")});
  expect_user_error(r, "b.txt:" + std::to_string(n + 1) + ": no line " + std::to_string(n + 1) + " in " + a);
  // An empty line on one side is an empty source or target, named by its file and line.
  auto l = lines(n);
  const size_t k = rng_.below(n);
  l[k] = "";
  write_lines("c.txt", l);
  r = run_loom({"prepare", "--source", a, "--target", path("c.txt"), "--out", path("o")});
  expect_user_error(r, "c.txt:" + std::to_string(k + 1) + ": empty target");
}

TEST_F(PairsBadInput, UnreadableEmptyAndTooSmallInputs) {
  SEED_TRACE();
  expect_user_error(run_loom({"prepare", "--pairs", path("missing.tsv"), "--out", path("o")}), "missing.tsv: cannot open");
  std::filesystem::create_directories(path("dir.tsv"));
  expect_user_error(run_loom({"prepare", "--pairs", path("dir.tsv"), "--out", path("o")}), "dir.tsv: not a regular file");
  write_bytes(path("empty.tsv"), "");
  expect_user_error(run_loom({"prepare", "--pairs", path("empty.tsv"), "--out", path("o")}), "empty.tsv: pair file is empty");
  // One pair cannot make a train and a val split.
  expect_user_error(run_loom({"prepare", "--pairs", tsv(1), "--out", path("o")}), "p.tsv: 1 pair");
  expect_user_error(run_loom({"prepare", "--task", "span-corruption", "--corpus", path("nothing.txt"), "--out",
                              path("o")}),
                    "nothing.txt: cannot open");
}

TEST_F(PairsBadInput, SidesLongerThanMaxLen) {
  SEED_TRACE();
  const size_t n = 5 + rng_.below(20), bad = 1 + rng_.below(n);
  // The other lines hold at most 39 bytes (random_words stops past 30).
  const std::string long_side(51 + rng_.below(30), 'x');
  const std::string file = tsv(n, bad, rng_.below(2) ? "ab\t" + long_side : long_side + "\tab");
  const auto r = run_loom({"prepare", "--pairs", file, "--max-len", "50", "--out", path("o")});
  expect_user_error(r, "p.tsv:" + std::to_string(bad) + ":");
  EXPECT_NE(r.err.find("of " + std::to_string(long_side.size()) + " tokens is longer than --max-len 50"),
            std::string::npos)
      << r.err;
  // The same file passes with room to spare.
  EXPECT_EQ(run_loom({"prepare", "--pairs", file, "--max-len", "200", "--out", path("o")}).rc, 0);
}

TEST_F(PairsBadInput, OptionsThatDoNotGoTogether) {
  SEED_TRACE();
  const std::string p = tsv(10);
  const std::string a = write_lines("a.txt", lines(10));
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--pairs", p, "--source", a, "--target", a}, "give one of them"},
      {{"--source", a}, "--target: --source and --target come together"},
      {{"--target", a}, "--source: --source and --target come together"},
      {{"--task", "reversal"}, "--task: 'reversal' is not a task"},
      {{"--pairs", p, "--corpus", a}, "--corpus: pairs come from"},
      {{"--pairs", p, "--shard-tokens", "2000"}, "--shard-tokens: applies to token streams"},
      {{"--pairs", p, "--threads", "2"}, "--threads: applies to token streams"},
      {{"--pairs", p, "--seed", "3"}, "--seed: only --task"},
      {{"--corpus", a, "--max-len", "3"}, "--max-len: applies to pairs"},
      {{"--corpus", a, "--seed", "3"}, "--seed: applies to pairs"},
      {{"--pairs", p, "--masks", "4"}, "--masks: only --task"},
      {{"--pairs", p, "--mean-span", "2"}, "--mean-span: only --task"},
      {{"--pairs", p, "--whole-words"}, "--whole-words: only --task"},
      {{"--corpus", a, "--whole-words"}, "--whole-words: applies to pairs"},
      {{"--corpus", a, "--noise-density", "0.3"}, "--noise-density: applies to pairs"},
      {{"--task", "span-corruption", "--corpus", a, "--noise-density", "1"}, "--noise-density: 1 must be in (0, 1)"},
      {{"--task", "span-corruption", "--corpus", a, "--noise-density", "0"}, "--noise-density: 0 must be in (0, 1)"},
      {{"--task", "span-corruption", "--corpus", a, "--mean-span", "0.5"}, "--mean-span: 0.5 must be from 1 to"},
      {{"--task", "span-corruption", "--corpus", a, "--mean-span", "0", "--whole-words"}, "words"},
      {{"--task", "span-corruption", "--corpus", a, "--mean-span", "nan"}, "--mean-span"},
      {{"--corpus", a, "--masks", "4"}, "--masks: applies to pairs"},
      {{"--task", "span-corruption", "--corpus", a, "--masks", "0"}, "--masks: 0 must be in [1, 1000]"},
      {{"--task", "span-corruption", "--corpus", a, "--masks", "1001"}, "--masks: 1001 must be in [1, 1000]"},
  };
  for (auto [args, what] : cases) {
    args.insert(args.begin(), "prepare");
    args.push_back("--out");
    args.push_back(path("o"));
    expect_user_error(run_loom(args), what);
  }
}

TEST_F(PairsBadInput, DamagedPairFoldersAreRefusedNamingTheFile) {
  SEED_TRACE();
  const std::string d = folder();
  const std::string idx = d + "/train.idx", meta = d + "/meta.json";
  const std::string good_idx = read_bytes(idx), good_meta = read_bytes(meta);
  const uint64_t n = open_pair_folder(d).train_pairs;
  auto restore = [&] {
    write_bytes(idx, good_idx);
    write_bytes(meta, good_meta);
  };
  auto set_u64 = [&](size_t at, uint64_t v) {
    std::string b = good_idx;
    std::memcpy(b.data() + at, &v, 8);
    write_bytes(idx, b);
  };
  // The index.
  write_bytes(idx, "LOOMPAI");
  expect_user_error([&] { open_pair_folder(d); }, {idx, "too short"});
  std::string b = good_idx;
  b[rng_.below(8)] ^= 0x20;
  write_bytes(idx, b);
  expect_user_error([&] { open_pair_folder(d); }, {idx, "bad magic"});
  write_bytes(idx, good_idx.substr(0, good_idx.size() - 8 * (1 + rng_.below(n))));
  expect_user_error([&] { open_pair_folder(d); }, {idx, "size mismatch"});
  set_u64(16, n + 1 + rng_.below(1000));  // a count the file does not hold
  expect_user_error([&] { open_pair_folder(d); }, {idx, "size mismatch"});
  const uint64_t i = 1 + rng_.below(n - 1);  // a source offset that falls back
  set_u64(kPairIndexHeaderBytes + 8 * i, 0);
  expect_user_error([&] { open_pair_folder(d); }, {idx, "pair " + std::to_string(i - 1), "do not rise"});
  set_u64(kPairIndexHeaderBytes + 8 * n, 1u << 30);  // the source offsets end past the shard
  expect_user_error([&] { open_pair_folder(d); }, {idx, "source offsets end at"});
  restore();
  // The shards.
  const std::string src = read_bytes(d + "/train.src.bin");
  write_bytes(d + "/train.src.bin", src.substr(0, src.size() - 2));
  expect_user_error([&] { open_pair_folder(d); }, {d + "/train.src.bin"});
  write_bytes(d + "/train.src.bin", src);
  // meta.json.
  auto edit_meta = [&](const std::string& key, const nlohmann::json& value) {
    nlohmann::json m = nlohmann::json::parse(good_meta);
    m[key] = value;
    write_bytes(meta, m.dump());
  };
  for (const char* key : {"pad_id", "bos_id", "eos_id", "sentinel_first", "vocab_size"}) {
    edit_meta(key, nlohmann::json::parse(good_meta)[key].get<uint64_t>() + 1 + rng_.below(5));
    expect_user_error([&] { open_pair_folder(d); }, {meta, key});
  }
  edit_meta("train_pairs", n + 1);
  expect_user_error([&] { open_pair_folder(d); }, {idx, "pairs but"});
  edit_meta("val_target_tokens", 1);
  expect_user_error([&] { open_pair_folder(d); }, {d + "/val.idx", "target tokens"});
  edit_meta("task", "translation");
  expect_user_error([&] { open_pair_folder(d); }, {meta, "task"});
  edit_meta("format", "tokens");
  expect_user_error([&] { open_pair_folder(d); }, {meta, "not a folder of sequence pairs"});
  // Span corruption's masks per line: they divide the train pairs, 1 to 1000.
  edit_meta("masks", n + 1);
  expect_user_error([&] { open_pair_folder(d); }, {meta, "\"masks\" " + std::to_string(n + 1) + " must be at least 1 and divide"});
  edit_meta("masks", 0);
  expect_user_error([&] { open_pair_folder(d); }, {meta, "\"masks\" 0 must be at least 1"});
  edit_meta("masks", 1001);
  expect_user_error([&] { open_pair_folder(d); }, {meta, "\"masks\" must be an integer from 0 to 1000"});
  restore();
  // A pair folder where a token stream is expected, and the other way round.
  expect_user_error([&] { open_data_folder(d); }, {meta, "sequence pairs"});
  std::filesystem::create_directories(path("s"));
  const std::string stream = prepare_tiny_data(path("s"), 3000 + rng_.below(3000), rng_.next_u64());
  expect_user_error([&] { open_pair_folder(stream); }, {stream + "/meta.json", "not a folder of sequence pairs"});
  EXPECT_NO_THROW(open_pair_folder(d));
}

}  // namespace
}  // namespace loom::test
