// pairs.h: sequence pairs on disk (source and target, for encoder-decoder models): the ids
// added beyond a tokenizer's vocabulary, one split's files, and a prepared pair folder.
//
// A split NAME (train or val) is three files:
//   NAME.src.bin  every source's tokens, one after another (a loom token shard, shard.h)
//   NAME.tgt.bin  every target's tokens, the same way
//   NAME.idx      where each pair starts (little-endian):
//     offset 0   char[8]  magic "LOOMPAIR"
//     offset 8   uint32   version (1)
//     offset 12  uint32   reserved (0)
//     offset 16  uint64   pair count n
//     offset 24  uint64[n + 1] source offsets, then uint64[n + 1] target offsets
// Pair i's source is tokens [src[i], src[i+1]) of NAME.src.bin, its target likewise; offsets
// start at 0, rise strictly (no side is empty) and end at the shard's token count. The shards
// hold the text's tokens only: BOS, EOS and PAD are placed by the loader (pair_loader.h).
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/data/shard.h"

namespace loom {

inline constexpr char kPairIndexMagic[8] = {'L', 'O', 'O', 'M', 'P', 'A', 'I', 'R'};
inline constexpr uint32_t kPairIndexVersion = 1;
inline constexpr size_t kPairIndexHeaderBytes = 24;

// The ids of pair data: the tokenizer's own [0, base), then PAD, BOS, EOS and the sentinels of
// span corruption, in that order, after its last id. Placing them after the tokenizer's ids
// leaves every tokenizer id what it was (a text decodes as it always did) whatever the
// tokenizer, and a folder without sentinels has the same PAD/BOS/EOS as one with them.
struct PairVocab {
  uint32_t base = 0;       // the tokenizer's vocabulary size
  uint32_t sentinels = 0;  // span-corruption sentinels (0 for plain pairs)
  uint32_t pad() const { return base; }
  uint32_t bos() const { return base + 1; }
  uint32_t eos() const { return base + 2; }
  // Sentinel k (k < sentinels) marks the k-th masked span of a source (T5's <extra_id_k>).
  uint32_t sentinel(uint32_t k) const { return base + 3 + k; }
  bool is_sentinel(uint32_t id) const { return id >= base + 3 && id < size(); }
  uint32_t size() const { return base + 3 + sentinels; }
};

// Writes one split's three files crash-safely: the shards stream as pairs come, the index is
// written by finish() (until then only temporary files exist).
class PairWriter {
 public:
  PairWriter(const std::string& dir, const std::string& name, uint32_t vocab_size);
  // Both sides non-empty, every id below vocab_size.
  void append(std::span<const uint32_t> source, std::span<const uint32_t> target);
  uint64_t pairs() const { return src_off_.size() - 1; }
  uint64_t source_tokens() const { return src_off_.back(); }
  uint64_t target_tokens() const { return tgt_off_.back(); }
  void finish();

 private:
  std::string index_path_;
  ShardWriter src_, tgt_;
  std::vector<uint64_t> src_off_{0}, tgt_off_{0};
};

// One split read back: the index in memory (16 bytes a pair), the tokens read on demand.
// Opening validates the index against both shards; UserError naming the file otherwise.
class PairSplit {
 public:
  PairSplit(const std::string& dir, const std::string& name);
  uint64_t size() const { return src_off_.size() - 1; }
  uint32_t vocab_size() const { return src_.vocab_size(); }
  uint32_t source_len(uint64_t i) const { return static_cast<uint32_t>(src_off_[i + 1] - src_off_[i]); }
  uint32_t target_len(uint64_t i) const { return static_cast<uint32_t>(tgt_off_[i + 1] - tgt_off_[i]); }
  // Pair i's tokens (appended to out).
  void read_source(uint64_t i, std::vector<uint32_t>& out) const { read(src_, src_off_, i, out); }
  void read_target(uint64_t i, std::vector<uint32_t>& out) const { read(tgt_, tgt_off_, i, out); }
  uint64_t source_tokens() const { return src_off_.back(); }
  uint64_t target_tokens() const { return tgt_off_.back(); }
  // The index file, for messages.
  const std::string& path() const { return index_path_; }

 private:
  static void read(const Shard& s, const std::vector<uint64_t>& off, uint64_t i, std::vector<uint32_t>& out);
  std::string index_path_;
  Shard src_, tgt_;
  std::vector<uint64_t> src_off_, tgt_off_;
};

// The most tokens one side of one pair may have (the index holds 64-bit offsets, lengths are
// handled as 32-bit).
inline constexpr uint64_t kMaxPairSideTokens = uint64_t{1} << 31;

// A folder written by `loom prepare --pairs/--source/--task`. meta.json: {"format": "pairs",
// "task": "pairs" or "span-corruption", "tokenizer", "vocab_size", "base_vocab", "pad_id",
// "bos_id", "eos_id", "sentinel_first", "sentinels", "train_pairs", "val_pairs",
// "train_source_tokens", "train_target_tokens", "val_source_tokens", "val_target_tokens",
// "corpus"} (span corruption adds "seed", "noise_density", "mean_span"). The ids must follow
// PairVocab's scheme; the splits must hold what meta.json says. UserError naming the file.
struct PairFolder {
  std::string dir;
  std::string tokenizer;  // a self-contained spec (Tokenizer::spec())
  std::string task;
  PairVocab vocab;
  uint64_t train_pairs = 0, val_pairs = 0;
  // Span corruption with --masks N: train pair m * (train_pairs / N) + i is mask m of train
  // line i (1 for other folders, and for folders written before the key).
  uint64_t masks = 1;
};
PairFolder open_pair_folder(const std::string& dir);

// The most masks per line span corruption writes (`loom prepare --masks`).
inline constexpr uint64_t kMaxMasksPerLine = 1000;

}  // namespace loom
