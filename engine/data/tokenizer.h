// tokenizer.h: the tokenizer interface. Byte-level now; BPE and GPT-2's plug in here later.
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
  // Short name stored in a prepared data folder's meta.json ("byte", ...).
  virtual std::string name() const = 0;
  virtual int vocab_size() const = 0;
  virtual std::vector<uint32_t> encode(std::string_view text) const = 0;
  // Throws UserError when an id is outside the vocabulary.
  virtual std::string decode(std::span<const uint32_t> ids) const = 0;
};

// Builds a tokenizer from its spec: "byte" (vocabulary 256). Unknown spec: UserError.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec);

}  // namespace loom
