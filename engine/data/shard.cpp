// shard.cpp: token shards on disk (write crash-safely; read and validate loom's and llm.c's),
// prepared data folders, and the seeded teacher-forcing window loader.
//
// Everything a user can hand us here (shards, meta.json, corpora) is validated up front and
// reported as one-line UserErrors naming the file, because a bad shard must never become an
// out-of-bounds embedding lookup deep inside a training step.
#include "engine/data/shard.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/check.h"
#include "core/rng.h"
#include "engine/data/corpus.h"
#include "engine/data/tokenizer.h"
#include "engine/io/atomic_file.h"
#include "engine/io/fd.h"
#include "engine/io/json_guard.h"

namespace loom {

// The on-disk format is little-endian and we read its tokens as they are, not by decoding.
static_assert(std::endian::native == std::endian::little, "loom shards assume a little-endian host");

namespace fs = std::filesystem;

namespace {

std::string errno_text() { return std::strerror(errno); }

void put_u32(unsigned char* p, uint32_t v) { std::memcpy(p, &v, 4); }
void put_u64(unsigned char* p, uint64_t v) { std::memcpy(p, &v, 8); }
uint32_t get_u32(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
uint64_t get_u64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

uint32_t width_for_vocab(uint32_t vocab_size) { return vocab_size <= 65536u ? 2u : 4u; }

// meta.json is a few lines; one that holds an inline BPE vocabulary stays far below this.
constexpr uint64_t kMaxMetaBytes = uint64_t{256} << 20;

}  // namespace

// ---------------------------------------------------------------------------------------
// Writing and reading shards

ShardWriter::ShardWriter(const std::string& path, uint32_t vocab_size) : file_(path), vocab_(vocab_size) {
  LOOM_CHECK(vocab_size > 0, "ShardWriter: vocabulary size 0 for ", path);
  width_ = width_for_vocab(vocab_size);
  unsigned char header[kShardHeaderBytes] = {};
  std::memcpy(header, kShardMagic, 8);
  put_u32(header + 8, kShardVersion);
  put_u32(header + 12, width_);
  put_u32(header + 16, vocab_size);
  put_u32(header + 20, 0);
  put_u64(header + 24, 0);
  file_.write(header, sizeof header);
}

void ShardWriter::append(std::span<const uint32_t> tokens) {
  // Narrow through a bounded buffer: a chunk can be far larger than we want to copy at once.
  constexpr size_t kChunk = 1 << 20;
  buf_.resize(std::min(kChunk, tokens.size()) * width_);
  for (size_t begin = 0; begin < tokens.size(); begin += kChunk) {
    const size_t n = std::min(kChunk, tokens.size() - begin);
    for (size_t i = 0; i < n; ++i) {
      const uint32_t t = tokens[begin + i];
      // Tokens come from our tokenizers, so one out of range is a bug, not bad input.
      LOOM_CHECK(t < vocab_, "write_shard: token ", t, " at ", count_ + begin + i, " >= vocabulary ", vocab_);
      if (width_ == 2) {
        const uint16_t v = static_cast<uint16_t>(t);
        std::memcpy(buf_.data() + 2 * i, &v, 2);
      } else {
        std::memcpy(buf_.data() + 4 * i, &t, 4);
      }
    }
    file_.write(buf_.data(), n * width_);
  }
  count_ += tokens.size();
}

void ShardWriter::finish() {
  unsigned char n[8];
  put_u64(n, count_);
  file_.pwrite_at(24, n, 8);
  file_.commit();
}

void write_shard(const std::string& path, std::span<const uint32_t> tokens, uint32_t vocab_size) {
  LOOM_CHECK(vocab_size > 0, "write_shard: vocabulary size 0 for ", path);
  ShardWriter w(path, vocab_size);
  w.append(tokens);
  w.finish();
}

Shard::File Shard::open_file(const std::string& path, uint64_t begin) {
  File f;
  f.path = path;
  f.begin = begin;
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  LOOM_USER_CHECK(f.fd >= 0, path, ": cannot open token shard: ", errno_text());
  // Not yet in files_, so the destructor would not close it: close before every complaint.
  auto fail = [&](const auto&... parts) {
    ::close(f.fd);
    user_error(path, ": ", parts...);
  };
  struct stat st {};
  if (::fstat(f.fd, &st) != 0 || !S_ISREG(st.st_mode)) fail("not a regular file (expected a loom token shard)");
  const uint64_t bytes = static_cast<uint64_t>(st.st_size);
  unsigned char h[kLlmcHeaderBytes];
  const ssize_t got = ::pread(f.fd, h, std::min<uint64_t>(bytes, sizeof h), 0);
  if (got < 0 || static_cast<uint64_t>(got) != std::min<uint64_t>(bytes, sizeof h)) fail("cannot read the shard header");
  uint32_t vocab = 0;
  if (bytes >= 4 && static_cast<int32_t>(get_u32(h)) == kLlmcMagic) {
    // llm.c: every one of the 256 header fields is known (magic, version, count, then zeros).
    if (bytes < kLlmcHeaderBytes)
      fail("too short to be an llm.c token shard (", bytes, " bytes; the header alone is ", kLlmcHeaderBytes, ")");
    const int32_t version = static_cast<int32_t>(get_u32(h + 4));
    if (version != kLlmcVersion)
      fail("unsupported llm.c shard version ", version, " (loom reads version ", kLlmcVersion,
           ": GPT-2 tokens as uint16)");
    const int32_t count = static_cast<int32_t>(get_u32(h + 8));
    if (count < 0) fail("llm.c header: negative token count ", count);
    for (size_t k = 3; k < 256; ++k)
      if (get_u32(h + 4 * k) != 0)
        fail("llm.c header: field ", k, " is ", static_cast<int32_t>(get_u32(h + 4 * k)), " (llm.c writes 0 there)");
    f.header_bytes = kLlmcHeaderBytes;
    f.width = 2;
    f.count = static_cast<uint64_t>(count);
    vocab = kLlmcVocab;
  } else {
    if (bytes < kShardHeaderBytes)
      fail("too short to be a loom token shard (", bytes, " bytes; the header alone is ", kShardHeaderBytes, ")");
    if (std::memcmp(h, kShardMagic, 8) != 0) fail("not a loom token shard (bad magic)");
    const uint32_t version = get_u32(h + 8);
    if (version != kShardVersion)
      fail("unsupported shard version ", version, " (this loom reads version ", kShardVersion, ")");
    f.width = get_u32(h + 12);
    if (f.width != 2 && f.width != 4) fail("bad token width ", f.width, " (must be 2 or 4)");
    vocab = get_u32(h + 16);
    if (vocab == 0) fail("vocabulary size is 0");
    if (f.width == 2 && vocab > 65536u) fail("vocabulary size ", vocab, " does not fit 16-bit tokens");
    f.header_bytes = kShardHeaderBytes;
    f.count = get_u64(h + 24);
  }
  const uint64_t payload = bytes - f.header_bytes;
  // Compare by division so a corrupt count cannot overflow count * width.
  if (payload % f.width != 0 || payload / f.width != f.count) {
    fail("size mismatch: the header says ", f.count, " tokens of ", f.width, " bytes but the file holds ", payload,
         " bytes of tokens (truncated or corrupt)");
  }
  if (!files_.empty() && vocab != vocab_)
    fail("vocabulary size ", vocab, ", but ", files_.front().path, " (of the same split) has ", vocab_);
  vocab_ = vocab;
  return f;
}

Shard::Shard(const std::string& path) : Shard(std::vector<std::string>{path}) {}

Shard::Shard(const std::vector<std::string>& paths) {
  LOOM_CHECK(!paths.empty() && paths.size() <= kMaxShardFiles, "Shard: ", paths.size(), " files");
  try {
    for (const std::string& p : paths) {
      files_.push_back(open_file(p, count_));
      count_ += files_.back().count;
    }
  } catch (...) {
    for (File& f : files_) ::close(f.fd);
    throw;
  }
  path_ = paths.size() == 1 ? paths[0]
                            : paths.front() + " .. " + paths.back() + " (" + std::to_string(paths.size()) + " shards)";
}

Shard::~Shard() {
  for (File& f : files_) ::close(f.fd);
}

uint32_t Shard::width() const { return files_.front().width; }

void Shard::read(uint64_t begin, size_t n, uint32_t* out) const {
  LOOM_CHECK(begin <= count_ && n <= count_ - begin, "Shard::read past the end of ", path_);
  // The file holding `begin`: the last one starting at or before it (empty files are skipped).
  size_t k = static_cast<size_t>(
      std::upper_bound(files_.begin(), files_.end(), begin, [](uint64_t b, const File& f) { return b < f.begin; }) -
      files_.begin());
  k = k > 0 ? k - 1 : 0;
  while (n > 0) {
    const File& f = files_[k++];
    if (begin >= f.begin + f.count) continue;
    const uint64_t at = begin - f.begin;
    const size_t m = static_cast<size_t>(std::min<uint64_t>(n, f.count - at));
    // Read into the output's bytes, then widen 16-bit tokens in place from the end.
    const size_t want = m * f.width;
    const auto r = [&](char* p, size_t len, uint64_t o) { return ::pread(f.fd, p, len, static_cast<off_t>(o)); };
    errno = 0;
    const size_t got = transfer(out, want, f.header_bytes + at * f.width, r);
    // Opened whole, now short: the file changed under the run (truncated or replaced).
    LOOM_USER_CHECK(got == want, f.path, ": cannot read tokens ", at, "..", at + m, " of ", f.count, ": ",
                    errno ? errno_text() : std::string("the file is shorter than when it was opened (truncated while in use?)"));
    if (f.width == 2) {
      const uint16_t* narrow = reinterpret_cast<const uint16_t*>(out);
      for (size_t i = m; i-- > 0;) out[i] = narrow[i];
    }
    // The header was checked when the shard opened, the payload was not (that would read the
    // whole file); a bad token here would index past the embedding table.
    for (size_t i = 0; i < m; ++i)
      LOOM_USER_CHECK(out[i] < vocab_, f.path, ": token ", out[i], " at position ", at + i,
                      " is outside the vocabulary (size ", vocab_, "); the shard is corrupt");
    out += m;
    begin += m;
    n -= m;
  }
}

// ---------------------------------------------------------------------------------------
// Prepared data folders

namespace {

// The shard files of a split as meta.json lists them: plain names of files in the folder.
std::vector<std::string> shard_list(const nlohmann::json& meta, const char* key, const char* fallback,
                                    const std::string& dir, const std::string& meta_path) {
  if (!meta.contains(key)) return {dir + "/" + fallback};  // written before loom had shard lists
  const nlohmann::json& v = meta[key];
  LOOM_USER_CHECK(v.is_array() && !v.empty() && v.size() <= kMaxShardFiles, meta_path, ": \"", key,
                  "\" must be a list of 1 to ", kMaxShardFiles, " shard file names");
  std::vector<std::string> out;
  out.reserve(v.size());
  for (const auto& name : v) {
    // Only files in the folder: a data folder from elsewhere must not make loom read (and
    // quote in its errors) a file of the user's.
    LOOM_USER_CHECK(name.is_string(), meta_path, ": \"", key, "\" holds ", json_brief(name), ", not a file name");
    const std::string n = name.get<std::string>();
    LOOM_USER_CHECK(!n.empty() && n.find('/') == std::string::npos && n != "." && n != "..", meta_path, ": \"", key,
                    "\": '", brief(n), "' is not the name of a file in the data folder");
    out.push_back(dir + "/" + n);
  }
  return out;
}

// A folder of llm.c shards (no meta.json): its *_train*.bin and *_val*.bin files, by name.
// Empty lists when there are none.
void find_llmc_shards(const std::string& dir, std::vector<std::string>& train, std::vector<std::string>& val) {
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!name.ends_with(".bin") || !it->is_regular_file(ec)) continue;
    if (name.find("_train") != std::string::npos) train.push_back(it->path().string());
    else if (name.find("_val") != std::string::npos) val.push_back(it->path().string());
    LOOM_USER_CHECK(train.size() + val.size() <= 2 * kMaxShardFiles, dir, ": more than ", 2 * kMaxShardFiles,
                    " shard files");
  }
  std::sort(train.begin(), train.end());
  std::sort(val.begin(), val.end());
}

// The shards of both splits must agree with what the folder says of them: a half-rewritten
// folder shows up here, not as a mysterious loss curve later.
void check_splits(const DataFolder& folder, const std::string& source) {
  for (auto [files, expected] : {std::pair{&folder.train_files, folder.train_tokens},
                                 std::pair{&folder.val_files, folder.val_tokens}}) {
    Shard shard(*files);
    LOOM_USER_CHECK(shard.vocab_size() == folder.vocab_size, shard.path(), ": vocabulary size ", shard.vocab_size(),
                    " but ", source, " says ", folder.vocab_size);
    LOOM_USER_CHECK(shard.size() == expected, shard.path(), ": holds ", shard.size(), " tokens but ", source,
                    " says ", expected);
  }
}

DataFolder open_llmc_folder(const std::string& dir, std::vector<std::string> train, std::vector<std::string> val) {
  LOOM_USER_CHECK(!train.empty() && !val.empty(), dir, ": holds llm.c shards but not both splits (",
                  train.size(), " *_train*.bin, ", val.size(), " *_val*.bin)");
  DataFolder folder;
  folder.dir = dir;
  std::unique_ptr<Tokenizer> tokenizer;
  try {
    tokenizer = make_tokenizer("gpt2");
  } catch (const UserError& e) {
    user_error(dir, ": llm.c shards hold GPT-2 tokens: ", e.what());
  }
  folder.tokenizer = tokenizer->spec();
  folder.vocab_size = kLlmcVocab;
  folder.eot_id = tokenizer->eot_id();
  folder.train_files = std::move(train);
  folder.val_files = std::move(val);
  folder.train_tokens = Shard(folder.train_files).size();
  folder.val_tokens = Shard(folder.val_files).size();
  check_splits(folder, dir + " (llm.c shards, GPT-2's vocabulary)");
  return folder;
}

}  // namespace

std::unique_ptr<Tokenizer> open_folder_tokenizer(const std::string& meta_spec, const std::string& dir,
                                                 const std::string& meta_path) {
  // "bpe:FILE" names a BPE vocabulary in the folder (prepare copies it there); nothing outside
  // the folder, so that a data folder from elsewhere cannot make loom read (and quote in its
  // errors) a file of the user's. The caller keeps the tokenizer's self-contained spec, which
  // is what checkpoints record.
  const bool eot = meta_spec.starts_with(kEotSpecPrefix);
  std::string spec = eot ? meta_spec.substr(kEotSpecPrefix.size()) : meta_spec;
  if (spec.rfind("bpe:", 0) == 0) {
    const fs::path file(spec.substr(4));
    bool inside = !file.empty() && file.is_relative();
    for (const auto& part : file) inside = inside && part != "..";
    LOOM_USER_CHECK(inside, meta_path, ": \"tokenizer\" '", brief(meta_spec),
                    "' must name a file inside the data folder (bpe:FILE, as `loom prepare` writes it)");
    spec = "bpe:" + dir + "/" + file.string();
  } else {
    LOOM_USER_CHECK(is_inline_tokenizer_spec(spec) && !spec.starts_with(kEotSpecPrefix), meta_path,
                    ": \"tokenizer\" '", brief(meta_spec),
                    "' is not byte, gpt2 or bpe:FILE (a file in the data folder), with or without eot: in front");
  }
  if (eot) spec = std::string(kEotSpecPrefix) + spec;
  try {
    return make_tokenizer(spec);
  } catch (const UserError& e) {
    user_error(meta_path, ": ", e.what());
  }
}

DataFolder open_data_folder(const std::string& dir) {
  std::error_code ec;
  LOOM_USER_CHECK(fs::is_directory(dir, ec), dir, ": no such data folder (write one with `loom prepare`)");
  const std::string meta_path = dir + "/meta.json";
  if (!fs::exists(meta_path, ec)) {
    std::vector<std::string> train, val;
    find_llmc_shards(dir, train, val);
    if (!train.empty() || !val.empty()) return open_llmc_folder(dir, std::move(train), std::move(val));
  }
  LOOM_USER_CHECK(fs::exists(meta_path, ec), meta_path, ": missing (is ", dir,
                  " a folder written by `loom prepare`, or one of llm.c shards?)");
  const std::string text = read_small_file(meta_path, "meta.json", kMaxMetaBytes);

  nlohmann::json meta = parse_untrusted_json(text, meta_path, "not a data folder's meta.json");
  LOOM_USER_CHECK(meta.is_object(), meta_path, ": expected a JSON object");
  auto field = [&](const char* key) -> const nlohmann::json& {
    LOOM_USER_CHECK(meta.contains(key), meta_path, ": missing key \"", key, "\"");
    return meta[key];
  };
  auto get_count = [&](const char* key, uint64_t max) -> uint64_t {
    const nlohmann::json& v = field(key);
    LOOM_USER_CHECK(v.is_number_unsigned() && v.get<uint64_t>() <= max, meta_path, ": \"", key,
                    "\" must be an integer from 0 to ", max);
    return v.get<uint64_t>();
  };

  LOOM_USER_CHECK(!meta.contains("format") || meta["format"] != "pairs", meta_path,
                  ": a folder of sequence pairs (`loom prepare --pairs`), not a token stream; open it with "
                  "open_pair_folder (engine/data/pairs.h)");
  DataFolder folder;
  folder.dir = dir;
  const nlohmann::json& tok = field("tokenizer");
  LOOM_USER_CHECK(tok.is_string(), meta_path, ": \"tokenizer\" must be a string");
  folder.tokenizer = tok.get<std::string>();
  folder.vocab_size = static_cast<uint32_t>(get_count("vocab_size", std::numeric_limits<uint32_t>::max()));
  folder.train_tokens = get_count("train_tokens", std::numeric_limits<uint64_t>::max());
  folder.val_tokens = get_count("val_tokens", std::numeric_limits<uint64_t>::max());
  folder.train_files = shard_list(meta, "train_shards", "train.bin", dir, meta_path);
  folder.val_files = shard_list(meta, "val_shards", "val.bin", dir, meta_path);

  const std::unique_ptr<Tokenizer> tokenizer = open_folder_tokenizer(folder.tokenizer, dir, meta_path);
  folder.tokenizer = tokenizer->spec();
  folder.eot_id = tokenizer->eot_id();
  LOOM_USER_CHECK(static_cast<uint32_t>(tokenizer->vocab_size()) == folder.vocab_size, meta_path, ": vocab_size ",
                  folder.vocab_size, " does not match tokenizer '", tokenizer->name(), "' (",
                  tokenizer->vocab_size(), ")");
  if (meta.contains("eot_id")) {
    const nlohmann::json& e = meta["eot_id"];
    const bool same = e.is_null() ? !folder.eot_id
                                  : e.is_number_unsigned() && folder.eot_id && e.get<uint64_t>() == *folder.eot_id;
    LOOM_USER_CHECK(same, meta_path, ": \"eot_id\" ", json_brief(e), " is not tokenizer '", tokenizer->name(),
                    "''s end-of-text id (",
                    folder.eot_id ? std::to_string(*folder.eot_id) : std::string("it has none"), ")");
  }
  check_splits(folder, meta_path);
  return folder;
}

// ---------------------------------------------------------------------------------------
// The window loader

WindowLoader::WindowLoader(const Shard& shard, int seq_len, uint64_t seed)
    : shard_(shard), T_(seq_len), rng_state_(Rng(seed).state()) {
  LOOM_USER_CHECK(seq_len > 0, "seq_len must be positive, got ", seq_len);
  LOOM_USER_CHECK(shard.size() >= static_cast<uint64_t>(seq_len) + 1, shard.path(), ": holds ", shard.size(),
                  " tokens, fewer than seq_len + 1 = ", static_cast<uint64_t>(seq_len) + 1,
                  " needed for one window");
}

void WindowLoader::next_batch(int global_batch, int rank, int world, int32_t* x, int32_t* y) {
  LOOM_CHECK(world > 0 && global_batch > 0 && global_batch % world == 0, "next_batch: global batch ", global_batch,
             " does not split over ", world, " ranks");
  LOOM_CHECK(rank >= 0 && rank < world, "next_batch: rank ", rank, " outside world ", world);
  const int B = global_batch / world;
  const uint64_t T = static_cast<uint64_t>(T_);
  const uint64_t starts = shard_.size() - T;  // i in [0, size - T - 1]
  std::vector<uint32_t> window;
  Rng rng;
  rng.set_state(rng_state_);
  // Every rank draws the whole global batch so all ranks stay on one stream; each keeps only
  // its rows. Drawing is cheap next to the copy.
  for (int row = 0; row < global_batch; ++row) {
    const uint64_t start = rng.below(starts);
    const int local = row - rank * B;
    if (local < 0 || local >= B) continue;
    int32_t* xr = x + static_cast<size_t>(local) * T;
    int32_t* yr = y + static_cast<size_t>(local) * T;
    window.resize(T + 1);
    shard_.read(start, T + 1, window.data());
    for (uint64_t t = 0; t < T; ++t) {
      xr[t] = static_cast<int32_t>(window[t]);
      yr[t] = static_cast<int32_t>(window[t + 1]);
    }
  }
  rng_state_ = rng.state();
}

std::array<uint64_t, 4> WindowLoader::state() const { return rng_state_; }

void WindowLoader::set_state(const std::array<uint64_t, 4>& s) {
  // xoshiro's all-zero state is a fixed point (it would yield zeros forever); only a corrupt
  // checkpoint can hold it.
  LOOM_USER_CHECK(s[0] | s[1] | s[2] | s[3], "loader state is all zeros (corrupt checkpoint?)");
  rng_state_ = s;
}

}  // namespace loom
