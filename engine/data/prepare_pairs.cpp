// prepare_pairs.cpp: `loom prepare` for sequence pairs. Lines are read one at a time (any file
// size, bounded memory), tokenized and appended to a temporary split in the output folder;
// once the number of pairs is known, the temporary split is cut into train (the first pairs)
// and val (the last val_fraction), meta.json is written last, and the temporary files go.
#include "engine/data/prepare_pairs.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>

#include "core/check.h"
#include "core/rng.h"
#include "engine/data/corpus.h"
#include "engine/data/pair_loader.h"
#include "engine/data/prepare.h"
#include "engine/data/tokenizer.h"
#include "engine/io/atomic_file.h"

namespace loom {

namespace fs = std::filesystem;

namespace {

// The lines of a text file, one at a time, without their newline (nor a CR before it). A
// final newline does not start another line. Missing, unreadable, empty or non-UTF-8 file:
// UserError naming it (and the line).
class LineReader {
 public:
  LineReader(std::string path, const char* what) : path_(std::move(path)), what_(what) {
    f_ = std::fopen(path_.c_str(), "rbe");
    LOOM_USER_CHECK(f_, path_, ": cannot open ", what_, ": ", std::strerror(errno));
    struct stat st {};
    if (::fstat(::fileno(f_), &st) != 0 || !S_ISREG(st.st_mode)) {
      std::fclose(f_);
      user_error(path_, ": not a regular file (expected ", what_, ")");
    }
    if (st.st_size == 0) {
      std::fclose(f_);
      user_error(path_, ": ", what_, " is empty");
    }
  }
  ~LineReader() {
    std::free(buf_);
    std::fclose(f_);
  }
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  bool next(std::string_view& line) {
    errno = 0;
    const ssize_t n = ::getline(&buf_, &cap_, f_);
    if (n < 0) {
      LOOM_USER_CHECK(!std::ferror(f_), path_, ": cannot read ", what_, ": ", std::strerror(errno));
      return false;
    }
    ++line_no_;
    line = std::string_view(buf_, static_cast<size_t>(n));
    if (line.ends_with('\n')) line.remove_suffix(1);
    if (line.ends_with('\r')) line.remove_suffix(1);
    const size_t bad = first_invalid_utf8(line);
    if (bad != std::string_view::npos) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02X", static_cast<unsigned char>(line[bad]));
      user_error(where(), ": not UTF-8 text (invalid byte ", hex, " at column ", bad + 1, ")");
    }
    return true;
  }
  uint64_t line_no() const { return line_no_; }
  const std::string& path() const { return path_; }
  // "FILE:LINE" of the line last read, for messages.
  std::string where() const { return path_ + ":" + std::to_string(line_no_); }

 private:
  std::string path_;
  const char* what_;
  std::FILE* f_ = nullptr;
  char* buf_ = nullptr;
  size_t cap_ = 0;
  uint64_t line_no_ = 0;
};

// The val share of n items: the last ceil(n x fraction), at least 1 and at most n - 1.
uint64_t val_count(uint64_t n, double fraction) {
  return std::clamp<uint64_t>(static_cast<uint64_t>(std::ceil(static_cast<double>(n) * fraction)), 1, n - 1);
}

// Pairs as they come, into a temporary split of the output folder; finish() writes the folder.
class PairSink {
 public:
  PairSink(const std::string& tokenizer_spec, uint32_t sentinels, const std::string& out_dir,
           const PairPrepareOptions& o)
      : o_(o), out_dir_(out_dir), tmp_name_(".pairs-" + std::to_string(::getpid())) {
    LOOM_USER_CHECK(o.val_fraction > 0.0 && o.val_fraction < 1.0, "val_fraction ", o.val_fraction,
                    " must be in (0, 1)");
    tokenizer_ = make_tokenizer(tokenizer_spec);
    vocab_.base = static_cast<uint32_t>(tokenizer_->vocab_size());
    vocab_.sentinels = sentinels;
    std::error_code ec, ec_dir;
    fs::create_directories(out_dir, ec);
    LOOM_USER_CHECK(fs::is_directory(out_dir, ec_dir), out_dir, ": cannot create the data folder",
                    ec ? ": " + ec.message() : std::string(" (a file is in the way)"));
    all_ = std::make_unique<PairWriter>(out_dir_, tmp_name_, vocab_.size());
  }
  ~PairSink() {
    all_.reset();  // an unfinished writer removes its temporary files itself
    std::error_code ec;
    for (const char* ext : {".src.bin", ".tgt.bin", ".idx"}) fs::remove(out_dir_ + "/" + tmp_name_ + ext, ec);
  }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const PairVocab& vocab() const { return vocab_; }

  // `where_source` / `where_target`: FILE:LINE of each side, for messages.
  void add(const std::vector<uint32_t>& source, const std::vector<uint32_t>& target, const std::string& where_source,
           const std::string& where_target) {
    LOOM_USER_CHECK(!source.empty(), where_source, ": empty source");
    LOOM_USER_CHECK(!target.empty(), where_target, ": empty target");
    const uint64_t limit = o_.max_len ? o_.max_len : kMaxPairSideTokens - 2;
    for (auto [side, n, where] : {std::tuple{"source", source.size(), &where_source},
                                  std::tuple{"target", target.size(), &where_target}})
      LOOM_USER_CHECK(n <= limit, *where, ": ", side, " of ", n, " tokens is longer than ",
                      o_.max_len ? "--max-len " : "the limit ", limit);
    all_->append(source, target);
  }

  // The last `val_pairs` pairs added are val (0: the last val_fraction of them), the rest train.
  void finish(const std::string& corpus, const std::string& task, nlohmann::json extra, uint64_t val_pairs = 0) {
    const uint64_t n = all_->pairs();
    all_->finish();
    all_.reset();
    LOOM_USER_CHECK(n >= 2, corpus, ": ", n, n == 1 ? " pair" : " pairs",
                    ", but train and val need at least one each");
    const PairSplit all(out_dir_, tmp_name_);
    const uint64_t n_val = val_pairs ? val_pairs : val_count(n, o_.val_fraction);
    LOOM_CHECK(n_val >= 1 && n_val < n, "PairSink::finish: ", n_val, " val pairs of ", n);
    PairWriter train(out_dir_, "train", vocab_.size()), val(out_dir_, "val", vocab_.size());
    std::vector<uint32_t> s, t;
    for (uint64_t i = 0; i < n; ++i) {
      s.clear();
      t.clear();
      all.read_source(i, s);
      all.read_target(i, t);
      (i < n - n_val ? train : val).append(s, t);
    }
    train.finish();
    val.finish();

    nlohmann::json meta = {{"format", "pairs"},
                           {"task", task},
                           {"tokenizer", store_folder_tokenizer(*tokenizer_, out_dir_)},
                           {"vocab_size", vocab_.size()},
                           {"base_vocab", vocab_.base},
                           {"pad_id", vocab_.pad()},
                           {"bos_id", vocab_.bos()},
                           {"eos_id", vocab_.eos()},
                           {"sentinel_first", vocab_.sentinel(0)},
                           {"sentinels", vocab_.sentinels},
                           {"train_pairs", train.pairs()},
                           {"val_pairs", val.pairs()},
                           {"train_source_tokens", train.source_tokens()},
                           {"train_target_tokens", train.target_tokens()},
                           {"val_source_tokens", val.source_tokens()},
                           {"val_target_tokens", val.target_tokens()},
                           {"corpus", corpus}};
    meta.update(extra);
    const std::string text = meta.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    write_file_atomic(out_dir_ + "/meta.json", text);
    report(corpus, all);
  }

 private:
  // What was written, and the padding the default bucketing gives on the train split.
  void report(const std::string& corpus, const PairSplit& all) const {
    const PairSplit train(out_dir_, "train");
    PairLoaderOptions lo;
    lo.batch_size = static_cast<int>(std::min<uint64_t>(32, train.size()));
    const double bucketed = PairLoader(train, vocab_, lo).epoch_padding_fraction();
    lo.bucket_window = 1;
    const double unsorted = PairLoader(train, vocab_, lo).epoch_padding_fraction();
    uint32_t max_s = 0, max_t = 0;
    for (uint64_t i = 0; i < all.size(); ++i) {
      max_s = std::max(max_s, all.source_len(i));
      max_t = std::max(max_t, all.target_len(i));
    }
    const double n = static_cast<double>(all.size());
    std::printf("loom prepare: %s: %llu pairs (%llu train, %llu val), source %.1f tokens on average (at most %u), "
                "target %.1f (at most %u), vocabulary %u (%s + pad %u, bos %u, eos %u, %u sentinels) -> %s\n",
                corpus.c_str(), static_cast<unsigned long long>(all.size()),
                static_cast<unsigned long long>(train.size()), static_cast<unsigned long long>(all.size() - train.size()),
                static_cast<double>(all.source_tokens()) / n, max_s, static_cast<double>(all.target_tokens()) / n,
                max_t, vocab_.size(), tokenizer_->name().c_str(), vocab_.pad(), vocab_.bos(), vocab_.eos(),
                vocab_.sentinels, out_dir_.c_str());
    std::printf("loom prepare: padding of train batches of %d pairs: %.1f%% sorted by length in windows of %llu "
                "pairs, %.1f%% unsorted\n",
                lo.batch_size, 100.0 * bucketed, static_cast<unsigned long long>(PairLoaderOptions{}.bucket_window),
                100.0 * unsorted);
    std::fflush(stdout);
  }

  PairPrepareOptions o_;
  std::string out_dir_, tmp_name_;
  std::unique_ptr<Tokenizer> tokenizer_;
  PairVocab vocab_;
  std::unique_ptr<PairWriter> all_;
};

// Sizes of `parts` parts (each at least 1) summing to `total`, drawn uniformly.
std::vector<size_t> random_parts(size_t total, size_t parts, Rng& rng) {
  LOOM_CHECK(parts >= 1 && parts <= total, "random_parts: ", parts, " parts of ", total);
  // parts - 1 distinct cut points among the total - 1 gaps between units.
  std::vector<size_t> gaps(total - 1);
  for (size_t i = 0; i < gaps.size(); ++i) gaps[i] = i + 1;
  for (size_t i = 0; i + 1 < parts; ++i) std::swap(gaps[i], gaps[i + rng.below(gaps.size() - i)]);
  std::vector<size_t> cuts(gaps.begin(), gaps.begin() + static_cast<ptrdiff_t>(parts - 1));
  std::sort(cuts.begin(), cuts.end());
  std::vector<size_t> sizes;
  size_t prev = 0;
  for (size_t c : cuts) sizes.push_back(c - prev), prev = c;
  sizes.push_back(total - prev);
  return sizes;
}

}  // namespace

size_t span_corrupt(std::span<const uint32_t> tokens, const PairVocab& vocab, double density, double mean_span,
                    Rng& rng, std::vector<uint32_t>& source, std::vector<uint32_t>& target,
                    std::span<const uint32_t> unit_starts) {
  const bool units = !unit_starts.empty();
  const size_t n = units ? unit_starts.size() : tokens.size();
  LOOM_CHECK(n >= 2 && vocab.sentinels >= 1 && density > 0.0 && density < 1.0 && mean_span >= 1.0,
             "span_corrupt: ", n, " units, ", vocab.sentinels, " sentinels, density ", density, ", mean span ",
             mean_span);
  LOOM_CHECK(!units || (unit_starts.front() == 0 && unit_starts.back() < tokens.size() &&
                        std::is_sorted(unit_starts.begin(), unit_starts.end(), std::less_equal<uint32_t>())),
             "span_corrupt: unit starts are not increasing from 0 within ", tokens.size(), " tokens");
  // Where unit u begins in `tokens` (u = n: the end).
  const auto token = [&](size_t u) -> ptrdiff_t {
    return static_cast<ptrdiff_t>(!units ? u : u < n ? unit_starts[u] : tokens.size());
  };
  const size_t noise = std::clamp<size_t>(static_cast<size_t>(std::lround(static_cast<double>(n) * density)), 1, n - 1);
  // At most one span a masked token, one a sentinel, and one more than the kept tokens (two
  // spans are kept apart by at least one kept token).
  const size_t spans = std::clamp<size_t>(static_cast<size_t>(std::lround(static_cast<double>(noise) / mean_span)), 1,
                                          std::min<size_t>({noise, vocab.sentinels, n - noise + 1}));
  const std::vector<size_t> span_len = random_parts(noise, spans, rng);
  // spans + 1 gaps, the inner ones at least 1 token (two spans never touch), the outer ones
  // possibly empty: drawn as positive parts of (kept + 2), then one taken off each end.
  std::vector<size_t> gap = random_parts(n - noise + 2, spans + 1, rng);
  --gap.front();
  --gap.back();
  source.clear();
  target.clear();
  size_t at = 0, masked = 0;
  for (size_t k = 0; k <= spans; ++k) {
    source.insert(source.end(), tokens.begin() + token(at), tokens.begin() + token(at + gap[k]));
    at += gap[k];
    if (k == spans) break;
    const uint32_t sentinel = vocab.sentinel(static_cast<uint32_t>(k));
    source.push_back(sentinel);
    target.push_back(sentinel);
    target.insert(target.end(), tokens.begin() + token(at), tokens.begin() + token(at + span_len[k]));
    masked += static_cast<size_t>(token(at + span_len[k]) - token(at));
    at += span_len[k];
  }
  LOOM_CHECK(at == n, "span_corrupt: covered ", at, " of ", n, " units");
  return masked;
}

namespace {

bool word_byte(unsigned char c) { return std::isalnum(c) || c >= 0x80 || c == '\''; }

}  // namespace

WordStarts::WordStarts(const Tokenizer& tokenizer) : kind_(static_cast<size_t>(tokenizer.vocab_size())) {
  for (size_t id = 0; id < kind_.size(); ++id) {
    const uint32_t one = static_cast<uint32_t>(id);
    const std::string text = tokenizer.decode(std::span<const uint32_t>(&one, 1));
    const bool spaces = std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isspace(c); });
    kind_[id] = static_cast<uint8_t>((!text.empty() && word_byte(static_cast<unsigned char>(text.front())) ? 1 : 0) |
                                     (!text.empty() && word_byte(static_cast<unsigned char>(text.back())) ? 2 : 0) |
                                     (spaces ? 4 : 0));
  }
}

void WordStarts::operator()(std::span<const uint32_t> tokens, std::vector<uint32_t>& starts) const {
  starts.clear();
  bool ends_in_word = false, only_spaces = false;  // the word so far
  for (size_t i = 0; i < tokens.size(); ++i) {
    const uint8_t k = tokens[i] < kind_.size() ? kind_[tokens[i]] : 0;
    // Anything continues a word that is spaces so far; a letter continues one that ends in one.
    const bool continues = i > 0 && (only_spaces || ((k & 1) && ends_in_word));
    if (!continues) {
      starts.push_back(static_cast<uint32_t>(i));
      only_spaces = true;
    }
    only_spaces = only_spaces && (k & 4);
    ends_in_word = (k & 2) != 0;
  }
}

void prepare_pairs_tsv(const std::string& tsv, const std::string& tokenizer, const std::string& out_dir,
                       const PairPrepareOptions& o) {
  LineReader in(tsv, "pair file");
  PairSink sink(tokenizer, 0, out_dir, o);
  std::string_view line;
  while (in.next(line)) {
    const size_t tab = line.find('\t');
    LOOM_USER_CHECK(tab != std::string_view::npos, in.where(), ": no TAB (a line is source TAB target)");
    const size_t tabs = static_cast<size_t>(std::count(line.begin(), line.end(), '\t'));
    LOOM_USER_CHECK(tabs == 1, in.where(), ": ", tabs, " TABs (a line is source TAB target, with one TAB)");
    const std::string where = in.where();
    sink.add(sink.tokenizer().encode(line.substr(0, tab)), sink.tokenizer().encode(line.substr(tab + 1)), where,
             where);
  }
  sink.finish(tsv, "pairs", nlohmann::json::object());
}

void prepare_pairs_aligned(const std::string& source, const std::string& target, const std::string& tokenizer,
                           const std::string& out_dir, const PairPrepareOptions& o) {
  LineReader src(source, "source file"), tgt(target, "target file");
  PairSink sink(tokenizer, 0, out_dir, o);
  std::string_view s, t;
  std::vector<uint32_t> s_ids;
  while (true) {
    const bool has_s = src.next(s);
    if (has_s) s_ids = sink.tokenizer().encode(s);  // before the target's line replaces the buffer
    const bool has_t = tgt.next(t);
    if (!has_s && !has_t) break;
    LOOM_USER_CHECK(has_s, tgt.where(), ": no line ", tgt.line_no(), " in ", source, " (it has ", src.line_no(),
                    " lines; source and target lines must pair up one to one)");
    LOOM_USER_CHECK(has_t, src.where(), ": no line ", src.line_no(), " in ", target, " (it has ", tgt.line_no(),
                    " lines; source and target lines must pair up one to one)");
    sink.add(s_ids, sink.tokenizer().encode(t), src.where(), tgt.where());
  }
  sink.finish(source + " + " + target, "pairs", nlohmann::json::object());
}

void prepare_span_corruption(const std::string& corpus, const std::string& tokenizer, const std::string& out_dir,
                             const PairPrepareOptions& o) {
  LOOM_USER_CHECK(o.noise_density > 0.0 && o.noise_density < 1.0, "--noise-density: ", o.noise_density,
                  " must be in (0, 1)");
  LOOM_USER_CHECK(o.mean_span >= 1.0 && o.mean_span <= kMaxPairSideTokens, "--mean-span: ", o.mean_span,
                  " must be from 1 to ", kMaxPairSideTokens, o.whole_words ? " words" : " tokens");
  LOOM_USER_CHECK(o.sentinels >= 1, "span corruption needs at least one sentinel id");
  LOOM_USER_CHECK(o.masks >= 1 && o.masks <= kMaxMasksPerLine, "--masks: ", o.masks, " must be in [1, ",
                  kMaxMasksPerLine, "]");
  const std::string path = corpus_text_path(corpus);
  LineReader in(path, "corpus (span corruption reads a text file, one example a line)");
  PairSink sink(tokenizer, o.sentinels, out_dir, o);
  // The lines first, so that the split is by line (every mask of a val line in val, none of it
  // in train): their tokens are held in memory, 4 bytes a token (the KJV's verses: about 4 MB),
  // and with --whole-words where their words begin (4 bytes a word), found once for all masks.
  struct Line {
    std::vector<uint32_t> ids;
    uint64_t no;
    std::vector<uint32_t> starts;  // --whole-words: WordStarts of ids; else empty (units are tokens)
  };
  std::vector<Line> lines;
  std::string_view text;
  uint64_t skipped = 0, too_long = 0;
  const char* unit = o.whole_words ? "words" : "tokens";
  std::optional<WordStarts> word_starts;
  if (o.whole_words) word_starts.emplace(sink.tokenizer());
  while (in.next(text)) {
    std::vector<uint32_t> ids = sink.tokenizer().encode(text);
    std::vector<uint32_t> starts;
    if (word_starts) (*word_starts)(ids, starts);
    if ((word_starts ? starts.size() : ids.size()) < 2) {  // nothing to mask that leaves anything to read
      ++skipped;
      continue;
    }
    // --max-len selects the lines (a source or target is never longer than its line), where for
    // pair files it is a limit the pairs must keep.
    if (o.max_len && ids.size() > o.max_len) {
      ++too_long;
      continue;
    }
    lines.push_back({std::move(ids), in.line_no(), std::move(starts)});
  }
  if (skipped)
    std::printf("loom prepare: %s: %llu lines of fewer than 2 %s skipped\n", path.c_str(),
                static_cast<unsigned long long>(skipped), unit);
  if (too_long)
    std::printf("loom prepare: %s: %llu lines of more than --max-len %llu tokens skipped\n", path.c_str(),
                static_cast<unsigned long long>(too_long), static_cast<unsigned long long>(o.max_len));
  const uint64_t n = lines.size();
  LOOM_USER_CHECK(n >= 2, path, ": ", n, n == 1 ? " line" : " lines", " of at least 2 ", unit,
                  ", but train and val need at least one each");
  const uint64_t n_val = val_count(n, o.val_fraction);
  const std::string file = path + ":";
  std::vector<uint32_t> source, target;
  // Train: mask m of every train line, for m = 0 .. masks - 1 (the loader shuffles them); val:
  // mask 0 of every val line. Mask m of a line is drawn from its own stream, a function of the
  // seed, the line's number and m alone, and mask 0 is the one a single-mask run writes.
  const auto corrupt = [&](const Line& line, uint64_t m) {
    Rng rng(o.seed ^ (line.no * 0x9E3779B97F4A7C15ULL) ^ (m * 0xD1B54A32D192ED03ULL));
    span_corrupt(line.ids, sink.vocab(), o.noise_density, o.mean_span, rng, source, target, line.starts);
    const std::string where = file + std::to_string(line.no);
    sink.add(source, target, where, where);
  };
  for (uint64_t m = 0; m < o.masks; ++m)
    for (uint64_t i = 0; i < n - n_val; ++i) corrupt(lines[i], m);
  for (uint64_t i = n - n_val; i < n; ++i) corrupt(lines[i], 0);
  sink.finish(corpus, "span-corruption",
              {{"seed", o.seed}, {"noise_density", o.noise_density}, {"mean_span", o.mean_span},
               {"masks", o.masks}, {"span_unit", o.whole_words ? "word" : "token"},
               {"train_lines", n - n_val}, {"val_lines", n_val}},
              n_val);
}

}  // namespace loom
