// prepare.h: `loom prepare`: text corpora -> a data folder of token shards (shard.h), in
// parallel over files, with the same bytes whatever the thread count.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace loom {

// The least tokens prepare_corpus puts in each of the train and val splits: one window of
// seq_len 1024 (plus its shifted target), so any usual seq_len can sample both splits.
inline constexpr uint64_t kMinSplitTokens = 1025;

// The most files one corpus may have.
inline constexpr size_t kMaxCorpusFiles = size_t{1} << 20;

// What a corpus argument stands for. "kjv" or one text file: one document, read as it always
// was (no end-of-text token anywhere). A folder (every regular file below it, hidden ones
// left out), a glob pattern ("books/*.txt"), or a .jsonl file: documents, one per text file and
// one per JSONL line, separated by the tokenizer's end-of-text id. Files in name order.
// UserError naming the corpus when nothing matches.
struct CorpusFiles {
  std::vector<std::string> files;
  bool documents = false;
};
CorpusFiles resolve_corpus(const std::string& corpus);

struct PrepareOptions {
  double val_fraction = 0.05;
  size_t chunk_bytes = size_t{8} << 20;  // read size; tests make it small
  // Tokens per shard file: train_000000.bin, train_000001.bin, ... (and val_...). 0: one
  // train.bin and one val.bin.
  uint64_t shard_tokens = 0;
  // The key of a JSONL line that holds its document's text.
  std::string jsonl_field = "text";
  // Files tokenized at once; 0: one per core. The output does not depend on it.
  int threads = 0;
  // Sees (corpus bytes tokenized, corpus size), from the calling thread. Empty: a plain line on
  // stderr every quarter.
  std::function<void(uint64_t done, uint64_t total)> progress;
};

// Tokenizes the corpus (see CorpusFiles) with the tokenizer (a spec for make_tokenizer; for
// documents a byte or BPE tokenizer gets an end-of-text id, "eot:SPEC") file by file on
// `threads` threads, streaming each file in chunks so corpora larger than memory work (text
// files must be UTF-8), and writes into out_dir the train split (all but the last val_fraction
// of the tokens) and the val split (that last part, at least kMinSplitTokens), each as one file
// or as shards of shard_tokens, then meta.json (shard.h's DataFolder says what it holds). A BPE
// vocabulary is copied to out_dir/tokenizer.json. Token files of each input are kept in a
// temporary folder inside out_dir until the shards are written (removed, also on failure).
// UserError on a missing/empty/non-UTF-8 corpus, a bad JSONL line (names file and line), or an
// unwritable folder.
void prepare_corpus(const std::string& corpus, const std::string& tokenizer, const std::string& out_dir,
                    const PrepareOptions& options);

class Tokenizer;
// What meta.json's "tokenizer" says of `tokenizer` in a data folder written to out_dir: its
// spec, except that a BPE vocabulary is written to out_dir/tokenizer.json (crash-safely) and
// named "bpe:tokenizer.json" (with "eot:" in front if it has it), so the folder can move.
std::string store_folder_tokenizer(const Tokenizer& tokenizer, const std::string& out_dir);
void prepare_corpus(const std::string& corpus, const std::string& tokenizer, const std::string& out_dir,
                    double val_fraction = 0.05);

}  // namespace loom
