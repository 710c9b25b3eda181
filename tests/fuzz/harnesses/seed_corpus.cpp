// seed_corpus.cpp: writes the seed corpus of every harness: valid files made by loom's own
// writers (safetensors, checkpoints of every model kind, configs, BPE files, a small vocabulary
// in GPT-2's format, data folders, pair folders, shards, GPT-2 exports). Generated at build
// time rather than committed, so the seeds always follow the current formats; the fuzzer
// mutates from there.
//
// Usage: seed_corpus OUT_DIR   (writes OUT_DIR/<harness>/<seed>)
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "engine/data/bpe.h"
#include "engine/data/gpt2_tokenizer.h"
#include "engine/data/prepare.h"
#include "engine/data/prepare_pairs.h"
#include "engine/data/shard.h"
#include "engine/io/safetensors.h"
#include "fuzz_support.h"
#include "launch/run/checkpoint.h"
#include "launch/run/config.h"
#include "launch/run/gpt2_io.h"
#include "models/model.h"

namespace fs = std::filesystem;

namespace loom::fuzz {
namespace {

std::string g_out;

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void seed(const std::string& harness, const std::string& name, const std::vector<std::string>& parts) {
  for (const auto& p : parts)
    if (p.find(kPartSeparator) != std::string::npos) {
      std::fprintf(stderr, "seed_corpus: %s/%s: a part holds the separator; pick other contents\n", harness.c_str(),
                   name.c_str());
      std::exit(1);
    }
  const fs::path dir = fs::path(g_out) / harness;
  fs::create_directories(dir);
  std::ofstream(dir / name, std::ios::binary) << join_parts(parts);
}

std::string words(size_t bytes, uint64_t s) {
  static const char* w[] = {"the", "lord", "said", "unto", "him", "and", "they", "went", "into", "city",
                            "of", "david", "king", "house", "land", "people", "all", "his", "sons", "were"};
  Rng r(s);
  std::string text;
  while (text.size() < bytes) text += std::string(w[r.below(20)]) + (r.below(7) ? " " : ".\n");
  return text;
}

BpeMerges small_bpe(size_t merges) {
  std::unordered_map<std::string, uint64_t> counts;
  const std::string text = words(4000, 3);
  Pretokenizer pre("gpt2", "seed");
  pre.split(text, true, [&](std::string_view p) { ++counts[std::string(p)]; });
  return train_bpe_counts(counts, static_cast<uint32_t>(256 + merges));
}

Config tiny(const std::string& kind) {
  Config c;
  c.model.kind = kind;
  c.model.n_layer = 1;
  c.model.n_head = 2;
  c.model.d_model = 4;
  c.model.seq_len = 4;
  c.model.vocab = 8;
  c.model.context = kind == "ffnn" ? 2 : 0;
  c.model.d_hidden = kind == "ffnn" ? 4 : 0;
  c.model.order = kind == "ngram" ? 2 : 0;
  c.data.path = "data";
  return c;
}

void safetensors_seeds() {
  Rng r(1);
  StFile f;
  f.metadata = {{"format", "pt"}, {"note", "seed"}};
  for (const char* dtype : {"F32", "BF16", "I64", "U8"}) {
    StTensor t;
    t.name = std::string("t.") + dtype;
    t.dtype = dtype;
    t.shape = {2, 3};
    t.data.resize(6 * st_dtype_size(dtype));
    for (auto& b : t.data) b = static_cast<unsigned char>(r.below(256));
    f.tensors.push_back(t);
  }
  StTensor empty;
  empty.name = "empty";
  empty.dtype = "F16";
  empty.shape = {0, 5};
  f.tensors.push_back(empty);
  const std::string path = scratch() + "/seed.safetensors";
  write_safetensors(path, f);
  seed("safetensors", "mixed", {read_file(path)});
  f.metadata.clear();
  f.tensors.resize(1);
  write_safetensors(path, f);
  seed("safetensors", "one_tensor", {read_file(path)});
}

void checkpoint_seeds() {
  for (const char* kind : {"gpt", "lstm", "gru", "rnn", "ffnn", "ngram"}) {
    const Config c = tiny(kind);
    const std::string run = scratch() + "/run_" + kind;
    TrainProgress p;
    p.step = 3;
    p.tokens_seen = 96;
    p.loader_rng = {1, 2, 3, 4};
    CheckpointExtra extra;
    std::vector<float> params, moments;
    if (model_kind(kind).counts()) {
      auto counts = model_kind(kind).new_counts(c.model);
      const std::vector<uint32_t> tokens = {1, 2, 3, 1, 2, 5, 7, 0, 1, 2};
      counts->count(tokens, 0, tokens.size());
      counts->finalize();
      extra.counts = counts->to_tensors();
    } else {
      params = init_params(c.model, 5);
      moments.assign(params.size(), 0.25f);
    }
    if (model_kind(kind).carries_state()) extra.rnn_state.assign(8, 0.5f);
    const std::string tok = std::string(kind) == "gpt" ? serialize_bpe(small_bpe(0)) : "byte";
    const std::string dir = save_checkpoint(run, c, tok, params, moments, moments, p, 0, extra);
    seed("checkpoint", kind, {read_file(dir + "/model.safetensors"), read_file(dir + "/optim.safetensors"),
                             read_file(dir + "/state.json"), read_file(dir + "/config.toml")});
  }
}

void config_seeds() {
  // configs/*.toml are seeds too (the harness test passes that folder); these add overrides.
  for (const char* kind : {"gpt", "lstm", "ffnn", "ngram"}) {
    Config c = tiny(kind);
    seed("config", kind, {config_to_toml(c), "train.steps=7\noptim.lr=0.01\nlog.run_dir=runs/x\n"});
  }
  seed("config", "overrides_only",
       {"", "model.kind=gpt\nmodel.n_layer=1\nmodel.n_head=1\nmodel.d_model=8\nmodel.seq_len=8\ndata.path=d\n"
            "train.steps=1\ntrain.batch_size=1\noptim.lr=0.1\n"});
}

void bpe_seeds() {
  seed("bpe", "empty", {serialize_bpe(BpeMerges{})});
  seed("bpe", "merges_40", {serialize_bpe(small_bpe(40))});
}

// GPT-2's format on a small vocabulary: the 256 byte tokens spelled in GPT-2's alphabet, the
// merges of a small trained BPE, and <|endoftext|>.
void gpt2_vocab_seeds() {
  const BpeMerges m = small_bpe(60);
  auto spell = [](const std::string& bytes) {
    std::string s;
    for (unsigned char b : bytes) {
      const uint32_t cp = gpt2_byte_to_codepoint(b);
      if (cp < 0x80) {
        s += static_cast<char>(cp);
      } else {
        s += static_cast<char>(0xC0 | (cp >> 6));
        s += static_cast<char>(0x80 | (cp & 0x3F));
      }
    }
    return s;
  };
  std::vector<std::string> tokens(256);
  for (int b = 0; b < 256; ++b) tokens[b] = std::string(1, static_cast<char>(b));
  nlohmann::json enc = nlohmann::json::object();
  std::string bpe = "#version: 0.2\n";
  for (const auto& [a, b] : m.merges) {
    bpe += spell(tokens[a]) + " " + spell(tokens[b]) + "\n";
    tokens.push_back(tokens[a] + tokens[b]);
  }
  for (size_t id = 0; id < tokens.size(); ++id) enc[spell(tokens[id])] = id;
  enc["<|endoftext|>"] = tokens.size();
  const std::string sizes = std::to_string(tokens.size() + 1) + " " + std::to_string(m.merges.size());
  seed("gpt2_vocab", "small", {sizes, enc.dump(), bpe});
}

void data_seeds() {
  const std::string corpus = put_file("corpus.txt", words(6000, 9));
  for (const char* tok : {"byte", "bpe"}) {
    const std::string out = scratch() + "/data_" + tok;
    std::string spec = tok;
    if (spec == "bpe") spec = "bpe:" + put_file("tok.json", serialize_bpe(small_bpe(20)));
    PrepareOptions o;
    o.val_fraction = 0.5;
    o.progress = [](uint64_t, uint64_t) {};
    prepare_corpus(corpus, spec, out, o);
    seed("data_folder", tok, {read_file(out + "/meta.json"), read_file(out + "/train.bin"),
                              read_file(out + "/val.bin"), fs::exists(out + "/tokenizer.json") ? read_file(out + "/tokenizer.json") : ""});
  }
  const std::vector<uint32_t> small = {0, 1, 2, 3, 250, 255};
  write_shard(scratch() + "/w2.bin", small, 256);
  seed("shard", "width2", {read_file(scratch() + "/w2.bin")});
  const std::vector<uint32_t> wide = {0, 70000, 3, 99999};
  write_shard(scratch() + "/w4.bin", wide, 100000);
  seed("shard", "width4", {read_file(scratch() + "/w4.bin")});
}

void pair_folder_seeds() {
  const std::string text = words(3000, 12);
  std::string tsv;
  for (size_t at = 0, nl; (nl = text.find('\n', at)) != std::string::npos; at = nl + 1) {
    const std::string line = text.substr(at, nl - at);
    if (line.size() > 1) tsv += line + "\t" + std::string(line.rbegin(), line.rend()) + "\n";
  }
  const std::string tsv_path = put_file("pairs.tsv", tsv), lines = put_file("lines.txt", text);
  for (const char* tok : {"byte", "bpe", "spans"}) {
    const std::string out = scratch() + "/pairs_" + tok;
    PairPrepareOptions o;
    o.val_fraction = 0.3;
    if (std::string(tok) == "spans") prepare_span_corruption(lines, "byte", out, o);
    else if (std::string(tok) == "byte") prepare_pairs_tsv(tsv_path, "byte", out, o);
    else prepare_pairs_tsv(tsv_path, "bpe:" + put_file("pair_tok.json", serialize_bpe(small_bpe(20))), out, o);
    std::vector<std::string> parts;
    for (const char* f : {"meta.json", "train.idx", "train.src.bin", "train.tgt.bin", "val.idx", "val.src.bin",
                          "val.tgt.bin", "tokenizer.json"})
      parts.push_back(fs::exists(out + "/" + f) ? read_file(out + "/" + f) : "");
    seed("pair_folder", tok, parts);
  }
}

void gpt2_import_seeds() {
  Config c = tiny("gpt");
  c.model.vocab = 256;  // byte-level: the tokenizer an export names needs no files
  const std::vector<float> params = init_params(c.model, 8);
  const std::string path = scratch() + "/gpt2.safetensors";
  write_safetensors(path, gpt2_safetensors(c.model, "byte", params));
  seed("gpt2_import", "tiny", {read_file(path)});
}

// The store's messages as ranks send them: op, key length, key, value length, value (u32
// little-endian lengths). The first byte's low bit makes store_fuzz send the secret first.
std::string store_message(char op, const std::string& k, const std::string& v) {
  std::string m(1, op);
  for (const std::string* f : {&k, &v}) {
    for (int i = 0; i < 4; ++i) m += static_cast<char>((f->size() >> (8 * i)) & 0xff);
    m += *f;
  }
  return m;
}

void store_seeds() {
  // 'S' (0x53) and 'G' (0x47) are odd: sent after the secret; 'A' (0x41) too.
  seed("store", "set_get", {store_message('S', "gloo/rank_0", std::string(136, 'a')) + store_message('G', "gloo/rank_0", "1000")});
  seed("store", "hello_beat_bye", {store_message('S', "k", "v") + store_message('H', "1", "") + store_message('B', "", "17") +
                                   store_message('T', "", "") + store_message('Y', "", "")});
  seed("store", "wrong_secret", {std::string(1, '\x02') + store_message('A', "", "not the secret")});
}

}  // namespace
}  // namespace loom::fuzz

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  loom::fuzz::g_out = argv[1];
  try {
    loom::fuzz::safetensors_seeds();
    loom::fuzz::checkpoint_seeds();
    loom::fuzz::config_seeds();
    loom::fuzz::bpe_seeds();
    loom::fuzz::gpt2_vocab_seeds();
    loom::fuzz::data_seeds();
    loom::fuzz::pair_folder_seeds();
    loom::fuzz::gpt2_import_seeds();
    loom::fuzz::store_seeds();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "seed_corpus: %s\n", e.what());
    return 1;
  }
  return 0;
}
