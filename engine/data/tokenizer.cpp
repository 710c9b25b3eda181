// tokenizer.cpp: the byte-level tokenizer and the factory that maps a spec to a tokenizer
// (byte, GPT-2's, or a loom BPE file; see tokenizer.h).
//
// Byte-level is the baseline every corpus can use: ids are the raw bytes, so any file
// (UTF-8 or not) round-trips exactly and there is no vocabulary file to lose.
#include "engine/data/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/check.h"
#include "engine/data/bpe.h"
#include "engine/data/gpt2_tokenizer.h"
#include "engine/io/json_guard.h"

namespace loom {
namespace {

class ByteTokenizer final : public Tokenizer {
 public:
  std::string name() const override { return "byte"; }
  int vocab_size() const override { return 256; }

  std::vector<uint32_t> encode(std::string_view text) const override {
    std::vector<uint32_t> ids(text.size());
    // Through unsigned char: a plain char is signed here and bytes >= 0x80 would wrap.
    for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
    return ids;
  }

  std::string decode(std::span<const uint32_t> ids) const override {
    std::string text(ids.size(), '\0');
    for (size_t i = 0; i < ids.size(); ++i) {
      // Ids reach decode from models and user prompts, so a bad one is bad input, not a bug.
      LOOM_USER_CHECK(ids[i] < 256, "byte tokenizer: id ", ids[i], " at position ", i,
                      " is outside the vocabulary (size 256)");
      text[i] = static_cast<char>(static_cast<unsigned char>(ids[i]));
    }
    return text;
  }
};

// A byte or BPE tokenizer plus one id after its vocabulary for <|endoftext|>. Text never
// encodes to it (a document that spells "<|endoftext|>" stays those bytes, as with GPT-2's
// encoder), so only `loom prepare` places it, between documents.
class EotTokenizer final : public Tokenizer {
 public:
  explicit EotTokenizer(std::unique_ptr<Tokenizer> base)
      : base_(std::move(base)), eot_(static_cast<uint32_t>(base_->vocab_size())) {}
  std::string name() const override { return std::string(kEotSpecPrefix) + base_->name(); }
  std::string spec() const override { return std::string(kEotSpecPrefix) + base_->spec(); }
  int vocab_size() const override { return base_->vocab_size() + 1; }
  std::vector<uint32_t> encode(std::string_view text) const override { return base_->encode(text); }
  size_t encode_stream(std::string_view text, bool at_end, std::vector<uint32_t>& out) const override {
    return base_->encode_stream(text, at_end, out);
  }
  std::string decode(std::span<const uint32_t> ids) const override {
    for (size_t i = 0; i < ids.size(); ++i)
      LOOM_USER_CHECK(ids[i] <= eot_, name(), " tokenizer: id ", ids[i], " at position ", i,
                      " is outside the vocabulary (size ", vocab_size(), ")");
    // Runs between end-of-text ids go to the base tokenizer whole, so that a character split
    // over several tokens comes back intact.
    std::string out;
    size_t begin = 0;
    for (size_t i = 0; i <= ids.size(); ++i) {
      if (i < ids.size() && ids[i] != eot_) continue;
      out += base_->decode(ids.subspan(begin, i - begin));
      if (i < ids.size()) out += kEotText;
      begin = i + 1;
    }
    return out;
  }
  std::optional<uint32_t> eot_id() const override { return eot_; }
  size_t num_merges() const override { return base_->num_merges(); }

 private:
  std::unique_ptr<Tokenizer> base_;
  uint32_t eot_;
};

}  // namespace

std::unique_ptr<Tokenizer> with_eot(std::unique_ptr<Tokenizer> base) {
  if (base->eot_id()) return base;
  return std::make_unique<EotTokenizer>(std::move(base));
}

bool is_inline_tokenizer_spec(const std::string& spec) {
  if (spec.starts_with(kEotSpecPrefix)) return is_inline_tokenizer_spec(spec.substr(kEotSpecPrefix.size()));
  return spec == "byte" || spec == "gpt2" || (!spec.empty() && spec.front() == '{');
}

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& spec) {
  if (spec.starts_with(kEotSpecPrefix)) {
    const std::string base = spec.substr(kEotSpecPrefix.size());
    // One prefix only: "eot:eot:byte" would be a second end-of-text id nothing writes.
    LOOM_USER_CHECK(!base.starts_with(kEotSpecPrefix), "tokenizer '", brief(spec), "': \"eot:\" given twice");
    return with_eot(make_tokenizer(base));
  }
  if (spec == "byte") return std::make_unique<ByteTokenizer>();
  if (spec == "gpt2") return make_gpt2_tokenizer(gpt2_vocab_dir());
  // Checkpoints carry a BPE vocabulary inline, as the file's JSON text.
  if (!spec.empty() && spec.front() == '{') return make_bpe_tokenizer(parse_bpe(spec, "checkpoint tokenizer"));
  const std::string path = spec.rfind("bpe:", 0) == 0 ? spec.substr(4) : spec;
  std::error_code ec;
  LOOM_USER_CHECK(!path.empty() && std::filesystem::exists(path, ec), "tokenizer '", brief(spec),
                  "': unknown tokenizer and no such file (known: byte, gpt2, or a file written by `loom tokenizer "
                  "train`)");
  LOOM_USER_CHECK(std::filesystem::is_regular_file(path, ec), path, ": not a regular file (expected a loom BPE tokenizer file)");
  // The largest vocabulary loom writes is well under this; a bigger file is not one of ours.
  constexpr uintmax_t kMaxFileBytes = uintmax_t{1} << 30;
  const uintmax_t bytes = std::filesystem::file_size(path, ec);
  LOOM_USER_CHECK(!ec && bytes <= kMaxFileBytes, path, ": ",
                  ec ? "cannot read tokenizer file: " + ec.message()
                     : "larger than " + std::to_string(kMaxFileBytes) + " bytes (not a loom BPE tokenizer file)");
  std::ifstream f(path, std::ios::binary);
  LOOM_USER_CHECK(f.good(), path, ": cannot open tokenizer file");
  std::ostringstream ss;
  ss << f.rdbuf();
  LOOM_USER_CHECK(!f.bad(), path, ": cannot read tokenizer file");
  return make_bpe_tokenizer(parse_bpe(ss.str(), path));
}

}  // namespace loom
