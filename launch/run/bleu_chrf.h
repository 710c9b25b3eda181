// bleu_chrf.h: corpus BLEU and chrF of hypotheses against one or more references, computed
// the way sacreBLEU 2.x computes them (its defaults: BLEU over 13a tokens, 4-grams, uniform
// weights, brevity penalty from the closest reference length, exp smoothing, mixed case;
// chrF2: character 6-grams, beta 2, whitespace removed), so that scores printed by loom can be
// compared with published ones. Model-independent: it scores text, whatever produced it.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace loom {

// UTF-8 to code points; nullopt for bytes that are not UTF-8 (sacreBLEU reads text as UTF-8).
std::optional<std::u32string> utf8_to_u32(std::string_view s);

// mteval-v13a's tokenisation as sacreBLEU applies it (tokenizers/tokenizer_13a.py): ASCII
// punctuation split off, periods and commas split off unless beside a digit, a dash after a
// digit split off, whitespace runs collapsed. UTF-8 in, UTF-8 out.
std::string tokenize_13a(std::string_view line);

enum class BleuSmooth { None, Floor, AddK, Exp };

struct BleuOptions {
  int max_order = 4;
  bool tokenize_13a = true;  // false: split on whitespace only (sacreBLEU's tok:none)
  BleuSmooth smooth = BleuSmooth::Exp;
  double smooth_value = -1;      // < 0: the method's default (floor 0.1, add-k 1)
  bool effective_order = false;  // true for sentence BLEU: orders with no n-grams are left out
};

struct BleuScore {
  double score = 0;                  // 0..100
  std::vector<double> correct, total;  // per order (add-k adds to them, so not integers)
  std::vector<double> precisions;      // per order, percent
  double bp = 0;                       // brevity penalty
  int64_t sys_len = 0, ref_len = 0;    // tokens
  // sacreBLEU's line: "BLEU|nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|order:4 = 48.53
  // 73.7/53.3/40.0/28.6 (BP = 1.000 ratio = 1.000 hyp_len = 19 ref_len = 19)".
  std::string line;
};

// `refs[k][i]` is the k-th reference of hypothesis i; every refs[k] has hyps.size() lines.
BleuScore corpus_bleu(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs,
                      const BleuOptions& o = {});
// The score from summed statistics (sacreBLEU's BLEU.compute_bleu).
BleuScore bleu_from_stats(std::vector<double> correct, std::vector<double> total, int64_t sys_len, int64_t ref_len,
                          const BleuOptions& o);

struct ChrfOptions {
  int char_order = 6;
  int beta = 2;
  bool whitespace = false;     // true: whitespace is part of the character n-grams
  bool eps_smoothing = false;  // chrF++.py's smoothing instead of sacreBLEU 2's effective order
};

struct ChrfScore {
  double score = 0;  // 0..100
  std::string line;  // "chrF2|nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no = 54.12"
};

// As corpus_bleu; each segment takes the statistics of its reference with the best
// sentence-level chrF, and the corpus score comes from the summed statistics.
ChrfScore corpus_chrf(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs,
                      const ChrfOptions& o = {});

}  // namespace loom
