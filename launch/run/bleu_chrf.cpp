// bleu_chrf.cpp: sacreBLEU's BLEU (metrics/bleu.py) and chrF (metrics/chrf.py), step for step,
// so that the same text gives the same number. Text is handled as code points where sacreBLEU's
// Python strings are (whitespace, character n-grams); the 13a rules only touch ASCII.
#include "launch/run/bleu_chrf.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <unordered_map>

#include "core/check.h"

namespace loom {

namespace {

// What Python's str.split() and str.rstrip() treat as whitespace.
bool is_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}
bool is_digit(char32_t c) { return c >= U'0' && c <= U'9'; }

std::string to_utf8(std::u32string_view s) {
  static constexpr unsigned char kLead[] = {0x00, 0xC0, 0xE0, 0xF0};
  std::string r;
  for (const char32_t c : s) {
    const int n = c < 0x80 ? 0 : c < 0x800 ? 1 : c < 0x10000 ? 2 : 3;  // continuation bytes
    r += static_cast<char>(kLead[n] | (c >> (6 * n)));
    for (int k = n - 1; k >= 0; --k) r += static_cast<char>(0x80 | ((c >> (6 * k)) & 0x3F));
  }
  return r;
}

std::u32string decode(std::string_view s) {
  auto u = utf8_to_u32(s);
  LOOM_CHECK(u.has_value(), "text that is not UTF-8 reached the metrics (the caller checks it)");
  return *u;
}

void replace_all(std::u32string& s, std::u32string_view from, std::u32string_view to) {
  for (size_t at = s.find(from); at != std::u32string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
}

std::vector<std::u32string> split(std::u32string_view s) {
  std::vector<std::u32string> words;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && is_space(s[i])) ++i;
    const size_t b = i;
    while (i < s.size() && !is_space(s[i])) ++i;
    if (i > b) words.emplace_back(s.substr(b, i - b));
  }
  return words;
}

// One left-to-right pass of a two-character regex substitution, as Python's re.sub makes it:
// where `match(a, b)` holds, the pair becomes `emit(a, b)` and the scan goes on after b.
template <class Match, class Emit>
std::u32string pair_pass(const std::u32string& s, Match match, Emit emit) {
  std::u32string r;
  size_t i = 0;
  for (; i + 1 < s.size(); ++i) {
    if (match(s[i], s[i + 1])) {
      r += emit(s[i], s[i + 1]);
      ++i;
    } else {
      r += s[i];
    }
  }
  if (i < s.size()) r += s[i];
  return r;
}

std::u32string tokenize_13a_u32(std::u32string line) {
  replace_all(line, U"<skipped>", U"");
  replace_all(line, U"-\n", U"");
  replace_all(line, U"\n", U" ");
  if (line.find(U'&') != std::u32string::npos) {
    replace_all(line, U"&quot;", U"\"");
    replace_all(line, U"&amp;", U"&");
    replace_all(line, U"&lt;", U"<");
    replace_all(line, U"&gt;", U">");
  }
  // [\{-\~\[-\` -\&\(-\+\:-\@\/]: ASCII punctuation but ' , - . (handled below), and space.
  std::u32string s = U" ";
  for (const char32_t c : line) {
    const bool punct = (c >= 0x7B && c <= 0x7E) || (c >= 0x5B && c <= 0x60) || (c >= 0x20 && c <= 0x26) ||
                       (c >= 0x28 && c <= 0x2B) || (c >= 0x3A && c <= 0x40) || c == 0x2F;
    if (punct) {
      s += U' ';
      s += c;
      s += U' ';
    } else {
      s += c;
    }
  }
  s += U"   ";  // the trailing " " of f' {line} ', itself split off by the class above
  const auto dot_comma = [](char32_t c) { return c == U'.' || c == U','; };
  // Period and comma unless preceded by a digit: ([^0-9])([\.,]) -> "\1 \2 ".
  s = pair_pass(s, [&](char32_t a, char32_t b) { return !is_digit(a) && dot_comma(b); },
                [](char32_t a, char32_t b) { return std::u32string{a, U' ', b, U' '}; });
  // ... unless followed by a digit: ([\.,])([^0-9]) -> " \1 \2".
  s = pair_pass(s, [&](char32_t a, char32_t b) { return dot_comma(a) && !is_digit(b); },
                [](char32_t a, char32_t b) { return std::u32string{U' ', a, U' ', b}; });
  // A dash after a digit: ([0-9])(-) -> "\1 \2 ".
  s = pair_pass(s, [](char32_t a, char32_t b) { return is_digit(a) && b == U'-'; },
                [](char32_t a, char32_t b) { return std::u32string{a, U' ', b, U' '}; });
  std::u32string out;
  for (const auto& w : split(s)) {
    if (!out.empty()) out += U' ';
    out += w;
  }
  return out;
}

std::u32string rstrip(std::u32string s) {
  while (!s.empty() && is_space(s.back())) s.pop_back();
  return s;
}

// Word n-grams of orders 1..max_order keyed by their words joined with a space (words hold
// none), and the word count.
using Counts = std::unordered_map<std::u32string, double>;
Counts word_ngrams(const std::vector<std::u32string>& words, int max_order) {
  Counts c;
  for (int n = 1; n <= max_order; ++n)
    for (size_t i = 0; i + n <= words.size(); ++i) {
      std::u32string key = words[i];
      for (int k = 1; k < n; ++k) key += U' ' + words[i + k];
      c[key] += 1;
    }
  return c;
}

std::vector<std::u32string> bleu_words(const std::string& line, const BleuOptions& o) {
  std::u32string s = rstrip(decode(line));
  return split(o.tokenize_13a ? tokenize_13a_u32(std::move(s)) : s);
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

void check_shapes(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs) {
  LOOM_CHECK(!refs.empty(), "no references");
  for (const auto& r : refs) LOOM_CHECK(r.size() == hyps.size(), "a reference stream's length differs from the hypotheses'");
}

}  // namespace

std::optional<std::u32string> utf8_to_u32(std::string_view s) {
  std::u32string r;
  r.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const unsigned char b = static_cast<unsigned char>(s[i]);
    int n = b < 0x80 ? 0 : (b >> 5) == 0x6 ? 1 : (b >> 4) == 0xE ? 2 : (b >> 3) == 0x1E ? 3 : -1;
    if (n < 0 || i + n >= s.size()) return std::nullopt;
    char32_t c = n == 0 ? b : n == 1 ? (b & 0x1F) : n == 2 ? (b & 0x0F) : (b & 0x07);
    for (int k = 1; k <= n; ++k) {
      const unsigned char t = static_cast<unsigned char>(s[i + k]);
      if ((t >> 6) != 0x2) return std::nullopt;
      c = (c << 6) | (t & 0x3F);
    }
    // Overlong forms, surrogates and code points past U+10FFFF are not UTF-8.
    static constexpr char32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (c < kMin[n] || (c >= 0xD800 && c <= 0xDFFF) || c > 0x10FFFF) return std::nullopt;
    r += c;
    i += n + 1;
  }
  return r;
}

std::string tokenize_13a(std::string_view line) { return to_utf8(tokenize_13a_u32(decode(line))); }

BleuScore bleu_from_stats(std::vector<double> correct, std::vector<double> total, int64_t sys_len, int64_t ref_len,
                          const BleuOptions& o) {
  const int N = o.max_order;
  LOOM_CHECK(static_cast<int>(correct.size()) == N && static_cast<int>(total.size()) == N, "statistics of another order");
  const double value = o.smooth_value >= 0 ? o.smooth_value : o.smooth == BleuSmooth::Floor ? 0.1 : 1.0;
  BleuScore s;
  s.sys_len = sys_len;
  s.ref_len = ref_len;
  s.bp = sys_len >= ref_len ? 1.0 : sys_len > 0 ? std::exp(1.0 - static_cast<double>(ref_len) / sys_len) : 0.0;
  s.precisions.assign(N, 0.0);
  bool any = false;
  for (double c : correct) any = any || c != 0;
  if (any) {
    double smooth_mteval = 1;
    int eff_order = N;
    for (int n = 1; n <= N; ++n) {
      if (o.smooth == BleuSmooth::AddK && n > 1) {
        correct[n - 1] += value;
        total[n - 1] += value;
      }
      if (total[n - 1] == 0) break;
      if (o.effective_order) eff_order = n;
      if (correct[n - 1] == 0) {
        if (o.smooth == BleuSmooth::Exp) {
          smooth_mteval *= 2;
          s.precisions[n - 1] = 100.0 / (smooth_mteval * total[n - 1]);
        } else if (o.smooth == BleuSmooth::Floor) {
          s.precisions[n - 1] = 100.0 * value / total[n - 1];
        }
      } else {
        s.precisions[n - 1] = 100.0 * correct[n - 1] / total[n - 1];
      }
    }
    double sum = 0;  // sacreBLEU's my_log floors log(0) at -9999999999
    for (int n = 0; n < eff_order; ++n) sum += s.precisions[n] == 0 ? -9999999999.0 : std::log(s.precisions[n]);
    s.score = s.bp * std::exp(sum / eff_order);
  }
  s.correct = std::move(correct);
  s.total = std::move(total);
  return s;
}

BleuScore corpus_bleu(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs,
                      const BleuOptions& o) {
  check_shapes(hyps, refs);
  const int N = o.max_order;
  LOOM_CHECK(N >= 1, "BLEU order ", N);
  std::vector<double> correct(N, 0), total(N, 0);
  int64_t sys_len = 0, ref_len = 0;
  for (size_t i = 0; i < hyps.size(); ++i) {
    // The references' n-gram counts, each the largest over the references (clipping).
    Counts ref_counts;
    std::vector<int64_t> ref_lens;
    for (const auto& stream : refs) {
      const auto words = bleu_words(stream[i], o);
      ref_lens.push_back(static_cast<int64_t>(words.size()));
      for (const auto& [g, c] : word_ngrams(words, N)) ref_counts[g] = std::max(ref_counts[g], c);
    }
    const auto words = bleu_words(hyps[i], o);
    const int64_t hyp_len = static_cast<int64_t>(words.size());
    // The closest reference length, the shorter one on a tie.
    int64_t best = -1, best_diff = -1;
    for (const int64_t r : ref_lens) {
      const int64_t d = r > hyp_len ? r - hyp_len : hyp_len - r;
      if (best_diff < 0 || d < best_diff || (d == best_diff && r < best)) best_diff = d, best = r;
    }
    sys_len += hyp_len;
    ref_len += best;
    for (const auto& [g, c] : word_ngrams(words, N)) {
      const int n = static_cast<int>(std::count(g.begin(), g.end(), U' '));
      total[n] += c;
      const auto it = ref_counts.find(g);
      if (it != ref_counts.end()) correct[n] += std::min(c, it->second);
    }
  }
  BleuScore s = bleu_from_stats(correct, total, sys_len, ref_len, o);
  std::string smooth = o.smooth == BleuSmooth::None    ? "none"
                       : o.smooth == BleuSmooth::Exp   ? "exp"
                       : o.smooth == BleuSmooth::Floor ? "floor"
                                                       : "add-k";
  if (o.smooth == BleuSmooth::Floor || o.smooth == BleuSmooth::AddK)
    smooth += fmt("[%.2f]", o.smooth_value >= 0 ? o.smooth_value : o.smooth == BleuSmooth::Floor ? 0.1 : 1.0);
  std::string prec;
  for (int n = 0; n < N; ++n) {
    if (n) prec += '/';
    prec += fmt("%.1f", s.precisions[n]);
  }
  s.line = "BLEU|nrefs:" + std::to_string(refs.size()) + "|case:mixed|eff:" + (o.effective_order ? "yes" : "no") +
           "|tok:" + (o.tokenize_13a ? "13a" : "none") + "|smooth:" + smooth + "|order:" + std::to_string(N) + " = " +
           fmt("%.2f", s.score) + " " + prec + " (BP = " + fmt("%.3f", s.bp) +
           " ratio = " + fmt("%.3f", s.ref_len ? static_cast<double>(s.sys_len) / s.ref_len : 0.0) +
           " hyp_len = " + std::to_string(s.sys_len) + " ref_len = " + std::to_string(s.ref_len) + ")";
  return s;
}

namespace {

// Character n-grams of orders 1..order (whitespace removed unless kept).
std::vector<std::unordered_map<std::u32string, double>> char_ngrams(const std::string& line, const ChrfOptions& o) {
  std::u32string s = decode(line);
  if (!o.whitespace) {
    std::u32string joined;
    for (const auto& w : split(s)) joined += w;
    s = std::move(joined);
  }
  std::vector<std::unordered_map<std::u32string, double>> grams(o.char_order);
  for (int n = 1; n <= o.char_order; ++n)
    for (size_t i = 0; i + n <= s.size(); ++i) grams[n - 1][s.substr(i, n)] += 1;
  return grams;
}

// [hyp, ref, match] per order -> the F-beta score, 0..100 (CHRF._compute_f_score).
double chrf_f_score(const std::vector<double>& st, const ChrfOptions& o) {
  const double eps = 1e-16, factor = static_cast<double>(o.beta) * o.beta;
  double score = 0, avg_prec = 0, avg_rec = 0;
  int effective = 0;
  for (int i = 0; i < o.char_order; ++i) {
    const double n_hyp = st[3 * i], n_ref = st[3 * i + 1], n_match = st[3 * i + 2];
    const double prec = n_hyp > 0 ? n_match / n_hyp : eps, rec = n_ref > 0 ? n_match / n_ref : eps;
    const double denom = factor * prec + rec;
    score += denom > 0 ? (1 + factor) * prec * rec / denom : eps;
    if (n_hyp > 0 && n_ref > 0) {
      avg_prec += prec;
      avg_rec += rec;
      ++effective;
    }
  }
  if (o.eps_smoothing) return 100 * score / o.char_order;
  if (effective == 0) return 0.0;
  avg_prec /= effective;
  avg_rec /= effective;
  if (avg_prec + avg_rec == 0) return 0.0;
  return 100 * (1 + factor) * avg_prec * avg_rec / (factor * avg_prec + avg_rec);
}

}  // namespace

ChrfScore corpus_chrf(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs,
                      const ChrfOptions& o) {
  check_shapes(hyps, refs);
  LOOM_CHECK(o.char_order >= 1 && o.beta >= 1, "chrF order ", o.char_order, ", beta ", o.beta);
  std::vector<double> sum(3 * o.char_order, 0.0);
  for (size_t i = 0; i < hyps.size(); ++i) {
    const auto h = char_ngrams(hyps[i], o);
    std::vector<double> best;
    double best_f = -1;
    for (const auto& stream : refs) {
      const auto r = char_ngrams(stream[i], o);
      std::vector<double> st;
      for (int n = 0; n < o.char_order; ++n) {
        double hyp_count = 0, ref_count = 0, match = 0;
        for (const auto& [g, c] : h[n]) {
          hyp_count += c;
          const auto it = r[n].find(g);
          if (it != r[n].end()) match += std::min(c, it->second);
        }
        for (const auto& [g, c] : r[n]) ref_count += c;
        st.insert(st.end(), {r[n].empty() ? 0.0 : hyp_count, ref_count, match});  // no hits without a reference
      }
      const double f = chrf_f_score(st, o);
      if (f > best_f) best_f = f, best = std::move(st);
    }
    for (size_t k = 0; k < sum.size(); ++k) sum[k] += best[k];
  }
  ChrfScore s;
  s.score = chrf_f_score(sum, o);
  s.line = "chrF" + std::to_string(o.beta) + "|nrefs:" + std::to_string(refs.size()) +
           "|case:mixed|eff:" + (o.eps_smoothing ? "no" : "yes") + "|nc:" + std::to_string(o.char_order) +
           "|nw:0|space:" + (o.whitespace ? "yes" : "no") + " = " + fmt("%.2f", s.score);
  return s;
}

}  // namespace loom
