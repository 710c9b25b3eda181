// shard_fuzz.cpp: a token shard's header (magic, version, width, vocabulary, count against the
// file's size) and every token read back, on any bytes.
#include "engine/data/shard.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loom;
  const std::string path = fuzz::put_file("shard.bin", {reinterpret_cast<const char*>(data), size});
  fuzz::accepts([&] {
    const Shard shard(path);
    fuzz::require(kShardHeaderBytes + shard.size() * shard.width() == size, "count does not match the file");
    std::vector<uint32_t> tokens(shard.size());
    shard.read(0, tokens.size(), tokens.data());
    for (uint32_t t : tokens) fuzz::require(t < shard.vocab_size(), "a token outside the vocabulary");
  });
  return 0;
}
