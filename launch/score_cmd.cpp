// score_cmd.cpp: `loom score --hyp FILE --ref FILE [--ref FILE2 ...] [--metric bleu|chrf|all]
// [--tokenize 13a|none] [--smooth exp|none|floor|add-k] [--order N]`: corpus BLEU and chrF of a
// file of hypotheses, one a line, against one or more reference files aligned line for line
// (launch/run/bleu_chrf.h), each printed with its signature as sacreBLEU prints it.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/check.h"
#include "launch/command.h"
#include "launch/run/bleu_chrf.h"

namespace loom {

namespace {

// The file's lines without their ends ("\n" or "\r\n", as Python's text mode reads them); a
// last line without "\n" counts. Every line must be UTF-8.
std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  LOOM_USER_CHECK(f.good(), path, ": cannot open");
  std::ostringstream all;
  all << f.rdbuf();
  LOOM_USER_CHECK(!f.bad(), path, ": cannot read");
  const std::string text = all.str();
  LOOM_USER_CHECK(!text.empty(), path, ": empty (one segment a line)");
  std::vector<std::string> lines;
  for (size_t at = 0; at < text.size();) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(at, end - at);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    LOOM_USER_CHECK(utf8_to_u32(line).has_value(), path, ":", lines.size() + 1, ": not UTF-8");
    lines.push_back(std::move(line));
    at = end + 1;
  }
  return lines;
}

class ScoreCommand final : public Command {
 public:
  explicit ScoreCommand(CLI::App& app)
      : Command(app.add_subcommand("score", "corpus BLEU and chrF of hypotheses against references (as sacreBLEU)")) {
    cmd_->add_option("--hyp", hyp_, "hypotheses, one segment a line")->required();
    cmd_->add_option("--ref", refs_, "references aligned with --hyp line for line; repeat for more references")
        ->required()
        ->allow_extra_args(false);
    cmd_->add_option("--metric", metric_, "bleu | chrf | all")
        ->check(CLI::IsMember({"bleu", "chrf", "all"}))
        ->capture_default_str();
    cmd_->add_option("--tokenize", tokenize_, "BLEU's tokeniser: 13a (mteval-v13a, WMT's) or none")
        ->check(CLI::IsMember({"13a", "none"}))
        ->capture_default_str();
    cmd_->add_option("--smooth", smooth_, "BLEU's smoothing of empty n-gram orders: exp | none | floor | add-k")
        ->check(CLI::IsMember({"exp", "none", "floor", "add-k"}))
        ->capture_default_str();
    cmd_->add_option("--order", bleu_.max_order, "BLEU's largest n-gram order")
        ->check(CLI::Range(1, 16))
        ->capture_default_str();
  }
  int run() override {
    const std::vector<std::string> hyps = read_lines(hyp_);
    std::vector<std::vector<std::string>> refs;
    for (const std::string& r : refs_) {
      refs.push_back(read_lines(r));
      LOOM_USER_CHECK(refs.back().size() == hyps.size(), r, ": ", refs.back().size(), " lines, but --hyp ", hyp_,
                      " has ", hyps.size());
    }
    bleu_.tokenize_13a = tokenize_ == "13a";
    bleu_.smooth = smooth_ == "exp"     ? BleuSmooth::Exp
                   : smooth_ == "none"  ? BleuSmooth::None
                   : smooth_ == "floor" ? BleuSmooth::Floor
                                        : BleuSmooth::AddK;
    if (metric_ != "chrf") std::printf("%s\n", corpus_bleu(hyps, refs, bleu_).line.c_str());
    if (metric_ != "bleu") std::printf("%s\n", corpus_chrf(hyps, refs).line.c_str());
    return 0;
  }

 private:
  std::string hyp_, metric_ = "all", tokenize_ = "13a", smooth_ = "exp";
  std::vector<std::string> refs_;
  BleuOptions bleu_;
};

}  // namespace

std::unique_ptr<Command> add_score_command(CLI::App& app) { return std::make_unique<ScoreCommand>(app); }

}  // namespace loom
