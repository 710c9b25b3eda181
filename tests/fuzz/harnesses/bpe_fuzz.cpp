// bpe_fuzz.cpp: parse_bpe on any text (loom's BPE file; the same text arrives through meta.json,
// inside checkpoints and in GPT-2 import metadata). An accepted vocabulary must build a
// tokenizer that round-trips any bytes (decode(encode(x)) == x, here x = the input itself),
// and serialize back to the same merges.
#include "engine/data/bpe.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loom;
  const std::string text(reinterpret_cast<const char*>(data), size);
  BpeMerges m;
  if (!fuzz::accepts([&] { m = parse_bpe(text, "fuzz.json"); })) return 0;
  const auto tok = make_bpe_tokenizer(m);
  fuzz::require(tok->decode(tok->encode(text)) == text, "decode(encode(x)) != x");
  BpeMerges again;
  fuzz::require(fuzz::accepts([&] { again = parse_bpe(serialize_bpe(m), "serialized"); }) &&
                    again.merges == m.merges && again.pretokenizer == m.pretokenizer,
                "serialize_bpe does not read back");
  return 0;
}
