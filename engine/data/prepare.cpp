// prepare.cpp: `loom prepare`. Each input file is tokenized on its own (by a pool of threads)
// into a temporary shard; then the temporary shards are read back in file order, joined with
// end-of-text ids between documents, cut into the train and val splits and into shards of the
// requested size. Splitting the work by file and joining in file order is what makes the
// output the same bytes for any thread count.
#include "engine/data/prepare.h"

#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <exception>
#include <functional>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/check.h"
#include "engine/data/corpus.h"
#include "engine/data/shard.h"
#include "engine/data/tokenizer.h"
#include "engine/io/atomic_file.h"
#include "engine/io/json_guard.h"

namespace loom {

namespace fs = std::filesystem;

namespace {

bool has_glob_chars(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

uint64_t file_bytes(const std::string& path) {
  std::error_code ec;
  const uintmax_t n = fs::file_size(path, ec);
  LOOM_USER_CHECK(!ec, path, ": cannot open corpus: ", ec.message());
  return static_cast<uint64_t>(n);
}

bool is_jsonl(const std::string& path) { return path.ends_with(".jsonl"); }

// What one input file became: a temporary shard of `tokens` tokens holding `documents`
// documents (end-of-text ids already between the documents of a JSONL file).
struct Piece {
  uint64_t tokens = 0, documents = 0;
};

// Shared by the tokenizing threads.
struct Work {
  Work(const Tokenizer& t, const CorpusFiles& c, const PrepareOptions& opt, std::string tmp, uint32_t v)
      : tok(t), corpus(c), o(opt), tmp_dir(std::move(tmp)), vocab(v), pieces(c.files.size()), errors(c.files.size()) {}
  const Tokenizer& tok;
  const CorpusFiles& corpus;
  const PrepareOptions& o;
  std::string tmp_dir;
  uint32_t vocab;
  std::atomic<size_t> next{0};
  std::atomic<uint64_t> bytes_done{0};
  std::atomic<bool> stop{false};
  std::vector<Piece> pieces;
  std::vector<std::exception_ptr> errors;
  std::mutex m;
  std::condition_variable cv;
  int running = 0;
  // Set when the calling thread tokenizes alone: progress goes to it at every chunk.
  std::function<void(uint64_t)> report_inline;

  std::string piece_path(size_t i) const { return tmp_dir + "/" + std::to_string(i) + ".bin"; }
};

// One JSONL line: the document's text, from the object's jsonl_field.
std::string jsonl_text(std::string_view line, const std::string& field, const std::string& where) {
  nlohmann::json j = parse_untrusted_json(line, where, "not a JSON object");
  LOOM_USER_CHECK(j.is_object(), where, ": expected a JSON object, got ", json_brief(j));
  LOOM_USER_CHECK(j.contains(field), where, ": no key \"", brief(field), "\" (set it with --jsonl-field)");
  LOOM_USER_CHECK(j[field].is_string(), where, ": \"", brief(field), "\" must be a string, got ", json_brief(j[field]));
  return j[field].get<std::string>();
}

// Tokenizes input file i into its temporary shard.
void tokenize_file(Work& w, size_t i) {
  const std::string& path = w.corpus.files[i];
  Piece& piece = w.pieces[i];
  uint64_t reported = 0;
  const ByteProgress progress = [&](uint64_t done, uint64_t) {
    w.bytes_done += done - reported;
    reported = done;
    if (w.report_inline) w.report_inline(w.bytes_done);
  };
  // Documents mode skips an empty file (a folder may hold one); a lone corpus file must not be.
  if (w.corpus.documents && file_bytes(path) == 0) return;
  ShardWriter out(w.piece_path(i), w.vocab);
  std::vector<uint32_t> ids;
  if (w.corpus.documents && is_jsonl(path)) {
    const uint32_t eot = *w.tok.eot_id();
    uint64_t line_no = 0;
    stream_file(
        path, "corpus", w.o.chunk_bytes,
        [&](std::string_view text, bool at_end) {
          size_t used = 0;
          while (used < text.size()) {
            const size_t nl = text.find('\n', used);
            if (nl == std::string_view::npos && !at_end) break;  // the rest comes with the next chunk
            const size_t end = nl == std::string_view::npos ? text.size() : nl;
            const std::string_view line = text.substr(used, end - used);
            used = nl == std::string_view::npos ? text.size() : nl + 1;
            ++line_no;
            if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;  // blank lines
            const std::string doc = jsonl_text(line, w.o.jsonl_field, path + ":" + std::to_string(line_no));
            ids.clear();
            if (piece.documents++ > 0) ids.push_back(eot);
            w.tok.encode_stream(doc, true, ids);
            out.append(ids);
          }
          return used;
        },
        progress);
  } else {
    Utf8Validator utf8(path);
    stream_file(
        path, "corpus", w.o.chunk_bytes,
        [&](std::string_view text, bool at_end) {
          ids.clear();
          const size_t used = w.tok.encode_stream(text, at_end, ids);
          // Only what is consumed is checked: the rest comes back in front of the next chunk.
          // (at_end may also mean "a carried piece grew too long"; the end is checked below.)
          utf8.feed(text.substr(0, used), false);
          out.append(ids);
          return used;
        },
        progress);
    utf8.feed({}, true);  // a character cut off by the end of the file
    piece.documents = 1;
  }
  piece.tokens = out.count();
  out.finish();
}

void worker(Work& w) {
  for (size_t i; !w.stop && (i = w.next++) < w.corpus.files.size();) {
    try {
      tokenize_file(w, i);
    } catch (...) {
      w.errors[i] = std::current_exception();
      w.stop = true;
    }
  }
  std::lock_guard<std::mutex> lock(w.m);
  --w.running;
  w.cv.notify_all();
}

// Tokenizes every file, on n_threads threads or (1) on this one, reporting progress from this
// thread only, so that the callback needs no locking.
void tokenize_all(Work& w, size_t n_threads, const std::function<void(uint64_t)>& report) {
  w.running = static_cast<int>(n_threads);
  if (n_threads == 1) {
    w.report_inline = report;
    return worker(w);
  }
  std::vector<std::thread> pool;
  for (size_t t = 0; t < n_threads; ++t) pool.emplace_back(worker, std::ref(w));
  std::unique_lock<std::mutex> lock(w.m);
  while (!w.cv.wait_for(lock, std::chrono::milliseconds(100), [&] { return w.running == 0; })) {
    lock.unlock();
    report(w.bytes_done);
    lock.lock();
  }
  lock.unlock();
  for (auto& t : pool) t.join();
}

// Writes one split: a single file (shard_tokens 0) or numbered shards of shard_tokens.
class SplitWriter {
 public:
  SplitWriter(std::string dir, std::string name, uint64_t shard_tokens, uint32_t vocab)
      : dir_(std::move(dir)), name_(std::move(name)), shard_tokens_(shard_tokens), vocab_(vocab) {}
  void append(std::span<const uint32_t> t) {
    while (!t.empty()) {
      if (!cur_) open_next();
      const size_t room = shard_tokens_ ? static_cast<size_t>(shard_tokens_ - cur_->count()) : t.size();
      const size_t n = std::min(room, t.size());
      cur_->append(t.first(n));
      t = t.subspan(n);
      if (shard_tokens_ && cur_->count() == shard_tokens_) close();
    }
  }
  // The file names written, in order.
  std::vector<std::string> finish() {
    if (cur_) close();
    return names_;
  }

 private:
  void open_next() {
    char num[32];
    std::snprintf(num, sizeof num, "_%06zu", names_.size());
    names_.push_back(shard_tokens_ ? name_ + num + ".bin" : name_ + ".bin");
    cur_ = std::make_unique<ShardWriter>(dir_ + "/" + names_.back(), vocab_);
  }
  void close() {
    cur_->finish();
    cur_.reset();
  }
  std::string dir_, name_;
  uint64_t shard_tokens_;
  uint32_t vocab_;
  std::unique_ptr<ShardWriter> cur_;
  std::vector<std::string> names_;
};

// Removes the temporary folder however prepare ends.
struct RemoveDir {
  std::string dir;
  ~RemoveDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

}  // namespace

CorpusFiles resolve_corpus(const std::string& corpus) {
  CorpusFiles c;
  const std::string path = corpus_text_path(corpus);
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    c.documents = true;
    fs::recursive_directory_iterator it(path, fs::directory_options::skip_permission_denied, ec), end;
    LOOM_USER_CHECK(!ec, path, ": cannot read corpus folder: ", ec.message());
    for (; it != end; it.increment(ec)) {
      LOOM_USER_CHECK(!ec, path, ": cannot read corpus folder: ", ec.message());
      const std::string name = it->path().filename().string();
      if (name.starts_with(".")) {  // hidden: editor and VCS files, and prepare's own temporaries
        if (it->is_directory(ec)) it.disable_recursion_pending();
        continue;
      }
      if (!it->is_regular_file(ec)) continue;
      c.files.push_back(it->path().string());
      LOOM_USER_CHECK(c.files.size() <= kMaxCorpusFiles, path, ": more than ", kMaxCorpusFiles, " files");
    }
    LOOM_USER_CHECK(!c.files.empty(), path, ": the corpus folder holds no files");
  } else if (!fs::exists(path, ec) && has_glob_chars(path)) {
    c.documents = true;
    glob_t g{};
    const int rc = ::glob(path.c_str(), GLOB_ERR, nullptr, &g);
    for (size_t i = 0; rc == 0 && i < g.gl_pathc; ++i)
      if (fs::is_regular_file(g.gl_pathv[i], ec) && c.files.size() < kMaxCorpusFiles + 1)
        c.files.emplace_back(g.gl_pathv[i]);
    ::globfree(&g);
    LOOM_USER_CHECK(rc == 0 || rc == GLOB_NOMATCH, path, ": cannot read the folders of the pattern");
    LOOM_USER_CHECK(!c.files.empty(), path, ": no file matches");
    LOOM_USER_CHECK(c.files.size() <= kMaxCorpusFiles, path, ": more than ", kMaxCorpusFiles, " files match");
  } else {
    LOOM_USER_CHECK(fs::exists(path, ec), path, ": cannot open corpus: no such file");
    c.documents = is_jsonl(path);
    c.files.push_back(path);
  }
  std::sort(c.files.begin(), c.files.end());
  return c;
}

std::string store_folder_tokenizer(const Tokenizer& tokenizer, const std::string& out_dir) {
  // A BPE vocabulary travels with its shards (tokenizer.json in the folder); meta.json names
  // it relative to the folder, so the folder can move.
  std::string spec = tokenizer.spec();
  const bool eot_prefix = spec.starts_with(kEotSpecPrefix);
  if (eot_prefix) spec = spec.substr(kEotSpecPrefix.size());
  if (spec.empty() || spec.front() != '{') return tokenizer.spec();
  AtomicFile f(out_dir + "/tokenizer.json");
  f.write(spec.data(), spec.size());
  f.commit();
  return std::string(eot_prefix ? kEotSpecPrefix : "") + "bpe:tokenizer.json";
}

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
  LOOM_USER_CHECK(o.shard_tokens == 0 || o.shard_tokens >= kMinSplitTokens, "shard_tokens ", o.shard_tokens,
                  " is too small (at least ", kMinSplitTokens, ", or 0 for one file per split)");
  // Checked before the output folder is made, so a typo leaves nothing behind.
  const CorpusFiles files = resolve_corpus(corpus);
  std::unique_ptr<Tokenizer> tokenizer = make_tokenizer(tokenizer_spec);
  // Documents need a separator; a vocabulary without one of its own gets it after its last id.
  if (files.documents) tokenizer = with_eot(std::move(tokenizer));

  std::error_code ec, ec_dir;
  fs::create_directories(out_dir, ec);
  LOOM_USER_CHECK(fs::is_directory(out_dir, ec_dir), out_dir, ": cannot create the data folder",
                  ec ? ": " + ec.message() : std::string(" (a file is in the way)"));
  const uint32_t vocab = static_cast<uint32_t>(tokenizer->vocab_size());

  const std::string tmp_dir = out_dir + "/.prepare-" + std::to_string(::getpid());
  RemoveDir remove_tmp{tmp_dir};
  fs::create_directories(tmp_dir, ec);
  LOOM_USER_CHECK(!ec, tmp_dir, ": cannot create a temporary folder: ", ec.message());

  uint64_t total_bytes = 0;
  for (const std::string& f : files.files) total_bytes += file_bytes(f);
  Work w(*tokenizer, files, o, tmp_dir, vocab);
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const size_t n_threads =
      std::min<size_t>(files.files.size(), o.threads > 0 ? static_cast<size_t>(o.threads) : cores);

  int next_pct = 25;
  auto report = [&](uint64_t done) {
    if (o.progress) return o.progress(done, total_bytes);
    // Plain lines at every quarter: prepare's default is to be readable in a log.
    const int pct =
        total_bytes ? static_cast<int>(100.0 * static_cast<double>(done) / static_cast<double>(total_bytes)) : 100;
    if (pct < next_pct) return;
    const bool mib = total_bytes >= (1u << 20);
    const double scale = mib ? 1.0 / (1024.0 * 1024.0) : 1.0 / 1024.0;
    std::fprintf(stderr, "loom prepare: tokenized %.1f / %.1f %s (%d%%)\n", done * scale, total_bytes * scale,
                 mib ? "MiB" : "KiB", pct);
    std::fflush(stderr);
    while (next_pct <= pct) next_pct += 25;
  };
  tokenize_all(w, n_threads, report);
  // The first failing file's error, whatever the thread count.
  for (const auto& e : w.errors)
    if (e) std::rethrow_exception(e);
  if (n_threads > 1) report(w.bytes_done);

  // The split is the one loom always had: the last val_fraction of the tokens (at least
  // kMinSplitTokens) is validation, so it is text the model never trained on, not interleaved.
  uint64_t n = 0, documents = 0;
  for (const Piece& p : w.pieces) {
    if (p.documents == 0) continue;
    n += p.tokens + (documents > 0 ? 1 : 0);  // an end-of-text id before every file but the first
    documents += p.documents;
  }
  uint64_t n_val = static_cast<uint64_t>(std::ceil(static_cast<double>(n) * val_fraction));
  n_val = std::max<uint64_t>(n_val, kMinSplitTokens);
  const std::string& name = files.files.size() == 1 ? files.files[0] : corpus;
  LOOM_USER_CHECK(n >= 2 * kMinSplitTokens && n - n_val >= kMinSplitTokens, name, ": too small: ", n,
                  " tokens, but train and val each need at least ", kMinSplitTokens, " (with val_fraction ",
                  val_fraction, ")");
  const uint64_t n_train = n - n_val;

  SplitWriter train(out_dir, "train", o.shard_tokens, vocab), val(out_dir, "val", o.shard_tokens, vocab);
  uint64_t at = 0;
  auto emit = [&](std::span<const uint32_t> t) {
    const size_t to_train = static_cast<size_t>(std::min<uint64_t>(t.size(), n_train > at ? n_train - at : 0));
    train.append(t.first(to_train));
    val.append(t.subspan(to_train));
    at += t.size();
  };
  std::vector<uint32_t> buf;
  bool first = true;
  for (size_t i = 0; i < w.pieces.size(); ++i) {
    if (w.pieces[i].documents == 0) continue;
    if (!first) {
      const uint32_t eot = *tokenizer->eot_id();
      emit({&eot, 1});
    }
    first = false;
    const Shard piece(w.piece_path(i));
    constexpr uint64_t kCopy = 1 << 20;
    for (uint64_t k = 0; k < piece.size(); k += kCopy) {
      buf.resize(static_cast<size_t>(std::min(kCopy, piece.size() - k)));
      piece.read(k, buf.size(), buf.data());
      emit(buf);
    }
    fs::remove(w.piece_path(i), ec);  // as soon as copied: the disk holds the corpus's tokens about once
  }
  LOOM_CHECK(at == n, "prepare: wrote ", at, " tokens, counted ", n);
  const std::vector<std::string> train_names = train.finish(), val_names = val.finish();

  const std::string meta_tokenizer = store_folder_tokenizer(*tokenizer, out_dir);
  // meta.json last: open_data_folder cross-checks it against the shards, so a crash before
  // this point is detected rather than trusted.
  const auto eot = tokenizer->eot_id();
  nlohmann::json meta = {{"tokenizer", meta_tokenizer},
                         {"vocab_size", vocab},
                         {"train_tokens", n_train},
                         {"val_tokens", n_val},
                         {"train_shards", train_names},
                         {"val_shards", val_names},
                         {"eot_id", eot ? nlohmann::json(*eot) : nlohmann::json(nullptr)},
                         {"documents", documents},
                         {"corpus", corpus}};
  const std::string meta_text = meta.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  AtomicFile f(out_dir + "/meta.json");
  f.write(meta_text.data(), meta_text.size());
  f.commit();

  std::printf("loom prepare: %s: %llu documents in %zu files, %llu train tokens (%zu shards), %llu val tokens "
              "(%zu), vocabulary %u (%s) -> %s\n",
              name.c_str(), static_cast<unsigned long long>(documents), files.files.size(),
              static_cast<unsigned long long>(n_train), train_names.size(), static_cast<unsigned long long>(n_val),
              val_names.size(), vocab, tokenizer->name().c_str(), out_dir.c_str());
  std::fflush(stdout);
}

}  // namespace loom
