// bpe_test.cpp: loom's byte-level BPE: the incremental trainer against a naive one that
// recounts everything per merge, encoding against GPT-2's reference merge loop, round trips of
// arbitrary bytes, streaming equal to whole-text encoding, the file format, and `prepare`
// streaming with a BPE vocabulary.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "core/check.h"
#include "engine/data/bpe.h"
#include "engine/data/corpus.h"
#include "engine/data/prepare.h"
#include "engine/data/shard.h"
#include "tests/support/helpers.h"

namespace loom::test {
namespace {

using Counts = std::unordered_map<std::string, uint64_t>;
using Merges = std::vector<std::pair<uint32_t, uint32_t>>;

// The textbook trainer: recount every pair of every word before each merge.
Merges naive_train(const Counts& counts, uint32_t vocab_size) {
  std::map<std::string, uint64_t> sorted(counts.begin(), counts.end());
  std::vector<std::pair<std::vector<uint32_t>, uint64_t>> words;
  for (const auto& [w, c] : sorted) {
    std::vector<uint32_t> s;
    for (unsigned char ch : w) s.push_back(ch);
    words.emplace_back(s, c);
  }
  Merges out;
  while (out.size() + 256 < vocab_size) {
    std::map<std::pair<uint32_t, uint32_t>, uint64_t> pc;
    for (const auto& [s, c] : words)
      for (size_t i = 0; i + 1 < s.size(); ++i) pc[{s[i], s[i + 1]}] += c;
    if (pc.empty()) break;
    auto best = pc.begin();
    for (auto it = pc.begin(); it != pc.end(); ++it)
      if (it->second > best->second) best = it;  // ties: the smallest pair (map order)
    const auto [a, b] = best->first;
    const uint32_t id = 256 + static_cast<uint32_t>(out.size());
    out.push_back(best->first);
    for (auto& [s, c] : words) {
      std::vector<uint32_t> n;
      for (size_t i = 0; i < s.size();) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
          n.push_back(id);
          i += 2;
        } else {
          n.push_back(s[i++]);
        }
      }
      s = n;
    }
  }
  return out;
}

// GPT-2's encoder.py loop for one piece: find the lowest-ranked pair, merge all its
// occurrences left to right, repeat.
std::vector<uint32_t> naive_encode_piece(const std::string& piece, const Merges& merges) {
  std::map<std::pair<uint32_t, uint32_t>, uint32_t> rank;
  for (uint32_t i = 0; i < merges.size(); ++i) rank.emplace(merges[i], i);
  std::vector<uint32_t> w;
  for (unsigned char c : piece) w.push_back(c);
  while (w.size() > 1) {
    uint32_t best = UINT32_MAX;
    for (size_t i = 0; i + 1 < w.size(); ++i) {
      auto it = rank.find({w[i], w[i + 1]});
      if (it != rank.end()) best = std::min(best, it->second);
    }
    if (best == UINT32_MAX) break;
    const auto [a, b] = merges[best];
    std::vector<uint32_t> n;
    for (size_t i = 0; i < w.size();) {
      if (i + 1 < w.size() && w[i] == a && w[i + 1] == b) {
        n.push_back(256 + best);
        i += 2;
      } else {
        n.push_back(w[i++]);
      }
    }
    w = n;
  }
  return w;
}

std::string random_text(Rng& r, size_t words) {
  static const char* vocab[] = {"the", "then", "there", "and", "hand", "handed", "aaaa", "aa", "a", "I'll",
                                "don't", "42", "1999", "!!", "...", "é", "日本", "  ", "\n", "\t"};
  std::string s;
  for (size_t i = 0; i < words; ++i) {
    s += vocab[r.below(20)];
    s += r.below(3) ? " " : "";
  }
  return s;
}

std::string random_bytes(Rng& r, size_t n) {
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(r.below(256));
  return s;
}

Counts count_pieces(const std::string& text) {
  Pretokenizer pre("gpt2", "test");
  Counts c;
  pre.split(text, true, [&](std::string_view p) { ++c[std::string(p)]; });
  return c;
}

TEST(Bpe, IncrementalTrainerEqualsNaive) {
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    Rng r(seed);
    const std::string text = random_text(r, 400 + r.below(400)) + (seed % 2 ? random_bytes(r, 300) : "");
    const Counts counts = count_pieces(text);
    const uint32_t vocab = 256 + 20 + static_cast<uint32_t>(r.below(150));
    const BpeMerges fast = train_bpe_counts(counts, vocab);
    const Merges slow = naive_train(counts, vocab);
    ASSERT_EQ(fast.merges, slow) << "seed " << seed;
    ASSERT_GT(fast.merges.size(), 10u);
  }
}

TEST(Bpe, FirstMergeIsTheMostFrequentPair) {
  const BpeMerges m = train_bpe_counts({{"abab", 10}, {"cd", 15}, {"x", 100}}, 258);
  ASSERT_EQ(m.merges.size(), 2u);
  EXPECT_EQ(m.merges[0], (std::pair<uint32_t, uint32_t>{'a', 'b'}));  // 20 > 15
  EXPECT_EQ(m.merges[1], (std::pair<uint32_t, uint32_t>{'c', 'd'}));  // (ab,ab) has 10
  // Runs out of pairs: fewer merges than asked, no crash.
  EXPECT_EQ(train_bpe_counts({{"ab", 1}}, 300).merges.size(), 1u);
}

TEST(Bpe, EncodeMatchesReferenceLoopAndRoundTrips) {
  Rng r(7);
  const std::string train_text = random_text(r, 3000);
  const BpeMerges m = train_bpe_counts(count_pieces(train_text), 256 + 300);
  auto tok = make_bpe_tokenizer(m);
  Pretokenizer pre("gpt2", "test");
  for (int t = 0; t < 50; ++t) {
    const std::string text = random_text(r, 1 + r.below(60)) + (t % 3 == 0 ? random_bytes(r, r.below(40)) : "");
    std::vector<uint32_t> expect;
    pre.split(text, true, [&](std::string_view p) {
      const auto ids = naive_encode_piece(std::string(p), m.merges);
      expect.insert(expect.end(), ids.begin(), ids.end());
    });
    const auto ids = tok->encode(text);
    ASSERT_EQ(ids, expect) << "text: " << text;
    ASSERT_EQ(tok->decode(ids), text);
  }
  // Long single pieces (a run of one letter, a whitespace run) take the heap path hard.
  for (const std::string& s : {std::string(5000, 'a'), std::string(3000, ' ') + "x", std::string(777, '\n')}) {
    std::vector<uint32_t> expect;
    pre.split(s, true, [&](std::string_view p) {
      const auto ids = naive_encode_piece(std::string(p), m.merges);
      expect.insert(expect.end(), ids.begin(), ids.end());
    });
    EXPECT_EQ(tok->encode(s), expect);
    EXPECT_EQ(tok->decode(tok->encode(s)), s);
  }
  // Any bytes at all, invalid UTF-8 included.
  for (int t = 0; t < 30; ++t) {
    const std::string s = random_bytes(r, r.below(2000));
    ASSERT_EQ(tok->decode(tok->encode(s)), s);
  }
  EXPECT_THROW(tok->decode(std::vector<uint32_t>{256 + 300}), UserError);
}

TEST(Bpe, StreamingEqualsWholeText) {
  Rng r(11);
  const BpeMerges m = train_bpe_counts(count_pieces(random_text(r, 2000)), 256 + 200);
  auto tok = make_bpe_tokenizer(m);
  for (int t = 0; t < 20; ++t) {
    std::string text = random_text(r, 300);
    if (t % 2) text += random_bytes(r, 200) + random_text(r, 50);  // invalid UTF-8 too
    const auto whole = tok->encode(text);
    // Chunk by chunk, with random chunk sizes, carrying the unconsumed rest.
    std::vector<uint32_t> streamed;
    std::string buf;
    size_t pos = 0;
    while (pos < text.size() || !buf.empty()) {
      const size_t take = std::min(text.size() - pos, static_cast<size_t>(1 + r.below(40)));
      buf += text.substr(pos, take);
      pos += take;
      const bool end = pos == text.size();
      const size_t used = tok->encode_stream(buf, end, streamed);
      ASSERT_LE(used, buf.size());
      if (end) {
        ASSERT_EQ(used, buf.size());
      }
      buf.erase(0, used);
    }
    ASSERT_EQ(streamed, whole) << "text: " << text;
  }
}

TEST(Bpe, PretokenizerPieces) {
  Pretokenizer pre("gpt2", "test");
  std::vector<std::string> got;
  pre.split("Hello world's  end\n\n 42x!?", true, [&](std::string_view p) { got.emplace_back(p); });
  const std::vector<std::string> want = {"Hello", " world", "'s", " ", " end", "\n\n", " 42", "x", "!?"};
  EXPECT_EQ(got, want);
  // Invalid UTF-8 becomes pieces of its own; every byte is covered once.
  got.clear();
  pre.split("ab\xff\xfe cd", true, [&](std::string_view p) { got.emplace_back(p); });
  std::string joined;
  for (auto& p : got) joined += p;
  EXPECT_EQ(joined, "ab\xff\xfe cd");
  EXPECT_EQ(got.front(), "ab");
  EXPECT_EQ(got.back(), " cd");
  EXPECT_THROW(Pretokenizer("gpt4", "x.json"), UserError);
}

TEST(Bpe, FileRoundTripAndFactory) {
  TempDir d;
  Rng r(3);
  const BpeMerges m = train_bpe_counts(count_pieces(random_text(r, 2000)), 256 + 100);
  const std::string text = serialize_bpe(m);
  const BpeMerges back = parse_bpe(text, "mem");
  EXPECT_EQ(back.merges, m.merges);
  EXPECT_EQ(back.pretokenizer, "gpt2");
  std::ofstream(d / "tok.json") << text;
  auto a = make_tokenizer(d / "tok.json");
  auto b = make_tokenizer("bpe:" + (d / "tok.json"));
  auto c = make_tokenizer(a->spec());  // inline, as checkpoints carry it
  EXPECT_EQ(a->vocab_size(), 356);
  const std::string s = random_text(r, 100);
  EXPECT_EQ(a->encode(s), b->encode(s));
  EXPECT_EQ(a->encode(s), c->encode(s));
  EXPECT_EQ(a->name(), "bpe");
  // Malformed files name themselves.
  auto expect_bad = [&](const std::string& body, const std::string& what) {
    std::ofstream(d / "bad.json", std::ios::trunc) << body;
    try {
      make_tokenizer(d / "bad.json");
      ADD_FAILURE() << "accepted: " << body;
    } catch (const UserError& e) {
      EXPECT_NE(std::string(e.what()).find(d / "bad.json"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  expect_bad("{\"format\": \"loom-bpe\", \"version\": 1, ", "invalid JSON");
  expect_bad("{\"format\": \"other\"}", "not a loom BPE tokenizer file");
  expect_bad("{\"format\": \"loom-bpe\", \"version\": 2, \"pretokenizer\": \"gpt2\", \"vocab_size\": 256, \"merges\": []}",
             "unsupported loom-bpe version");
  expect_bad("{\"format\": \"loom-bpe\", \"version\": 1, \"pretokenizer\": \"gpt2\", \"vocab_size\": 257, \"merges\": "
             "[[1,256]]}",
             "merge 0");
  expect_bad("{\"format\": \"loom-bpe\", \"version\": 1, \"pretokenizer\": \"gpt2\", \"vocab_size\": 300, \"merges\": "
             "[[1,2]]}",
             "vocab_size");
  expect_bad("{\"format\": \"loom-bpe\", \"version\": 1, \"pretokenizer\": \"nope\", \"vocab_size\": 256, \"merges\": []}",
             "pre-tokenizer");
}

TEST(Bpe, TrainFromFileStreams) {
  TempDir d;
  Rng r(5);
  const std::string text = random_text(r, 5000);
  std::ofstream(d / "c.txt") << text;
  uint64_t last_done = 0, last_total = 0;
  BpeTrainStats st;
  const BpeMerges m = train_bpe(d / "c.txt", 256 + 80, &st, [&](uint64_t done, uint64_t total) {
    last_done = done;
    last_total = total;
  });
  EXPECT_EQ(m.merges, naive_train(count_pieces(text), 256 + 80));
  EXPECT_EQ(st.bytes, text.size());
  EXPECT_EQ(last_done, text.size());
  EXPECT_EQ(last_total, text.size());
}

std::vector<uint32_t> shard_tokens(const std::string& path) {
  Shard s(path);
  std::vector<uint32_t> t(s.size());
  for (uint64_t i = 0; i < s.size(); ++i) t[i] = s[i];
  return t;
}

TEST(Bpe, PrepareStreamsAndKeepsTheSplit) {
  TempDir d;
  Rng r(9);
  // Multi-byte characters everywhere, so tiny chunks cut characters and pieces in two.
  std::string text;
  while (text.size() < 60000) text += random_text(r, 50) + "\n";
  std::ofstream(d / "c.txt") << text;
  const BpeMerges m = train_bpe_counts(count_pieces(text), 256 + 150);
  std::ofstream(d / "tok.json") << serialize_bpe(m);
  auto tok = make_tokenizer(d / "tok.json");
  const auto whole = tok->encode(text);

  for (size_t chunk : {size_t{1} << 23, size_t{4096}, size_t{777}, size_t{5}}) {
    const std::string out = d / ("data" + std::to_string(chunk));
    PrepareOptions o;
    o.val_fraction = 0.1;
    o.chunk_bytes = chunk;
    uint64_t reports = 0, done_last = 0;
    o.progress = [&](uint64_t done, uint64_t total) {
      ++reports;
      EXPECT_LE(done, total);
      EXPECT_GE(done, done_last);
      done_last = done;
    };
    prepare_corpus(d / "c.txt", d / "tok.json", out, o);
    EXPECT_EQ(done_last, text.size());
    if (chunk < 1000) {
      EXPECT_GT(reports, 10u);
    }
    auto train = shard_tokens(out + "/train.bin"), val = shard_tokens(out + "/val.bin");
    // The split is the old one: the last ceil(n * 0.1) tokens.
    const uint64_t n = whole.size();
    const uint64_t n_val = std::max<uint64_t>(static_cast<uint64_t>(std::ceil(n * 0.1)), kMinSplitTokens);
    ASSERT_EQ(val.size(), n_val) << "chunk " << chunk;
    train.insert(train.end(), val.begin(), val.end());
    ASSERT_EQ(train, whole) << "chunk " << chunk;
    EXPECT_EQ(tok->decode(train), text);
    const DataFolder f = open_data_folder(out);
    EXPECT_EQ(f.vocab_size, 256u + 150u);
    EXPECT_EQ(make_tokenizer(f.tokenizer)->encode("the hand"), tok->encode("the hand"));
    const auto meta = nlohmann::json::parse(read_bytes(out + "/meta.json"));
    EXPECT_EQ(meta["tokenizer"], "bpe:tokenizer.json");
  }
  // The folder carries its vocabulary: it still opens after the original file is gone and
  // the folder has moved.
  fs::remove(d / "tok.json");
  fs::rename(d / "data777", d / "moved");
  EXPECT_EQ(open_data_folder(d / "moved").vocab_size, 256u + 150u);
}

TEST(Bpe, PrepareByteTokensUnchangedAndUtf8CheckedAcrossChunks) {
  TempDir d;
  std::string text;
  Rng r(2);
  while (text.size() < 20000) text += random_text(r, 30) + "\n";
  std::ofstream(d / "c.txt") << text;
  PrepareOptions o;
  o.val_fraction = 0.2;
  o.chunk_bytes = 3;  // cuts every multi-byte character somewhere
  prepare_corpus(d / "c.txt", "byte", d / "a", o);
  auto t = shard_tokens(d / "a/train.bin"), v = shard_tokens(d / "a/val.bin");
  t.insert(t.end(), v.begin(), v.end());
  ASSERT_EQ(t.size(), text.size());
  for (size_t i = 0; i < t.size(); ++i) ASSERT_EQ(t[i], static_cast<unsigned char>(text[i]));
  // A bad byte is reported at its offset whatever the chunking.
  size_t at = 12345;
  while (static_cast<unsigned char>(text[at]) >= 0x80) ++at;  // replace a whole (ASCII) character
  std::string bad = text;
  bad[at] = '\xff';
  std::ofstream(d / "bad.txt") << bad;
  for (size_t chunk : {size_t{1}, size_t{7}, size_t{1} << 20}) {
    o.chunk_bytes = chunk;
    try {
      prepare_corpus(d / "bad.txt", "byte", d / "b", o);
      ADD_FAILURE() << "accepted invalid UTF-8";
    } catch (const UserError& e) {
      EXPECT_NE(std::string(e.what()).find("at offset " + std::to_string(at)), std::string::npos) << e.what();
    }
  }
  // Nothing half-written is left behind.
  for (const auto& e : fs::directory_iterator(d / "b")) ADD_FAILURE() << "left " << e.path();
}

}  // namespace
}  // namespace loom::test
