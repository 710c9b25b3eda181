// bpe.h: byte-level BPE: the GPT-2 pre-tokenizer (PCRE2), the merge table shared by loom's own
// trained vocabularies and GPT-2's, the trainer behind `loom tokenizer train`, and loom's BPE
// file format.
//
// Byte-level means the 256 byte values are tokens before any merge, so every input (any
// bytes, valid UTF-8 or not) encodes, and decode(encode(x)) == x.
//
// loom BPE file (JSON, written by `loom tokenizer train`):
//   {"format": "loom-bpe", "version": 1, "pretokenizer": "gpt2", "vocab_size": V,
//    "merges": [[a, b], ...]}
// Ids 0..255 are the bytes; merge i (rank i) joins tokens a and b into token 256 + i, so
// both a and b must be < 256 + i, and V == 256 + number of merges.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/data/tokenizer.h"

namespace loom {

// Splits text into pre-tokens that BPE merges never cross. "gpt2" is GPT-2's pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// compiled by PCRE2 in UTF + UCP mode with PCRE2_MATCH_INVALID_UTF. \s is spelled out as
// the set JavaScript's \s matches (what the reference gpt-3-encoder package runs), which is
// PCRE2's Unicode \s plus U+FEFF. (Python's `regex`, used by OpenAI's encoder.py, differs
// from both only at U+0085 and U+FEFF.)
// Invalid UTF-8: the regex never matches an invalid sequence, so each maximal run of bytes
// between two matches becomes a pre-token of its own; byte-level BPE then encodes it like
// any other bytes and decoding restores it exactly.
class Pretokenizer {
 public:
  // Known names: "gpt2". Anything else is a UserError naming `source`.
  Pretokenizer(const std::string& name, const std::string& source);
  ~Pretokenizer();
  Pretokenizer(const Pretokenizer&) = delete;
  Pretokenizer& operator=(const Pretokenizer&) = delete;
  const std::string& name() const { return name_; }

  // Calls on_piece for consecutive pre-tokens covering a prefix of `text`, and returns that
  // prefix's length. With at_end, the prefix is all of text. Without, it stops before the
  // first piece that more text could still change (one ending within 4 bytes of the end:
  // a longer run, a contraction, the (?!\S) look-ahead, a UTF-8 character cut in two), so
  // splitting a stream chunk by chunk gives exactly the pieces of the whole.
  size_t split(std::string_view text, bool at_end, const std::function<void(std::string_view)>& on_piece) const;

 private:
  std::string name_;
  void* code_ = nullptr;  // pcre2_code_8*
};

// A ranked merge table over byte strings. Token ids need not be ordered like loom's: GPT-2
// gives its own ids to the bytes and to merge results.
class BpeModel {
 public:
  // vocab[id] = the bytes of token id; byte_ids[b] = the id of the one-byte token b.
  // add_merge(rank order): a + b -> result. Checked by the loaders, not here.
  BpeModel(std::vector<std::string> vocab, std::vector<uint32_t> byte_ids);
  void add_merge(uint32_t a, uint32_t b, uint32_t result);
  size_t num_merges() const { return merges_.size(); }
  uint32_t vocab_size() const { return static_cast<uint32_t>(vocab_.size()); }
  const std::string& token_bytes(uint32_t id) const { return vocab_[id]; }

  // Appends the ids of one pre-token: start from its bytes and repeatedly apply the
  // lowest-ranked merge present (all of its occurrences, left to right), as GPT-2 does.
  void encode_piece(std::string_view piece, std::vector<uint32_t>& out) const;
  // Throws UserError for an id outside the vocabulary.
  std::string decode(std::span<const uint32_t> ids, const std::string& who) const;

 private:
  std::vector<std::string> vocab_;
  std::vector<uint32_t> byte_ids_;
  std::unordered_map<uint64_t, uint64_t> merges_;  // (a << 32 | b) -> (rank << 32 | result)
};

// A BPE tokenizer: a pre-tokenizer and a merge table, with a per-call cache of pieces (text
// repeats its words, so most pieces are looked up, not merged).
class BpeTokenizer : public Tokenizer {
 public:
  // eot: the vocabulary's own end-of-text id (GPT-2's 50256), if it has one.
  BpeTokenizer(std::string name, std::string spec, std::unique_ptr<Pretokenizer> pre, BpeModel model,
               std::optional<uint32_t> eot = std::nullopt);
  std::string name() const override { return name_; }
  std::string spec() const override { return spec_; }
  int vocab_size() const override { return static_cast<int>(model_.vocab_size()); }
  std::vector<uint32_t> encode(std::string_view text) const override;
  size_t encode_stream(std::string_view text, bool at_end, std::vector<uint32_t>& out) const override;
  std::string decode(std::span<const uint32_t> ids) const override;
  std::optional<uint32_t> eot_id() const override { return eot_; }
  size_t num_merges() const override { return model_.num_merges(); }
  const BpeModel& model() const { return model_; }

 private:
  std::string name_, spec_;
  std::unique_ptr<Pretokenizer> pre_;
  BpeModel model_;
  std::optional<uint32_t> eot_;
};

// Limits of a loom BPE vocabulary. Each merge can double a token (merges [256+i, 256+i]), so
// a file of a few hundred bytes could otherwise describe tokens of 2^40 bytes. parse_bpe
// rejects a file beyond them before building anything, and the trainer never crosses them, so
// every file loom writes reads back.
inline constexpr size_t kMaxBpeMerges = (size_t{1} << 24) - 256;  // `loom tokenizer train`'s largest vocabulary
inline constexpr size_t kMaxBpeTokenBytes = 1024;                 // one token
inline constexpr uint64_t kMaxBpeVocabBytes = uint64_t{256} << 20;  // all tokens together

// loom's own BPE files. `source` names the file (or "checkpoint") in every error.
struct BpeMerges {
  std::string pretokenizer = "gpt2";
  std::vector<std::pair<uint32_t, uint32_t>> merges;  // merge i makes token 256 + i
};
std::string serialize_bpe(const BpeMerges& m);
BpeMerges parse_bpe(const std::string& text, const std::string& source);
std::unique_ptr<Tokenizer> make_bpe_tokenizer(const BpeMerges& m);

struct BpeTrainStats {
  uint64_t bytes = 0, pieces = 0, distinct_pieces = 0;
  double seconds = 0;
};

// Learns up to vocab_size - 256 merges from a corpus file ("kjv" or a path), streaming it in
// chunks. Pairs are counted once over the table of distinct pre-tokens; after each merge
// only the words that contain the merged pair are revisited, and the next pair comes from a
// max-heap (count, then smallest ids) with stale entries skipped. A pair that would make a
// token longer than kMaxBpeTokenBytes is passed over; training stops early when no pair is
// left or the vocabulary would pass kMaxBpeVocabBytes. progress(done, total) sees corpus
// bytes read.
BpeMerges train_bpe(const std::string& corpus_path, uint32_t vocab_size, BpeTrainStats* stats = nullptr,
                    const std::function<void(uint64_t, uint64_t)>& progress = {});

// The trainer on in-memory pre-token counts (what train_bpe runs after counting).
BpeMerges train_bpe_counts(const std::unordered_map<std::string, uint64_t>& counts, uint32_t vocab_size);

}  // namespace loom
