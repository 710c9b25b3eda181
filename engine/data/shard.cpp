// shard.cpp: token shards on disk (write crash-safely, map and validate), prepared data
// folders, the seeded teacher-forcing window loader, and `loom prepare`.
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
#include <cmath>
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

// A shard written incrementally: the header goes first with a count of 0, tokens are appended
// as they come (narrowed to the shard's width), and finish() cuts the file to `keep` tokens,
// patches the count and commits (fsync, rename). Until then only the temporary file exists.
class ShardWriter {
 public:
  ShardWriter(const std::string& path, uint32_t vocab_size) : file_(path), vocab_(vocab_size) {
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

  void append(std::span<const uint32_t> tokens) {
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

  uint64_t count() const { return count_; }

  // Tokens [from, from + n) of what was appended, widened back to uint32.
  void read_back(uint64_t from, size_t n, std::vector<uint32_t>& out) {
    LOOM_CHECK(from + n <= count_, "read_back past the end");
    buf_.resize(n * width_);
    file_.pread_at(kShardHeaderBytes + from * width_, buf_.data(), buf_.size());
    out.resize(n);
    for (size_t i = 0; i < n; ++i) {
      if (width_ == 2) {
        uint16_t v;
        std::memcpy(&v, buf_.data() + 2 * i, 2);
        out[i] = v;
      } else {
        std::memcpy(&out[i], buf_.data() + 4 * i, 4);
      }
    }
  }

  void finish(uint64_t keep) {
    LOOM_CHECK(keep <= count_, "finish: keep ", keep, " > ", count_);
    if (keep < count_) file_.truncate(kShardHeaderBytes + keep * width_);
    unsigned char n[8];
    put_u64(n, keep);
    file_.pwrite_at(24, n, 8);
    count_ = keep;
    file_.commit();
  }

 private:
  AtomicFile file_;
  uint32_t vocab_, width_ = 0;
  uint64_t count_ = 0;
  std::vector<unsigned char> buf_;
};

// meta.json is a few lines; one that holds an inline BPE vocabulary stays far below this.
constexpr uint64_t kMaxMetaBytes = uint64_t{256} << 20;

}  // namespace

// ---------------------------------------------------------------------------------------
// Writing and reading shards

void write_shard(const std::string& path, std::span<const uint32_t> tokens, uint32_t vocab_size) {
  LOOM_CHECK(vocab_size > 0, "write_shard: vocabulary size 0 for ", path);
  ShardWriter w(path, vocab_size);
  w.append(tokens);
  w.finish(tokens.size());
}

Shard::Shard(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  LOOM_USER_CHECK(fd_ >= 0, path, ": cannot open token shard: ", errno_text());
  // The destructor does not run when a constructor throws, so close before every complaint.
  auto fail = [&](const auto&... parts) {
    ::close(fd_);
    fd_ = -1;
    user_error(path, ": ", parts...);
  };
  struct stat st {};
  if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) fail("not a regular file (expected a loom token shard)");
  const uint64_t bytes = static_cast<uint64_t>(st.st_size);
  if (bytes < kShardHeaderBytes)
    fail("too short to be a loom token shard (", bytes, " bytes; the header alone is ", kShardHeaderBytes, ")");
  unsigned char h[kShardHeaderBytes];
  if (::pread(fd_, h, sizeof h, 0) != static_cast<ssize_t>(sizeof h)) fail("cannot read the shard header");
  if (std::memcmp(h, kShardMagic, 8) != 0) fail("not a loom token shard (bad magic)");
  const uint32_t version = get_u32(h + 8);
  if (version != kShardVersion)
    fail("unsupported shard version ", version, " (this loom reads version ", kShardVersion, ")");
  width_ = get_u32(h + 12);
  if (width_ != 2 && width_ != 4) fail("bad token width ", width_, " (must be 2 or 4)");
  vocab_ = get_u32(h + 16);
  if (vocab_ == 0) fail("vocabulary size is 0");
  if (width_ == 2 && vocab_ > 65536u) fail("vocabulary size ", vocab_, " does not fit 16-bit tokens");
  count_ = get_u64(h + 24);
  const uint64_t payload = bytes - kShardHeaderBytes;
  // Compare by division so a corrupt count cannot overflow count * width.
  if (payload % width_ != 0 || payload / width_ != count_) {
    fail("size mismatch: the header says ", count_, " tokens of ", width_, " bytes but the file holds ", payload,
         " bytes of tokens (truncated or corrupt)");
  }
}

Shard::~Shard() {
  if (fd_ >= 0) ::close(fd_);
}

void Shard::read(uint64_t begin, size_t n, uint32_t* out) const {
  LOOM_CHECK(begin <= count_ && n <= count_ - begin, "Shard::read past the end of ", path_);
  // Read into the output's bytes, then widen 16-bit tokens in place from the end.
  const size_t want = n * width_;
  const auto r = [&](char* p, size_t k, uint64_t o) { return ::pread(fd_, p, k, static_cast<off_t>(o)); };
  const size_t got = transfer(out, want, kShardHeaderBytes + begin * width_, r);
  // Opened whole, now short: the file changed under the run (truncated or replaced).
  LOOM_USER_CHECK(got == want, path_, ": cannot read tokens ", begin, "..", begin + n, " of ", count_, ": ",
                  errno ? errno_text() : std::string("the file is shorter than when it was opened (truncated while in use?)"));
  if (width_ == 2) {
    const uint16_t* narrow = reinterpret_cast<const uint16_t*>(out);
    for (size_t i = n; i-- > 0;) out[i] = narrow[i];
  }
  // The header was checked when the shard opened, the payload was not (that would read the
  // whole file); a bad token here would index past the embedding table.
  for (size_t i = 0; i < n; ++i)
    LOOM_USER_CHECK(out[i] < vocab_, path_, ": token ", out[i], " at position ", begin + i,
                    " is outside the vocabulary (size ", vocab_, "); the shard is corrupt");
}

// ---------------------------------------------------------------------------------------
// Prepared data folders

DataFolder open_data_folder(const std::string& dir) {
  std::error_code ec;
  LOOM_USER_CHECK(fs::is_directory(dir, ec), dir, ": no such data folder (write one with `loom prepare`)");
  const std::string meta_path = dir + "/meta.json";
  LOOM_USER_CHECK(fs::exists(meta_path, ec), meta_path, ": missing (is ", dir, " a folder written by `loom prepare`?)");
  const std::string text = read_small_file(meta_path, "meta.json", kMaxMetaBytes);

  check_json_depth(text, meta_path, "not a data folder's meta.json");
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    user_error(meta_path, ": not valid JSON: ", json_error_text(e));
  }
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

  DataFolder folder;
  folder.dir = dir;
  const nlohmann::json& tok = field("tokenizer");
  LOOM_USER_CHECK(tok.is_string(), meta_path, ": \"tokenizer\" must be a string");
  folder.tokenizer = tok.get<std::string>();
  folder.vocab_size = static_cast<uint32_t>(get_count("vocab_size", std::numeric_limits<uint32_t>::max()));
  folder.train_tokens = get_count("train_tokens", std::numeric_limits<uint64_t>::max());
  folder.val_tokens = get_count("val_tokens", std::numeric_limits<uint64_t>::max());

  // "bpe:FILE" names a BPE vocabulary in the folder (prepare copies it there); nothing outside
  // the folder, so that a data folder from elsewhere cannot make loom read (and quote in its
  // errors) a file of the user's. folder.tokenizer becomes the self-contained spec, which is
  // what checkpoints record.
  std::string spec = folder.tokenizer;
  if (spec.rfind("bpe:", 0) == 0) {
    const fs::path file(spec.substr(4));
    bool inside = !file.empty() && file.is_relative();
    for (const auto& part : file) inside = inside && part != "..";
    LOOM_USER_CHECK(inside, meta_path, ": \"tokenizer\" '", brief(spec),
                    "' must name a file inside the data folder (bpe:FILE, as `loom prepare` writes it)");
    spec = "bpe:" + dir + "/" + file.string();
  } else {
    LOOM_USER_CHECK(is_inline_tokenizer_spec(spec), meta_path, ": \"tokenizer\" '", brief(spec),
                    "' is not byte, gpt2 or bpe:FILE (a file in the data folder)");
  }
  std::unique_ptr<Tokenizer> tokenizer;
  try {
    tokenizer = make_tokenizer(spec);
  } catch (const UserError& e) {
    user_error(meta_path, ": ", e.what());
  }
  folder.tokenizer = tokenizer->spec();
  LOOM_USER_CHECK(static_cast<uint32_t>(tokenizer->vocab_size()) == folder.vocab_size, meta_path, ": vocab_size ",
                  folder.vocab_size, " does not match tokenizer '", tokenizer->name(), "' (",
                  tokenizer->vocab_size(), ")");

  // The shards must agree with meta.json; a half-rewritten folder shows up here, not as a
  // mysterious loss curve later.
  for (auto [path, expected] : {std::pair{folder.train_path(), folder.train_tokens},
                                std::pair{folder.val_path(), folder.val_tokens}}) {
    Shard shard(path);
    LOOM_USER_CHECK(shard.vocab_size() == folder.vocab_size, path, ": vocabulary size ", shard.vocab_size(),
                    " but ", meta_path, " says ", folder.vocab_size);
    LOOM_USER_CHECK(shard.size() == expected, path, ": holds ", shard.size(), " tokens but ", meta_path, " says ",
                    expected);
  }
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

// ---------------------------------------------------------------------------------------
// `loom prepare`

void prepare_corpus(const std::string& corpus, const std::string& tokenizer_spec, const std::string& out_dir,
                    double val_fraction) {
  PrepareOptions o;
  o.val_fraction = val_fraction;
  prepare_corpus(corpus, tokenizer_spec, out_dir, o);
}

void prepare_corpus(const std::string& corpus, const std::string& tokenizer_spec, const std::string& out_dir,
                    const PrepareOptions& o) {
  const double val_fraction = o.val_fraction;
  LOOM_USER_CHECK(val_fraction > 0.0 && val_fraction < 1.0, "val_fraction ", val_fraction, " must be in (0, 1)");
  std::unique_ptr<Tokenizer> tokenizer = make_tokenizer(tokenizer_spec);
  const std::string text_path = corpus_text_path(corpus);
  {
    // Checked before the output folder is made, so a typo leaves nothing behind.
    std::error_code ec;
    LOOM_USER_CHECK(fs::exists(text_path, ec), text_path, ": cannot open corpus: no such file");
  }

  std::error_code ec, ec_dir;
  fs::create_directories(out_dir, ec);
  LOOM_USER_CHECK(fs::is_directory(out_dir, ec_dir), out_dir, ": cannot create the data folder",
                  ec ? ": " + ec.message() : std::string(" (a file is in the way)"));
  const uint32_t vocab = static_cast<uint32_t>(tokenizer->vocab_size());
  DataFolder folder{out_dir, tokenizer->name(), vocab};

  // Stream: read a chunk, tokenize the part whose tokens cannot change when more text follows
  // (the tokenizer says how much), append to train.bin's temporary file, carry the rest. Memory
  // stays at a few chunks whatever the corpus size.
  ShardWriter train(folder.train_path(), vocab);
  Utf8Validator utf8(text_path);
  std::vector<uint32_t> ids;
  int next_pct = 25;
  const bool default_progress = !o.progress;
  stream_file(
      text_path, "corpus", o.chunk_bytes,
      [&](std::string_view text, bool at_end) {
        ids.clear();
        const size_t used = tokenizer->encode_stream(text, at_end, ids);
        // Only what is consumed is checked: the rest comes back in front of the next chunk.
        // (at_end may also mean "a carried piece grew too long"; the end is checked below.)
        utf8.feed(text.substr(0, used), false);
        train.append(ids);
        return used;
      },
      [&](uint64_t done, uint64_t total) {
        if (!default_progress) return o.progress(done, total);
        // Plain lines at every quarter: prepare's default is to be readable in a log.
        const int pct = total ? static_cast<int>(100.0 * static_cast<double>(done) / static_cast<double>(total)) : 100;
        if (pct < next_pct) return;
        const bool mib = total >= (1u << 20);
        const double scale = mib ? 1.0 / (1024.0 * 1024.0) : 1.0 / 1024.0;
        std::fprintf(stderr, "loom prepare: tokenized %.1f / %.1f %s (%d%%)\n", done * scale, total * scale,
                     mib ? "MiB" : "KiB", pct);
        std::fflush(stderr);
        while (next_pct <= pct) next_pct += 25;
      });

  utf8.feed({}, true);  // a character cut off by the end of the file

  // The split is the one loom always had: the last val_fraction of the tokens (at least
  // kMinSplitTokens) is validation, so it is text the model never trained on, not
  // interleaved. Streaming cannot know the count up front, so train.bin received every token;
  // the tail is copied into val.bin and train.bin is cut short.
  const uint64_t n = train.count();
  uint64_t n_val = static_cast<uint64_t>(std::ceil(static_cast<double>(n) * val_fraction));
  n_val = std::max<uint64_t>(n_val, kMinSplitTokens);
  LOOM_USER_CHECK(n >= 2 * kMinSplitTokens && n - n_val >= kMinSplitTokens, text_path, ": too small: ", n,
                  " tokens, but train and val each need at least ", kMinSplitTokens, " (with val_fraction ",
                  val_fraction, ")");
  const uint64_t n_train = n - n_val;
  {
    ShardWriter val(folder.val_path(), vocab);
    constexpr uint64_t kCopy = 1 << 20;
    for (uint64_t at = n_train; at < n; at += kCopy) {
      train.read_back(at, static_cast<size_t>(std::min(kCopy, n - at)), ids);
      val.append(ids);
    }
    train.finish(n_train);
    val.finish(n_val);
  }

  // A BPE vocabulary travels with its shards (tokenizer.json in the folder); meta.json names
  // it relative to the folder, so the folder can move.
  std::string meta_tokenizer = tokenizer->name();
  if (tokenizer->spec() != tokenizer->name()) {
    const std::string spec = tokenizer->spec();
    AtomicFile f(out_dir + "/tokenizer.json");
    f.write(spec.data(), spec.size());
    f.commit();
    meta_tokenizer = "bpe:tokenizer.json";
  }
  // meta.json last: open_data_folder cross-checks it against the shards, so a crash before
  // this point is detected rather than trusted.
  nlohmann::json meta = {{"tokenizer", meta_tokenizer}, {"vocab_size", vocab}, {"train_tokens", n_train},
                         {"val_tokens", n_val},         {"corpus", corpus}};
  const std::string meta_text = meta.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  AtomicFile f(out_dir + "/meta.json");
  f.write(meta_text.data(), meta_text.size());
  f.commit();

  std::printf("loom prepare: %s: %llu train tokens, %llu val tokens, vocabulary %u (%s) -> %s\n", text_path.c_str(),
              static_cast<unsigned long long>(n_train), static_cast<unsigned long long>(n_val), vocab,
              tokenizer->name().c_str(), out_dir.c_str());
  std::fflush(stdout);
}

}  // namespace loom
