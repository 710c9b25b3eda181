// bpe.cpp: the GPT-2 pre-tokenizer on PCRE2, ranked merges (encode/decode), loom's BPE file
// format and the incremental BPE trainer.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "engine/data/bpe.h"

#include <pcre2.h>

#include <algorithm>
#include <chrono>
#include <queue>
#include <nlohmann/json.hpp>

#include "core/check.h"
#include "engine/data/corpus.h"
#include "engine/io/json_guard.h"

namespace loom {

namespace {

// JavaScript's \s (ECMA-262 WhiteSpace + LineTerminator), the reference encoder's.
#define LOOM_WS "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}\\x{FEFF}"
constexpr const char* kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" LOOM_WS "\\p{L}\\p{N}]+|[" LOOM_WS "]+(?![^" LOOM_WS
    "])|[" LOOM_WS "]+";
#undef LOOM_WS

// A piece that ends this close to the end of a chunk may still change when more text follows
// (see Pretokenizer::split).
constexpr size_t kUnsettledBytes = 4;

}  // namespace

// ---------------------------------------------------------------------------------------
// Pre-tokenizer

Pretokenizer::Pretokenizer(const std::string& name, const std::string& source) : name_(name) {
  LOOM_USER_CHECK(name == "gpt2", source, ": unknown pre-tokenizer '", name, "' (known: gpt2)");
  int err = 0;
  PCRE2_SIZE off = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kGpt2Pattern), PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &off, nullptr);
  if (!code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    LOOM_CHECK(false, "the GPT-2 pattern does not compile at ", off, ": ", reinterpret_cast<const char*>(msg));
  }
  // JIT when the library has it (Debian's does); pcre2_match falls back to the interpreter
  // otherwise, with the same results.
  (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  code_ = code;
}

Pretokenizer::~Pretokenizer() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

size_t Pretokenizer::split(std::string_view text, bool at_end,
                           const std::function<void(std::string_view)>& on_piece) const {
  auto* code = static_cast<pcre2_code*>(code_);
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code, nullptr);
  LOOM_CHECK(md, "pcre2_match_data_create_from_pattern: out of memory");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  const size_t n = text.size();
  // Pieces before `limit` are final; without at_end a piece ending later waits for more text.
  const size_t limit = at_end ? n : (n > kUnsettledBytes ? n - kUnsettledBytes : 0);
  size_t pos = 0;  // everything before pos has been handed out
  while (pos < n) {
    const int rc = pcre2_match(code, subject, n, pos, 0, md, nullptr);
    size_t ms = n, me = n;
    if (rc >= 0) {
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      ms = ov[0];
      me = ov[1];
    } else {
      LOOM_CHECK(rc == PCRE2_ERROR_NOMATCH, "pcre2_match failed with code ", rc);
    }
    // Bytes the regex skipped: invalid UTF-8 (every valid character matches some branch).
    if (ms > pos) {
      if (ms > limit) break;
      on_piece(text.substr(pos, ms - pos));
      pos = ms;
    }
    if (rc < 0) break;
    LOOM_CHECK(me > ms, "the pre-tokenizer matched an empty piece at ", ms);
    if (me > limit) break;
    on_piece(text.substr(ms, me - ms));
    pos = me;
  }
  pcre2_match_data_free(md);
  LOOM_CHECK(!at_end || pos == n, "pre-tokenizer left ", n - pos, " bytes at the end");
  return pos;
}

// ---------------------------------------------------------------------------------------
// Merges

BpeModel::BpeModel(std::vector<std::string> vocab, std::vector<uint32_t> byte_ids)
    : vocab_(std::move(vocab)), byte_ids_(std::move(byte_ids)) {
  LOOM_CHECK(byte_ids_.size() == 256, "BpeModel: need 256 byte ids");
  merges_.reserve(vocab_.size());
}

void BpeModel::add_merge(uint32_t a, uint32_t b, uint32_t result) {
  const uint64_t rank = merges_.size();
  merges_.emplace((uint64_t{a} << 32) | b, (rank << 32) | result);
}

void BpeModel::encode_piece(std::string_view piece, std::vector<uint32_t>& out) const {
  const size_t n = piece.size();
  if (n == 0) return;
  if (n == 1) {
    out.push_back(byte_ids_[static_cast<unsigned char>(piece[0])]);
    return;
  }
  // Symbols in a linked list; candidate merges in a min-heap ordered by (rank, position), so
  // the lowest rank goes first and its occurrences left to right, as in GPT-2's loop. Entries
  // made stale by a neighbouring merge are recognised on pop and skipped.
  std::vector<uint32_t> id(n);
  std::vector<int32_t> next(n), prev(n);
  for (size_t i = 0; i < n; ++i) {
    id[i] = byte_ids_[static_cast<unsigned char>(piece[i])];
    next[i] = static_cast<int32_t>(i) + 1;
    prev[i] = static_cast<int32_t>(i) - 1;
  }
  next[n - 1] = -1;
  struct Cand {
    uint32_t rank, pos, right, left_id, right_id, result;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto consider = [&](int32_t l) {
    if (l < 0 || next[l] < 0) return;
    const int32_t r = next[l];
    auto it = merges_.find((uint64_t{id[l]} << 32) | id[r]);
    if (it == merges_.end()) return;
    heap.push({static_cast<uint32_t>(it->second >> 32), static_cast<uint32_t>(l), static_cast<uint32_t>(r), id[l], id[r],
               static_cast<uint32_t>(it->second)});
  };
  for (size_t i = 0; i + 1 < n; ++i) consider(static_cast<int32_t>(i));
  std::vector<char> alive(n, 1);
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    // Still the same two adjacent symbols?
    if (!alive[c.pos] || !alive[c.right] || next[c.pos] != static_cast<int32_t>(c.right) || id[c.pos] != c.left_id ||
        id[c.right] != c.right_id)
      continue;
    id[c.pos] = c.result;
    alive[c.right] = 0;
    next[c.pos] = next[c.right];
    if (next[c.pos] >= 0) prev[next[c.pos]] = static_cast<int32_t>(c.pos);
    consider(prev[c.pos]);
    consider(static_cast<int32_t>(c.pos));
  }
  for (int32_t i = 0; i >= 0; i = next[i]) out.push_back(id[i]);
}

std::string BpeModel::decode(std::span<const uint32_t> ids, const std::string& who) const {
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) {
    // Ids reach decode from models and user prompts, so a bad one is bad input, not a bug.
    LOOM_USER_CHECK(ids[i] < vocab_.size(), who, " tokenizer: id ", ids[i], " at position ", i,
                    " is outside the vocabulary (size ", vocab_.size(), ")");
    text += vocab_[ids[i]];
  }
  return text;
}

// ---------------------------------------------------------------------------------------
// Tokenizer

BpeTokenizer::BpeTokenizer(std::string name, std::string spec, std::unique_ptr<Pretokenizer> pre, BpeModel model,
                           std::optional<uint32_t> eot)
    : name_(std::move(name)), spec_(std::move(spec)), pre_(std::move(pre)), model_(std::move(model)), eot_(eot) {}

size_t BpeTokenizer::encode_stream(std::string_view text, bool at_end, std::vector<uint32_t>& out) const {
  // Pieces repeat (words), so remember each distinct piece's ids for this call. The keys view
  // `text`, which outlives the call's map.
  std::unordered_map<std::string_view, std::pair<uint32_t, uint32_t>> cache;  // piece -> (offset, count) in memo
  std::vector<uint32_t> memo;
  return pre_->split(text, at_end, [&](std::string_view piece) {
    if (piece.size() == 1) {
      model_.encode_piece(piece, out);
      return;
    }
    auto [it, fresh] = cache.try_emplace(piece);
    if (fresh) {
      const size_t start = memo.size();
      model_.encode_piece(piece, memo);
      it->second = {static_cast<uint32_t>(start), static_cast<uint32_t>(memo.size() - start)};
      if (memo.size() > (size_t{1} << 26)) {  // a huge text of unique pieces: bound the memo
        out.insert(out.end(), memo.begin() + start, memo.end());
        cache.clear();
        memo.clear();
        return;
      }
    }
    out.insert(out.end(), memo.begin() + it->second.first, memo.begin() + it->second.first + it->second.second);
  });
}

std::vector<uint32_t> BpeTokenizer::encode(std::string_view text) const {
  std::vector<uint32_t> out;
  encode_stream(text, true, out);
  return out;
}

std::string BpeTokenizer::decode(std::span<const uint32_t> ids) const { return model_.decode(ids, name_); }

// ---------------------------------------------------------------------------------------
// loom's BPE files

std::string serialize_bpe(const BpeMerges& m) {
  // One merge per line: still JSON, but diffable and readable.
  std::string s = "{\"format\": \"loom-bpe\", \"version\": 1, \"pretokenizer\": " + nlohmann::json(m.pretokenizer).dump() +
                  ", \"vocab_size\": " + std::to_string(256 + m.merges.size()) + ",\n\"merges\": [";
  for (size_t i = 0; i < m.merges.size(); ++i) {
    s += i ? ",\n[" : "\n[";
    s += std::to_string(m.merges[i].first) + "," + std::to_string(m.merges[i].second) + "]";
  }
  s += "\n]}\n";
  return s;
}

BpeMerges parse_bpe(const std::string& text, const std::string& source) {
  check_json_depth(text, source, "not a loom BPE tokenizer file");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    user_error(source, ": not a loom BPE tokenizer file (invalid JSON: ", json_error_text(e), ")");
  }
  LOOM_USER_CHECK(j.is_object() && j.value("format", nlohmann::json()).is_string() && j["format"] == "loom-bpe", source,
                  ": not a loom BPE tokenizer file (expected \"format\": \"loom-bpe\"; write one with `loom tokenizer "
                  "train`)");
  LOOM_USER_CHECK(j.contains("version") && j["version"].is_number_unsigned(), source,
                  ": \"version\" must be a positive integer");
  LOOM_USER_CHECK(j["version"].get<uint64_t>() == 1, source, ": unsupported loom-bpe version ", json_brief(j["version"]),
                  " (this loom reads version 1)");
  BpeMerges m;
  LOOM_USER_CHECK(j.contains("pretokenizer") && j["pretokenizer"].is_string(), source,
                  ": \"pretokenizer\" must be a string");
  m.pretokenizer = j["pretokenizer"].get<std::string>();
  LOOM_USER_CHECK(m.pretokenizer == "gpt2", source, ": unknown pre-tokenizer '", brief(m.pretokenizer), "' (known: gpt2)");
  LOOM_USER_CHECK(j.contains("merges") && j["merges"].is_array(), source, ": \"merges\" must be an array");
  const auto& arr = j["merges"];
  LOOM_USER_CHECK(arr.size() <= kMaxBpeMerges, source, ": ", arr.size(), " merges, more than the ", kMaxBpeMerges,
                  " a loom vocabulary may hold");
  m.merges.reserve(arr.size());
  // Token lengths follow the merges (a merge's token is its two parts side by side): bounded
  // here, before make_bpe_tokenizer spells a single token out.
  std::vector<uint32_t> len(256 + arr.size(), 1);
  uint64_t total = 256;
  for (size_t i = 0; i < arr.size(); ++i) {
    const auto& p = arr[i];
    const uint64_t limit = 256 + i;  // merge i may use bytes and the results of merges before it
    LOOM_USER_CHECK(p.is_array() && p.size() == 2 && p[0].is_number_unsigned() && p[1].is_number_unsigned() &&
                        p[0].get<uint64_t>() < limit && p[1].get<uint64_t>() < limit,
                    source, ": merge ", i, " must be a pair of token ids below ", limit, ", got ", json_brief(p));
    const uint32_t a = p[0].get<uint32_t>(), b = p[1].get<uint32_t>();
    len[limit] = len[a] + len[b];
    LOOM_USER_CHECK(len[limit] <= kMaxBpeTokenBytes, source, ": merge ", i, " [", a, ",", b, "] makes a token of ",
                    len[limit], " bytes, longer than the ", kMaxBpeTokenBytes, " a loom vocabulary allows");
    total += len[limit];
    LOOM_USER_CHECK(total <= kMaxBpeVocabBytes, source, ": the tokens up to merge ", i, " hold ", total,
                    " bytes, more than the ", kMaxBpeVocabBytes, " a loom vocabulary allows");
    m.merges.emplace_back(a, b);
  }
  LOOM_USER_CHECK(j.contains("vocab_size") && j["vocab_size"].is_number_unsigned() &&
                      j["vocab_size"].get<uint64_t>() == 256 + m.merges.size(),
                  source, ": \"vocab_size\" must be 256 + the number of merges (", 256 + m.merges.size(), ")");
  return m;
}

std::unique_ptr<Tokenizer> make_bpe_tokenizer(const BpeMerges& m) {
  std::vector<std::string> vocab(256 + m.merges.size());
  std::vector<uint32_t> byte_ids(256);
  for (uint32_t b = 0; b < 256; ++b) {
    vocab[b] = std::string(1, static_cast<char>(b));
    byte_ids[b] = b;
  }
  for (size_t i = 0; i < m.merges.size(); ++i) vocab[256 + i] = vocab[m.merges[i].first] + vocab[m.merges[i].second];
  BpeModel model(std::move(vocab), std::move(byte_ids));
  for (size_t i = 0; i < m.merges.size(); ++i)
    model.add_merge(m.merges[i].first, m.merges[i].second, static_cast<uint32_t>(256 + i));
  return std::make_unique<BpeTokenizer>("bpe", serialize_bpe(m), std::make_unique<Pretokenizer>(m.pretokenizer, "bpe"),
                                        std::move(model));
}

// ---------------------------------------------------------------------------------------
// Training

BpeMerges train_bpe_counts(const std::unordered_map<std::string, uint64_t>& counts, uint32_t vocab_size) {
  LOOM_CHECK(vocab_size >= 256, "train_bpe: vocabulary ", vocab_size, " < 256");
  // Words: the distinct pre-tokens as symbol sequences, each with its count. Sorted so the
  // result never depends on hash-map order.
  struct Word {
    std::vector<uint32_t> sym;
    uint64_t count;
  };
  std::vector<Word> words;
  words.reserve(counts.size());
  {
    std::vector<const std::pair<const std::string, uint64_t>*> sorted;
    sorted.reserve(counts.size());
    for (const auto& kv : counts) sorted.push_back(&kv);
    std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->first < b->first; });
    for (auto* kv : sorted) {
      if (kv->first.size() < 2) continue;  // nothing to merge in one byte
      Word w{{}, kv->second};
      for (unsigned char c : kv->first) w.sym.push_back(c);
      words.push_back(std::move(w));
    }
  }
  auto key = [](uint32_t a, uint32_t b) { return (uint64_t{a} << 32) | b; };
  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::vector<uint32_t>> where;  // pair -> words that had it (may be stale)
  for (uint32_t w = 0; w < words.size(); ++w) {
    const auto& s = words[w].sym;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      const uint64_t k = key(s[i], s[i + 1]);
      pair_count[k] += static_cast<int64_t>(words[w].count);
      auto& v = where[k];
      if (v.empty() || v.back() != w) v.push_back(w);
    }
  }
  // Max-heap of (count, pair); ties go to the smaller pair so training is deterministic. An
  // entry whose count no longer matches pair_count is stale and is re-queued or dropped.
  struct Entry {
    int64_t count;
    uint64_t pair;
    bool operator<(const Entry& o) const { return count != o.count ? count < o.count : pair > o.pair; }
  };
  std::priority_queue<Entry> heap;
  for (const auto& [k, c] : pair_count) heap.push({c, k});

  BpeMerges out;
  const size_t want = std::min<size_t>(vocab_size - 256, kMaxBpeMerges);
  // Token lengths, so that no merge makes a vocabulary parse_bpe would refuse.
  std::vector<uint32_t> len(256, 1);
  uint64_t total = 256;
  std::vector<uint32_t> stamp(words.size(), UINT32_MAX);  // last merge that visited a word
  std::vector<uint32_t> sym;
  while (out.merges.size() < want && !heap.empty()) {
    const Entry top = heap.top();
    heap.pop();
    auto pc = pair_count.find(top.pair);
    if (pc == pair_count.end() || pc->second <= 0) continue;
    if (pc->second != top.count) {
      heap.push({pc->second, top.pair});
      continue;
    }
    const uint32_t a = static_cast<uint32_t>(top.pair >> 32), b = static_cast<uint32_t>(top.pair);
    // Too long a token: pass the pair over (its stale heap entries are skipped the same way).
    if (len[a] + len[b] > kMaxBpeTokenBytes) continue;
    if (total + len[a] + len[b] > kMaxBpeVocabBytes) break;
    const uint32_t merge_index = static_cast<uint32_t>(out.merges.size());
    const uint32_t new_id = 256 + merge_index;
    out.merges.emplace_back(a, b);
    len.push_back(len[a] + len[b]);
    total += len.back();
    std::vector<uint32_t> affected = std::move(where[top.pair]);
    where.erase(top.pair);
    pair_count.erase(pc);
    // New pairs (they all contain new_id) are queued once each after the pass.
    std::vector<uint64_t> touched;
    for (uint32_t w : affected) {
      if (stamp[w] == merge_index) continue;
      stamp[w] = merge_index;
      Word& word = words[w];
      auto& s = word.sym;
      bool has = false;
      for (size_t i = 0; i + 1 < s.size() && !has; ++i) has = s[i] == a && s[i + 1] == b;
      if (!has) continue;  // stale: an earlier merge took the pair away
      const int64_t c = static_cast<int64_t>(word.count);
      // Take the word's pairs out, merge, put them back: words are short, and only words
      // holding the pair come here.
      for (size_t i = 0; i + 1 < s.size(); ++i) {
        const uint64_t k = key(s[i], s[i + 1]);
        if (k == top.pair) continue;
        pair_count[k] -= c;
      }
      sym.clear();
      for (size_t i = 0; i < s.size();) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
          sym.push_back(new_id);
          i += 2;
        } else {
          sym.push_back(s[i++]);
        }
      }
      s.swap(sym);
      for (size_t i = 0; i + 1 < s.size(); ++i) {
        const uint64_t k = key(s[i], s[i + 1]);
        pair_count[k] += c;
        if (s[i] == new_id || s[i + 1] == new_id) {
          auto& v = where[k];
          if (v.empty() || v.back() != w) v.push_back(w);
          touched.push_back(k);
        }
      }
    }
    std::sort(touched.begin(), touched.end());
    touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
    for (uint64_t k : touched) heap.push({pair_count[k], k});
  }
  return out;
}

BpeMerges train_bpe(const std::string& corpus_path, uint32_t vocab_size, BpeTrainStats* stats,
                    const std::function<void(uint64_t, uint64_t)>& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  Pretokenizer pre("gpt2", corpus_path);
  std::unordered_map<std::string, uint64_t> counts;
  std::unordered_map<std::string_view, uint64_t> chunk_counts;
  uint64_t pieces = 0;
  const uint64_t bytes = stream_file(
      corpus_path, "corpus", size_t{8} << 20,
      [&](std::string_view text, bool at_end) {
        // Count per chunk against views, then fold into the owning table: one string copy per
        // distinct piece per chunk rather than per occurrence.
        chunk_counts.clear();
        const size_t used = pre.split(text, at_end, [&](std::string_view p) { ++chunk_counts[p]; });
        for (const auto& [p, c] : chunk_counts) {
          counts[std::string(p)] += c;
          pieces += c;
        }
        return used;
      },
      progress);
  BpeMerges m = train_bpe_counts(counts, vocab_size);
  if (stats) {
    stats->bytes = bytes;
    stats->pieces = pieces;
    stats->distinct_pieces = counts.size();
    stats->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  return m;
}

}  // namespace loom
