// shard.h: token shards on disk and the teacher-forcing window loader.
//
// Shard file layout (little-endian):
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
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace loom {

inline constexpr char kShardMagic[8] = {'L', 'O', 'O', 'M', 'T', 'O', 'K', '\0'};
inline constexpr uint32_t kShardVersion = 1;
inline constexpr size_t kShardHeaderBytes = 32;

// Writes a shard crash-safely (temporary file, fsync, rename). Every token must be < vocab_size.
void write_shard(const std::string& path, std::span<const uint32_t> tokens, uint32_t vocab_size);

// A read-only shard. Opening validates magic, version, width and that the file size equals
// header + count * width; any problem is a UserError naming the file. Tokens are read with
// pread (not mapped): a file truncated while a run reads it is an error message naming it,
// never a bus error, and every token read is checked against the vocabulary.
class Shard {
 public:
  explicit Shard(const std::string& path);
  ~Shard();
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;
  uint64_t size() const { return count_; }
  uint32_t vocab_size() const { return vocab_; }
  uint32_t width() const { return width_; }
  // Tokens [begin, begin + n), widened to 32 bits. UserError (naming the file) if the file is
  // now shorter than when it was opened, or a token is outside the vocabulary.
  void read(uint64_t begin, size_t n, uint32_t* out) const;
  uint32_t operator[](uint64_t i) const {
    uint32_t t = 0;
    read(i, 1, &t);
    return t;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t count_ = 0;
  uint32_t vocab_ = 0, width_ = 0;
};

// A prepared data folder: train.bin, val.bin and meta.json ({"tokenizer": "byte",
// "vocab_size": 256, "train_tokens": N, "val_tokens": M}; "tokenizer" is "byte", "gpt2" or
// "bpe:tokenizer.json", a file in the folder). UserError if anything is missing or
// inconsistent (names the file).
struct DataFolder {
  std::string dir;
  std::string tokenizer;  // after open_data_folder: a self-contained spec (Tokenizer::spec())
  uint32_t vocab_size = 0;
  uint64_t train_tokens = 0, val_tokens = 0;  // as meta.json says (checked against the shards)
  std::string train_path() const { return dir + "/train.bin"; }
  std::string val_path() const { return dir + "/val.bin"; }
};
DataFolder open_data_folder(const std::string& dir);

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

// The least tokens prepare_corpus puts in each of train.bin and val.bin: one window of
// seq_len 1024 (plus its shifted target), so any usual seq_len can sample both splits.
inline constexpr uint64_t kMinSplitTokens = 1025;

// `loom prepare`: streams the corpus ("kjv" or a text file path, which must be UTF-8) through
// the tokenizer (a spec for make_tokenizer: byte, gpt2, a BPE file) chunk by chunk, so corpora
// larger than memory work, and writes train.bin / val.bin (the last val_fraction of the
// tokens, at least kMinSplitTokens) and meta.json into out_dir; a BPE vocabulary is copied to
// out_dir/tokenizer.json and meta.json says "tokenizer": "bpe:tokenizer.json". UserError on a
// missing/empty/non-UTF-8 corpus or an unwritable folder (temporary files are removed).
struct PrepareOptions {
  double val_fraction = 0.05;
  size_t chunk_bytes = size_t{8} << 20;  // read size; tests make it small
  // Sees (corpus bytes tokenized, corpus size). Empty: a plain line on stderr every quarter.
  std::function<void(uint64_t done, uint64_t total)> progress;
};
void prepare_corpus(const std::string& corpus, const std::string& tokenizer, const std::string& out_dir,
                    const PrepareOptions& options);
void prepare_corpus(const std::string& corpus, const std::string& tokenizer, const std::string& out_dir,
                    double val_fraction = 0.05);

}  // namespace loom
