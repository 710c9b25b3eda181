// shard.h: token shards on disk (loom's and llm.c's), prepared data folders and the
// teacher-forcing window loader.
//
// loom shard file layout (little-endian):
//   offset 0   char[8]  magic "LOOMTOK\0"
//   offset 8   uint32   version (1)
//   offset 12  uint32   token width in bytes (2 or 4)
//   offset 16  uint32   vocabulary size
//   offset 20  uint32   reserved (0)
//   offset 24  uint64   token count
//   offset 32  tokens (uint16 or uint32), exactly token count of them
// Width 2 when the vocabulary fits in 16 bits, else 4.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/io/atomic_file.h"

namespace loom {

inline constexpr char kShardMagic[8] = {'L', 'O', 'O', 'M', 'T', 'O', 'K', '\0'};
inline constexpr uint32_t kShardVersion = 1;
inline constexpr size_t kShardHeaderBytes = 32;

// llm.c's token shards (github.com/karpathy/llm.c, dev/data/data_common.py), read as they
// are: a header of 256 little-endian int32 (magic 20240520, version 1, token count; the other
// 253 are 0), then the tokens as uint16 (GPT-2's vocabulary, 50257).
inline constexpr int32_t kLlmcMagic = 20240520;
inline constexpr int32_t kLlmcVersion = 1;
inline constexpr size_t kLlmcHeaderBytes = 256 * 4;
inline constexpr uint32_t kLlmcVocab = 50257;

// Writes a shard crash-safely (temporary file, fsync, rename). Every token must be < vocab_size.
void write_shard(const std::string& path, std::span<const uint32_t> tokens, uint32_t vocab_size);

// A shard written incrementally: the header goes first with a count of 0, tokens are appended
// as they come (narrowed to the shard's width), and finish() patches the count and commits
// (fsync, rename). Until then only a temporary file exists, and
// it is removed if the writer is destroyed unfinished.
class ShardWriter {
 public:
  ShardWriter(const std::string& path, uint32_t vocab_size);
  void append(std::span<const uint32_t> tokens);
  uint64_t count() const { return count_; }
  void finish();

 private:
  AtomicFile file_;
  uint32_t vocab_, width_ = 0;
  uint64_t count_ = 0;
  std::vector<unsigned char> buf_;
};

// Read-only tokens from one shard file, or from several read one after another as if they were
// one (a prepared split of many shards). Each file is a loom shard or an llm.c shard (told
// apart by the magic); all must have the same vocabulary. Opening validates every header field
// and that each file's size equals header + count * width; any problem is a UserError naming
// the file. Tokens are read with pread (not mapped): a file truncated while a run reads it is an
// error message naming it, never a bus error, and every token read is checked against the
// vocabulary.
class Shard {
 public:
  explicit Shard(const std::string& path);
  explicit Shard(const std::vector<std::string>& paths);
  ~Shard();
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;
  uint64_t size() const { return count_; }
  uint32_t vocab_size() const { return vocab_; }
  // Bytes per token of the first file (2 or 4).
  uint32_t width() const;
  size_t num_files() const { return files_.size(); }
  // Tokens [begin, begin + n), widened to 32 bits, across files as needed. UserError (naming
  // the file) if a file is now shorter than when it was opened, or a token is outside the
  // vocabulary.
  void read(uint64_t begin, size_t n, uint32_t* out) const;
  uint32_t operator[](uint64_t i) const {
    uint32_t t = 0;
    read(i, 1, &t);
    return t;
  }
  // The file, or "FIRST .. LAST (N shards)", for messages.
  const std::string& path() const { return path_; }

 private:
  struct File {
    std::string path;
    int fd = -1;
    uint64_t begin = 0, count = 0, header_bytes = 0;  // begin: index of its first token in the whole
    uint32_t width = 0;
  };
  File open_file(const std::string& path, uint64_t begin);
  std::vector<File> files_;
  std::string path_;
  uint64_t count_ = 0;
  uint32_t vocab_ = 0;
};

// The most shard files one split may have (a corpus of 10^12 tokens in shards of 10^8 is 10^4).
inline constexpr size_t kMaxShardFiles = size_t{1} << 20;

// A prepared data folder: meta.json, the shards of each split, and for a BPE vocabulary its
// file. meta.json: {"tokenizer": "byte", "vocab_size": 256, "train_tokens": N, "val_tokens": M,
// "train_shards": ["train.bin"], "val_shards": ["val.bin"], "eot_id": null}. "tokenizer" is
// byte, gpt2, bpe:tokenizer.json (a file in the folder), or one of those with "eot:" in front.
// The shard lists name files in the folder (absent: train.bin and val.bin, as loom wrote before
// it had them); "eot_id" is the tokenizer's end-of-text id (absent: whatever the tokenizer says).
// A folder without meta.json that holds llm.c shards (*_train*.bin and *_val*.bin, as llm.c's
// scripts name them) is read as GPT-2 tokens. UserError if anything is missing or inconsistent
// (names the file).
struct DataFolder {
  std::string dir;
  std::string tokenizer;  // after open_data_folder: a self-contained spec (Tokenizer::spec())
  uint32_t vocab_size = 0;
  // THE end-of-text id of this data (Tokenizer::eot_id()): between two documents of the corpus
  // the shards hold exactly this id. Absent for a tokenizer without one.
  std::optional<uint32_t> eot_id;
  uint64_t train_tokens = 0, val_tokens = 0;  // as meta.json says (checked against the shards)
  std::vector<std::string> train_files, val_files;  // paths, in reading order
};
DataFolder open_data_folder(const std::string& dir);

class Tokenizer;
// The tokenizer a data folder's meta.json names (meta_spec: its "tokenizer"): byte, gpt2 or
// bpe:FILE with FILE inside `dir`, with or without "eot:" in front. UserError naming
// meta_path for anything else or a tokenizer that cannot be made.
std::unique_ptr<Tokenizer> open_folder_tokenizer(const std::string& meta_spec, const std::string& dir,
                                                 const std::string& meta_path);

// Serves seeded random windows with teacher forcing: for a start i drawn uniformly from
// [0, size - T - 1], x = t[i : i+T], y = t[i+1 : i+T+1].
// Data parallelism: every rank draws the same global batch of `global_batch` starts from the
// same seeded stream and keeps rows [rank * B, (rank+1) * B) where B = global_batch / world,
// so the union over ranks equals the single-rank batch.
class WindowLoader {
 public:
  // UserError (naming the shard) if the shard holds fewer than T + 1 tokens.
  WindowLoader(const Shard& shard, int seq_len, uint64_t seed);
  // x and y each receive (global_batch / world) * T int32 tokens, row-major.
  void next_batch(int global_batch, int rank, int world, int32_t* x, int32_t* y);
  // Everything needed to continue the exact same stream after a resume.
  std::array<uint64_t, 4> state() const;
  void set_state(const std::array<uint64_t, 4>& s);

 private:
  const Shard& shard_;
  int T_;
  std::array<uint64_t, 4> rng_state_;
};

}  // namespace loom
