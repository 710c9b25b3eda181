// pairs.cpp: see pairs.h. Everything read from a pair folder is validated when it is opened
// (index against shards, meta.json against both), so that a damaged folder is a one-line
// error naming the file, never an out-of-range read in the middle of a run.
#include "engine/data/pairs.h"

#include <bit>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/check.h"
#include "engine/data/corpus.h"
#include "engine/data/tokenizer.h"
#include "engine/io/atomic_file.h"
#include "engine/io/json_guard.h"

namespace loom {

static_assert(std::endian::native == std::endian::little, "pair indexes assume a little-endian host");

namespace {

// An index of 2^32 pairs is 64 GiB; nothing real comes near it.
constexpr uint64_t kMaxIndexBytes = uint64_t{64} << 30;
constexpr uint64_t kMaxMetaBytes = uint64_t{1} << 20;

std::string split_file(const std::string& dir, const std::string& name, const char* ext) {
  return dir + "/" + name + ext;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Writing

PairWriter::PairWriter(const std::string& dir, const std::string& name, uint32_t vocab_size)
    : index_path_(split_file(dir, name, ".idx")),
      src_(split_file(dir, name, ".src.bin"), vocab_size),
      tgt_(split_file(dir, name, ".tgt.bin"), vocab_size) {}

void PairWriter::append(std::span<const uint32_t> source, std::span<const uint32_t> target) {
  // The callers check their input; an empty side here is a bug in them.
  LOOM_CHECK(!source.empty() && !target.empty(), "PairWriter: empty side in pair ", pairs());
  LOOM_CHECK(source.size() < kMaxPairSideTokens && target.size() < kMaxPairSideTokens);
  src_.append(source);
  tgt_.append(target);
  src_off_.push_back(src_off_.back() + source.size());
  tgt_off_.push_back(tgt_off_.back() + target.size());
}

void PairWriter::finish() {
  src_.finish();
  tgt_.finish();
  unsigned char header[kPairIndexHeaderBytes] = {};
  std::memcpy(header, kPairIndexMagic, 8);
  const uint32_t version = kPairIndexVersion;
  const uint64_t n = pairs();
  std::memcpy(header + 8, &version, 4);
  std::memcpy(header + 16, &n, 8);
  write_chunks_atomic(index_path_, {{header, sizeof header},
                                    {src_off_.data(), src_off_.size() * 8},
                                    {tgt_off_.data(), tgt_off_.size() * 8}});
}

// ---------------------------------------------------------------------------------------
// Reading

PairSplit::PairSplit(const std::string& dir, const std::string& name)
    : index_path_(split_file(dir, name, ".idx")),
      src_(split_file(dir, name, ".src.bin")),
      tgt_(split_file(dir, name, ".tgt.bin")) {
  const std::string bytes = read_small_file(index_path_, "pair index", kMaxIndexBytes);
  const std::string& p = index_path_;
  LOOM_USER_CHECK(bytes.size() >= kPairIndexHeaderBytes, p, ": too short to be a pair index (", bytes.size(),
                  " bytes; the header alone is ", kPairIndexHeaderBytes, ")");
  LOOM_USER_CHECK(std::memcmp(bytes.data(), kPairIndexMagic, 8) == 0, p, ": not a pair index (bad magic)");
  uint32_t version = 0, reserved = 0;
  uint64_t n = 0;
  std::memcpy(&version, bytes.data() + 8, 4);
  std::memcpy(&reserved, bytes.data() + 12, 4);
  std::memcpy(&n, bytes.data() + 16, 8);
  LOOM_USER_CHECK(version == kPairIndexVersion, p, ": unsupported pair index version ", version,
                  " (this loom reads version ", kPairIndexVersion, ")");
  LOOM_USER_CHECK(reserved == 0, p, ": reserved header field is ", reserved, " (loom writes 0)");
  // By division, so that a corrupt count cannot overflow.
  const uint64_t payload = bytes.size() - kPairIndexHeaderBytes;
  LOOM_USER_CHECK(n > 0 && payload % 16 == 0 && payload / 16 == n + 1, p, ": size mismatch: the header says ", n,
                  " pairs (", n > 0 ? "" : "there must be at least one; ", "offsets take 16 x (pairs + 1) bytes) but ",
                  payload, " bytes follow the header");
  src_off_.resize(n + 1);
  tgt_off_.resize(n + 1);
  std::memcpy(src_off_.data(), bytes.data() + kPairIndexHeaderBytes, (n + 1) * 8);
  std::memcpy(tgt_off_.data(), bytes.data() + kPairIndexHeaderBytes + (n + 1) * 8, (n + 1) * 8);
  for (auto [off, shard, side] : {std::tuple{&src_off_, &src_, "source"}, std::tuple{&tgt_off_, &tgt_, "target"}}) {
    LOOM_USER_CHECK((*off)[0] == 0, p, ": the first ", side, " offset is ", (*off)[0], ", not 0");
    for (uint64_t i = 0; i < n; ++i) {
      const uint64_t a = (*off)[i], b = (*off)[i + 1];
      LOOM_USER_CHECK(b > a && b - a < kMaxPairSideTokens, p, ": pair ", i, ": ", side, " offsets ", a, " .. ", b,
                      b > a ? " span too many tokens" : " do not rise (every side holds at least one token)");
    }
    LOOM_USER_CHECK(off->back() == shard->size(), p, ": the ", side, " offsets end at ", off->back(), " but ",
                    shard->path(), " holds ", shard->size(), " tokens");
  }
  LOOM_USER_CHECK(src_.vocab_size() == tgt_.vocab_size(), tgt_.path(), ": vocabulary size ", tgt_.vocab_size(),
                  " but ", src_.path(), " has ", src_.vocab_size());
}

void PairSplit::read(const Shard& s, const std::vector<uint64_t>& off, uint64_t i, std::vector<uint32_t>& out) {
  LOOM_CHECK(i + 1 < off.size(), "PairSplit: pair ", i, " of ", off.size() - 1);
  const size_t n = static_cast<size_t>(off[i + 1] - off[i]);
  const size_t at = out.size();
  out.resize(at + n);
  s.read(off[i], n, out.data() + at);
}

PairFolder open_pair_folder(const std::string& dir) {
  const std::string meta_path = dir + "/meta.json";
  const std::string text = read_small_file(meta_path, "pair folder's meta.json", kMaxMetaBytes);
  const nlohmann::json meta = parse_untrusted_json(text, meta_path, "not a data folder's meta.json");
  LOOM_USER_CHECK(meta.is_object(), meta_path, ": expected a JSON object");
  LOOM_USER_CHECK(meta.contains("format") && meta["format"] == "pairs", meta_path,
                  ": not a folder of sequence pairs (no \"format\": \"pairs\"; write one with `loom prepare "
                  "--pairs FILE.tsv`, `--source A --target B` or `--task span-corruption`)");
  auto count = [&](const char* key, uint64_t max) -> uint64_t {
    LOOM_USER_CHECK(meta.contains(key), meta_path, ": missing key \"", key, "\"");
    const nlohmann::json& v = meta[key];
    LOOM_USER_CHECK(v.is_number_unsigned() && v.get<uint64_t>() <= max, meta_path, ": \"", key,
                    "\" must be an integer from 0 to ", max);
    return v.get<uint64_t>();
  };
  constexpr uint64_t kU32 = std::numeric_limits<uint32_t>::max();
  constexpr uint64_t kU64 = std::numeric_limits<uint64_t>::max();

  PairFolder f;
  f.dir = dir;
  for (const char* key : {"tokenizer", "task"})
    LOOM_USER_CHECK(meta.contains(key) && meta[key].is_string(), meta_path, ": \"", key, "\" must be a string");
  f.task = meta["task"].get<std::string>();
  LOOM_USER_CHECK(f.task == "pairs" || f.task == "span-corruption", meta_path, ": \"task\" '", brief(f.task),
                  "' is not pairs or span-corruption");
  const auto tokenizer = open_folder_tokenizer(meta["tokenizer"].get<std::string>(), dir, meta_path);
  f.tokenizer = tokenizer->spec();
  f.vocab.base = static_cast<uint32_t>(count("base_vocab", kU32));
  f.vocab.sentinels = static_cast<uint32_t>(count("sentinels", kU32));
  LOOM_USER_CHECK(f.vocab.base == static_cast<uint32_t>(tokenizer->vocab_size()), meta_path, ": base_vocab ",
                  f.vocab.base, " does not match tokenizer '", tokenizer->name(), "' (", tokenizer->vocab_size(), ")");
  // Every id is cross-checked against the one scheme loom writes: a folder from a loom that
  // placed them differently is refused, not silently misread.
  const std::pair<const char*, uint64_t> ids[] = {{"vocab_size", uint64_t{f.vocab.base} + 3 + f.vocab.sentinels},
                                                  {"pad_id", f.vocab.pad()},
                                                  {"bos_id", f.vocab.bos()},
                                                  {"eos_id", f.vocab.eos()},
                                                  {"sentinel_first", uint64_t{f.vocab.base} + 3}};
  for (const auto& [key, want] : ids)
    LOOM_USER_CHECK(count(key, kU32) == want, meta_path, ": \"", key, "\" is ", meta[key].get<uint64_t>(),
                    " but base_vocab ", f.vocab.base, " and ", f.vocab.sentinels,
                    " sentinels put it at ", want, " (pad, bos, eos, then the sentinels, after the tokenizer's ids)");
  f.train_pairs = count("train_pairs", kU64);
  f.val_pairs = count("val_pairs", kU64);
  if (meta.contains("masks")) {
    f.masks = count("masks", kMaxMasksPerLine);
    LOOM_USER_CHECK(f.masks >= 1 && f.train_pairs % f.masks == 0, meta_path, ": \"masks\" ", f.masks,
                    " must be at least 1 and divide train_pairs ", f.train_pairs,
                    " (every train line has that many pairs)");
  }
  for (const char* name : {"train", "val"}) {
    const PairSplit s(dir, name);
    const std::string n(name);
    const uint64_t pairs = n == "train" ? f.train_pairs : f.val_pairs;
    LOOM_USER_CHECK(s.size() == pairs, s.path(), ": holds ", s.size(), " pairs but ", meta_path, " says ", pairs);
    LOOM_USER_CHECK(s.vocab_size() == f.vocab.size(), s.path(), ": its shards have vocabulary size ", s.vocab_size(),
                    " but ", meta_path, " says ", f.vocab.size());
    for (auto [side, tokens] : {std::pair{"source", s.source_tokens()}, std::pair{"target", s.target_tokens()}}) {
      const std::string key = n + "_" + side + "_tokens";
      LOOM_USER_CHECK(count(key.c_str(), kU64) == tokens, s.path(), ": holds ", tokens, " ", side, " tokens but ",
                      meta_path, " says ", meta[key].get<uint64_t>());
    }
  }
  return f;
}

}  // namespace loom
