// gpt2_vocab_fuzz.cpp: GPT-2's vocabulary files (encoder.json, vocab.bpe) through the checks
// make_gpt2_tokenizer runs, on small vocabularies: the input's parts are "TOKENS MERGES" (the
// sizes to expect, at most 4096 each, in place of GPT-2's 50257 and 50000), encoder.json and
// vocab.bpe. An accepted vocabulary must round-trip any bytes.
#include <charconv>

#include "engine/data/gpt2_tokenizer.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loom;
  const auto parts = fuzz::split_parts(data, size, 3);
  const std::string& sizes = parts[0];
  Gpt2VocabSize want;
  const char* end = sizes.data() + sizes.size();
  auto r = std::from_chars(sizes.data(), end, want.tokens);
  if (r.ec != std::errc() || r.ptr == end || *r.ptr != ' ') return 0;
  r = std::from_chars(r.ptr + 1, end, want.merges);
  if (r.ec != std::errc() || want.tokens > 4096 || want.merges > 4096) return 0;
  std::unique_ptr<Tokenizer> tok;
  if (!fuzz::accepts([&] { tok = parse_gpt2_vocab(parts[1], parts[2], "encoder.json", "vocab.bpe", want); })) return 0;
  const std::string text(reinterpret_cast<const char*>(data), size);
  fuzz::require(tok->decode(tok->encode(text)) == text, "decode(encode(x)) != x");
  return 0;
}
