// data_folder_fuzz.cpp: open_data_folder (meta.json against its shards and tokenizer) on a data
// folder made of the input's four parts: meta.json, train.bin, val.bin, tokenizer.json. The
// shards' tokens are read (each checked against the vocabulary as it is read), and an accepted
// folder's tokenizer spec must build the tokenizer again (it is what checkpoints record).
#include "engine/data/shard.h"
#include "engine/data/tokenizer.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loom;
  const std::string dir = fuzz::put_folder(data, size, "data", {"meta.json", "train.bin", "val.bin", "tokenizer.json"});
  DataFolder folder;
  if (!fuzz::accepts([&] { folder = open_data_folder(dir); })) return 0;
  for (const auto* files : {&folder.train_files, &folder.val_files}) {
    fuzz::accepts([&] {
      const Shard shard(*files);
      const std::string& path = shard.path();
      std::vector<uint32_t> tokens(shard.size());
      shard.read(0, tokens.size(), tokens.data());
      for (uint32_t t : tokens) fuzz::require(t < folder.vocab_size, path + ": a token outside the vocabulary");
    });
  }
  if (folder.tokenizer != "gpt2")
    fuzz::require(fuzz::accepts([&] { make_tokenizer(folder.tokenizer); }), "the folder's tokenizer spec fails");
  return 0;
}
