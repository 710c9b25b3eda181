// pair_folder_fuzz.cpp: open_pair_folder (meta.json, both splits' indexes and shards, the
// tokenizer) on a pair folder made of the input's eight parts. An accepted folder's pairs are
// read back, and a pair loader batches its train split: every id the loader hands out must be
// inside the folder's vocabulary and every row inside its batch's shape.
#include "engine/data/pair_loader.h"
#include "engine/data/pairs.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loom;
  const std::string dir =
      fuzz::put_folder(data, size, "pairs",
                       {"meta.json", "train.idx", "train.src.bin", "train.tgt.bin", "val.idx", "val.src.bin",
                        "val.tgt.bin", "tokenizer.json"});
  PairFolder folder;
  if (!fuzz::accepts([&] { folder = open_pair_folder(dir); })) return 0;
  const PairSplit train(dir, "train");
  std::vector<uint32_t> tokens;
  for (uint64_t i = 0; i < train.size(); ++i) {
    tokens.clear();
    // A token outside the vocabulary is found as it is read (a UserError), as for token streams.
    const bool read = fuzz::accepts([&] {
      train.read_source(i, tokens);
      train.read_target(i, tokens);
    });
    if (!read) break;
    for (uint32_t t : tokens) fuzz::require(t < folder.vocab.size(), "a token outside the vocabulary");
  }
  PairLoaderOptions o;
  o.batch_size = static_cast<int>(std::min<uint64_t>(train.size(), 3));
  o.bucket_window = 4;
  fuzz::accepts([&] {
    PairLoader loader(train, folder.vocab, o);
    PairBatch b;
    for (int k = 0; k < 4; ++k) {
      loader.next_batch(0, b);
      fuzz::require(b.source.size() == static_cast<size_t>(b.rows) * b.S &&
                        b.target.size() == static_cast<size_t>(b.rows) * b.T,
                    "a batch's rows do not fill its shape");
      for (const auto* v : {&b.source, &b.target, &b.decoder_input})
        for (int32_t t : *v)
          fuzz::require(t >= 0 && static_cast<uint32_t>(t) < folder.vocab.size(), "a batch id outside the vocabulary");
    }
  });
  return 0;
}
