// pair_decode.cpp: see pair_decode.h.
#include "launch/run/pair_decode.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/check.h"
#include "launch/run/bleu_chrf.h"

namespace loom {

PairVocab pair_vocab_of(const ModelConfig& model, const Tokenizer& tok) {
  PairVocab v;
  v.base = static_cast<uint32_t>(tok.vocab_size());
  LOOM_USER_CHECK(static_cast<int64_t>(model.vocab) >= int64_t{v.base} + 3, "checkpoint: vocabulary ", model.vocab,
                  " has no room for the pair ids after the tokenizer's ", v.base,
                  " (PAD, BOS, EOS): not a checkpoint of pairs");
  v.sentinels = static_cast<uint32_t>(model.vocab) - v.base - 3;
  return v;
}

namespace {

// The sentinel number of a marker "<sK>" at the start of `s` and the marker's length; {-1, 0}
// when `s` does not start with one.
std::pair<int64_t, size_t> sentinel_marker(std::string_view s) {
  if (s.size() < 4 || s[0] != '<' || s[1] != 's') return {-1, 0};
  int64_t k = 0;
  size_t i = 2;
  for (; i < s.size() && s[i] >= '0' && s[i] <= '9' && i < 12; ++i) k = k * 10 + (s[i] - '0');
  if (i == 2 || i >= s.size() || s[i] != '>') return {-1, 0};
  return {k, i + 1};
}

}  // namespace

PairVocab folder_vocab_of(const PairFolder& folder, const ModelConfig& model, const Tokenizer& tok,
                          const std::string& data_dir) {
  const PairVocab vocab = pair_vocab_of(model, tok);
  LOOM_USER_CHECK(folder.vocab.size() == static_cast<uint32_t>(model.vocab) && folder.vocab.base == vocab.base,
                  data_dir, ": vocabulary ", folder.vocab.size(), " (tokenizer ", folder.vocab.base,
                  ") does not match the checkpoint's ", model.vocab, " (tokenizer ", vocab.base, ")");
  return vocab;
}

std::vector<int32_t> encode_source(std::string_view text, const Tokenizer& tok, const PairVocab& v, int src_len,
                                   const std::string& where) {
  std::vector<int32_t> ids;
  auto add_text = [&](std::string_view piece) {
    for (uint32_t t : tok.encode(piece)) ids.push_back(static_cast<int32_t>(t));
  };
  size_t from = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const auto [k, len] = sentinel_marker(text.substr(i));
    if (len == 0 || k >= static_cast<int64_t>(v.sentinels)) continue;
    add_text(text.substr(from, i - from));
    ids.push_back(static_cast<int32_t>(v.sentinel(static_cast<uint32_t>(k))));
    from = i + len;
    i = from - 1;
  }
  add_text(text.substr(from));
  LOOM_USER_CHECK(!ids.empty(), where, ": encodes to no tokens");
  ids.push_back(static_cast<int32_t>(v.eos()));
  LOOM_USER_CHECK(static_cast<int64_t>(ids.size()) <= src_len, where, ": ", ids.size(),
                  " tokens with EOS, longer than the model reads (model.src_len = ", src_len, ")");
  return ids;
}

std::string pair_text(std::span<const int32_t> ids, const Tokenizer& tok, const PairVocab& v) {
  std::string out;
  std::vector<uint32_t> run;
  auto flush = [&] {
    if (!run.empty()) out += tok.decode(run);
    run.clear();
  };
  for (int32_t id : ids) {
    const auto u = static_cast<uint32_t>(id);
    if (u < v.base) {
      run.push_back(u);
      continue;
    }
    flush();
    if (v.is_sentinel(u)) out += "<s" + std::to_string(u - v.sentinel(0)) + ">";
    else out += u == v.pad() ? "<pad>" : u == v.bos() ? "<bos>" : u == v.eos() ? "<eos>" : "<?>";
  }
  flush();
  return out;
}

std::string filled_text(std::span<const int32_t> source, std::span<const int32_t> target, const Tokenizer& tok,
                        const PairVocab& v) {
  // Span K of the target: the ids after sentinel K up to the next sentinel or the end.
  std::vector<std::span<const int32_t>> spans(v.sentinels);
  std::vector<bool> has(v.sentinels, false);
  for (size_t i = 0; i < target.size(); ++i) {
    const auto u = static_cast<uint32_t>(target[i]);
    if (!v.is_sentinel(u)) continue;
    size_t end = i + 1;
    while (end < target.size() && !v.is_sentinel(static_cast<uint32_t>(target[end]))) ++end;
    const uint32_t k = u - v.sentinel(0);
    if (!has[k]) spans[k] = target.subspan(i + 1, end - i - 1), has[k] = true;
  }
  std::string out;
  size_t from = 0;
  for (size_t i = 0; i <= source.size(); ++i) {
    if (i < source.size() && !v.is_sentinel(static_cast<uint32_t>(source[i]))) continue;
    out += pair_text(source.subspan(from, i - from), tok, v);
    from = i + 1;
    if (i == source.size()) break;
    const uint32_t k = static_cast<uint32_t>(source[i]) - v.sentinel(0);
    const std::string fill = has[k] ? pair_text(spans[k], tok, v) : "";
    const size_t lead = std::min(fill.find_first_not_of(" \t"), fill.size());
    out += fill.substr(0, lead) + "[" + fill.substr(lead) + "]";
  }
  return out;
}

std::string one_line(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size();) {
    const unsigned char b = static_cast<unsigned char>(text[i]);
    const char* esc = b == '\\' ? "\\\\" : b == '\n' ? "\\n" : b == '\t' ? "\\t" : b == '\r' ? "\\r" : nullptr;
    if (esc) {
      out += esc;
      ++i;
      continue;
    }
    // The longest UTF-8 character starting here, if any.
    const size_t n = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
    if (n > 0 && i + n <= text.size() && utf8_to_u32(text.substr(i, n)).has_value()) {
      out.append(text.substr(i, n));
      i += n;
      continue;
    }
    char hex[8];
    std::snprintf(hex, sizeof hex, "\\x%02X", b);
    out += hex;
    ++i;
  }
  return out;
}

namespace {
const StFile kNoTensors;  // graph kinds' weights are all in `params`
}  // namespace

PairDecoder::PairDecoder(const ModelConfig& model, const std::vector<float>& params, Backend& be, const PairVocab& v,
                         const KnnStore* knn, const KnnOptions& knn_options)
    : PairDecoder(model, v, [&] {
        auto d = model_kind(model.kind).seq2seq_decoder(model, ModelWeights{params, kNoTensors}, be);
        return knn ? with_knn(std::move(d), *knn, knn_options, model.vocab) : std::move(d);
      }()) {}

PairDecoder::PairDecoder(const ModelConfig& model, const PairVocab& v, std::unique_ptr<Seq2SeqDecoder> d)
    : vocab_(v), seq_len_(model.seq_len), s2s_(d.get()), dec_(model, std::move(d)) {}

void PairDecoder::encode(std::span<const int32_t> source) { s2s_->encode(source); }

Hypothesis PairDecoder::decode(const SampleOptions& o) {
  const int max_len = std::min(o.max_new_tokens, seq_len_);
  const auto eos = static_cast<int32_t>(vocab_.eos());
  Rng rng(o.seed);
  Hypothesis h;
  dec_.reset();
  std::vector<float> logits = dec_.step(static_cast<int32_t>(vocab_.bos()));
  for (int i = 0; i < max_len; ++i) {
    const int32_t t = pick_token(logits, o, rng);
    h.log_prob += log_softmax(logits)[static_cast<size_t>(t)];
    h.tokens.push_back(t);
    if (t == eos) {
      h.ended = true;
      break;
    }
    if (i + 1 < max_len) logits = dec_.step(t);
  }
  h.score = h.log_prob;
  return h;
}

std::vector<Hypothesis> PairDecoder::beam(BeamOptions o) {
  o.eos = static_cast<int32_t>(vocab_.eos());
  o.max_len = std::min(o.max_len, seq_len_);
  return beam_generate(dec_, {static_cast<int32_t>(vocab_.bos())}, o);
}

}  // namespace loom
