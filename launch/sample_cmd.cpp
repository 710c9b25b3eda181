// sample_cmd.cpp: `loom sample --checkpoint DIR (--prompt TEXT | --prompt-file FILE)
// [--stop STR ...] [decoding flags | --beam N [--length-penalty A] [--n-best K] [--eos TEXT]]`:
// text from a checkpoint, streamed as it is generated, or the best hypotheses of a beam search
// (launch/run/sampler.h). A sequence-to-sequence checkpoint decodes the target of each
// `--source TEXT` or line of `--source-file FILE` instead, one line each (launch/run/pair_decode.h);
// with --fill, a span-corruption source with its gaps filled.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>

#include "core/check.h"
#include "engine/backend/device.h"
#include "engine/data/tokenizer.h"
#include "launch/command.h"
#include "launch/run/checkpoint.h"
#include "launch/run/pair_decode.h"
#include "launch/run/sampler.h"

namespace loom {

namespace {

// --stop values understand \n, \t, \r and \\, so a newline needs no shell quoting.
std::string unescape(const std::string& s) {
  std::string r;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      r += s[i];
      continue;
    }
    const char c = s[++i];
    r += c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c;
    if (c != 'n' && c != 't' && c != 'r' && c != '\\') r.insert(r.size() - 1, 1, '\\');  // not an escape: keep it
  }
  return r;
}

// A file of `what`s (prompts or sources), one per line, each with its FILE:LINE; a trailing \r
// is dropped. Blank lines are skipped for prompts; a source file gets an output line for each
// of its lines, so there a blank one is an error.
std::vector<std::pair<std::string, std::string>> read_lines(const std::string& path, const std::string& what) {
  const bool skip_blank = what == "prompt";
  std::ifstream f(path, std::ios::binary);
  LOOM_USER_CHECK(f.good(), path, ": cannot open ", what, " file");
  std::vector<std::pair<std::string, std::string>> lines;  // (where, text)
  std::string line;
  for (int n = 1; std::getline(f, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const std::string where = path + ":" + std::to_string(n);
    LOOM_USER_CHECK(skip_blank || !line.empty(), where, ": empty ", what, " (one ", what, " per line)");
    if (!line.empty()) lines.emplace_back(where, line);
  }
  LOOM_USER_CHECK(!f.bad(), path, ": cannot read ", what, " file");
  LOOM_USER_CHECK(!lines.empty(), path, ": no ", what, "s (one ", what, " per line",
                  skip_blank ? "; blank lines are skipped)" : ")");
  return lines;
}

// Streams generated text to stdout and ends it at the first stop string, which is not
// printed. Text that might be the beginning of a stop string is held back until it is not.
class StopFilter {
 public:
  explicit StopFilter(const std::vector<std::string>& stops) : stops_(stops) {}
  // Adds decoded bytes; returns true once a stop string has appeared.
  bool add(const std::string& bytes) {
    const size_t from = text_.size();
    text_ += bytes;
    size_t cut = std::string::npos;
    for (const std::string& s : stops_) {
      // Only matches that end in the new bytes are new.
      const size_t start = from >= s.size() ? from - s.size() + 1 : 0;
      const size_t at = text_.find(s, start);
      if (at != std::string::npos) cut = std::min(cut, at);
    }
    if (cut != std::string::npos) {
      emit(cut);
      return true;
    }
    size_t hold = 0;  // longest tail that is a proper prefix of a stop string
    for (const std::string& s : stops_)
      for (size_t k = std::min(s.size() - 1, text_.size()); k > hold; --k)
        if (text_.compare(text_.size() - k, k, s, 0, k) == 0) {
          hold = k;
          break;
        }
    emit(text_.size() - hold);
    return false;
  }
  void flush() { emit(text_.size()); }

 private:
  void emit(size_t upto) {
    if (upto > printed_) std::fwrite(text_.data() + printed_, 1, upto - printed_, stdout);
    printed_ = std::max(printed_, upto);
    std::fflush(stdout);
  }
  const std::vector<std::string>& stops_;
  std::string text_;
  size_t printed_ = 0;
};
struct StopReached {};

class SampleCommand final : public Command {
 public:
  explicit SampleCommand(CLI::App& app) : Command(app.add_subcommand("sample", "generate text from a checkpoint")) {
    cmd_->add_option("--checkpoint", ckpt_, "checkpoint folder, run folder or its latest")->required();
    auto* prompt = cmd_->add_option("--prompt", prompt_, "text to continue");
    auto* prompt_file = cmd_->add_option("--prompt-file", prompt_file_,
                                         "file of prompts, one per line (blank lines skipped), sampled in turn")
                            ->excludes(prompt);
    auto* source = cmd_->add_option("--source", source_,
                                    "sequence-to-sequence checkpoints: decode the target of this source "
                                    "(<sK> is sentinel K)")
                       ->excludes(prompt, prompt_file);
    cmd_->add_option("--source-file", source_file_,
                     "sequence-to-sequence checkpoints: file of sources, one per line, each decoded to one line")
        ->excludes(prompt, prompt_file, source);
    cmd_->add_flag("--fill", fill_,
                   "span corruption: print each source with its gaps filled by the decoded spans, in [brackets]")
        ->excludes(prompt, prompt_file);
    cmd_->add_option("--stop", stops_,
                     "end a sample where this text appears (not printed); repeatable; \\n, \\t, \\r, \\\\ are escapes")
        ->allow_extra_args(false);
    cmd_->add_option("--max-new-tokens", o_.max_new_tokens, "tokens to generate")->capture_default_str();
    cmd_->add_flag("--greedy", o_.greedy, "always take the most likely token");
    cmd_->add_option("--temperature", o_.temperature, "softmax temperature")->capture_default_str();
    cmd_->add_option("--top-k", o_.top_k, "sample among the k most likely tokens (0 = all)")->capture_default_str();
    cmd_->add_option("--top-p", o_.top_p, "nucleus: smallest set with this much probability")->capture_default_str();
    cmd_->add_option("--seed", o_.seed, "random seed")->capture_default_str();
    cmd_->add_option("--device", device_, "auto | cpu | cuda")->capture_default_str();
    cmd_->add_option("--beam", beam_.beam, "beam search with this many hypotheses (instead of sampling)");
    cmd_->add_option("--length-penalty", beam_.length_penalty,
                     "beam search: rank by log-prob / ((5 + length) / 6)^A (GNMT; 0 = plain log-prob)")
        ->capture_default_str();
    cmd_->add_option("--n-best", beam_.n_best, "beam search: print the K best hypotheses with their scores");
    knn_.add(*cmd_);
    cmd_->add_option("--eos", eos_,
                     "beam search: the text of the token that ends a hypothesis (default: the tokenizer's "
                     "end-of-text token, if it has one); \\n, \\t, \\r, \\\\ are escapes");
  }
  int run() override {
  if (cmd_->count("--source") > 0 || cmd_->count("--source-file") > 0) return run_pairs();
  // (CLI11 refuses both at once.)
  LOOM_USER_CHECK(!prompt_file_.empty() || !prompt_.empty(),
                  "--prompt: empty prompt (give at least one character, or --prompt-file FILE)");
  for (std::string& s : stops_) {
    s = unescape(s);
    LOOM_USER_CHECK(!s.empty(), "--stop: empty stop string");
  }
  for (const char* f : KnnFlags::names())
    LOOM_USER_CHECK(cmd_->count(f) == 0, f, ": only with --source (a sequence-to-sequence checkpoint)");
  const bool beam = check_decoding_flags();
  const auto prompts = prompt_file_.empty() ? std::vector<std::pair<std::string, std::string>>{{"--prompt", prompt_}}
                                            : read_lines(prompt_file_, "prompt");
  CheckpointData ck = load_checkpoint(ckpt_, false);
  LOOM_USER_CHECK(!model_kind(ck.model.kind).learns_pairs(), prompt_file_.empty() ? "--prompt" : "--prompt-file",
                  ": the checkpoint's kind ", ck.model.kind,
                  " decodes the target of a source; give --source TEXT or --source-file FILE");
  auto tok = make_tokenizer(ck.tokenizer);
  std::vector<std::vector<int32_t>> prompt_ids;
  for (const auto& [where, text] : prompts) {
    std::vector<int32_t> ids;
    for (uint32_t t : tok->encode(text)) {
      LOOM_USER_CHECK(static_cast<int64_t>(t) < ck.model.vocab, where, ": token ", t,
                      " is outside the checkpoint's vocabulary of ", ck.model.vocab);
      ids.push_back(static_cast<int32_t>(t));
    }
    LOOM_USER_CHECK(!ids.empty(), where, ": encodes to no tokens");
    prompt_ids.push_back(std::move(ids));
  }
  if (beam) beam_.eos = eos_id(*tok, ck.model.vocab);
  beam_.max_len = o_.max_new_tokens;
  auto be = make_backend(device_);
  Decoder dec(ck.model, ck.params, *be, ck.counts);
  // Each prompt from its own fresh context and the same seed, so a prompt's sample does not
  // depend on its place in the file. With a prompt file every sample gets a header line.
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (!prompt_file_.empty()) std::printf("=== sample %zu of %zu (%s) ===\n", i + 1, prompts.size(), prompts[i].first.c_str());
    if (beam) {
      print_hypotheses(beam_generate(dec, prompt_ids[i], beam_), prompts[i].second, *tok);
      continue;
    }
    std::fputs(prompts[i].second.c_str(), stdout);
    StopFilter out(stops_);
    try {
      generate(dec, prompt_ids[i], o_, [&](int32_t t) {
        const uint32_t u = static_cast<uint32_t>(t);
        if (out.add(tok->decode(std::span<const uint32_t>(&u, 1)))) throw StopReached{};  // ends generate()
      });
      out.flush();
    } catch (const StopReached&) {
    }
    std::fputs("\n", stdout);
  }
    return 0;
  }

 private:
  // A sequence-to-sequence checkpoint: each source encoded once, its target decoded (sampled,
  // greedy or by beam search) and printed on one line; with --n-best, a line per hypothesis:
  // source number, rank, score, text (tab-separated).
  int run_pairs() {
    LOOM_USER_CHECK(!source_file_.empty() || !source_.empty(), "--source: empty source");
    for (const char* f : {"--stop", "--eos"})
      LOOM_USER_CHECK(cmd_->count(f) == 0, f, ": not with --source (a target ends at the pair vocabulary's EOS)");
    const bool beam = check_decoding_flags();
    knn_.check(*cmd_);
    const auto sources = source_file_.empty() ? std::vector<std::pair<std::string, std::string>>{{"--source", source_}}
                                              : read_lines(source_file_, "source");
    CheckpointData ck = load_checkpoint(ckpt_, false);
    LOOM_USER_CHECK(model_kind(ck.model.kind).learns_pairs(), source_file_.empty() ? "--source" : "--source-file",
                    ": the checkpoint's kind ", ck.model.kind, " does not learn pairs; give --prompt TEXT");
    auto tok = make_tokenizer(ck.tokenizer);
    const PairVocab vocab = pair_vocab_of(ck.model, *tok);
    LOOM_USER_CHECK(!fill_ || vocab.sentinels > 0,
                    "--fill: the checkpoint's pairs have no sentinels to fill (span corruption's have)");
    std::vector<std::vector<int32_t>> source_ids;
    for (const auto& [where, text] : sources)
      source_ids.push_back(encode_source(text, *tok, vocab, ck.model.src_len, where));
    auto be = make_backend(device_);
    const std::unique_ptr<KnnStore> knn = knn_.load(ck);
    PairDecoder dec(ck.model, ck.params, *be, vocab, knn.get(), knn_.options);
    beam_.max_len = o_.max_new_tokens;
    for (size_t i = 0; i < sources.size(); ++i) {
      // The target, or with --fill the source (less its EOS) with the target's spans in its gaps.
      auto text = [&](const Hypothesis& h) {
        const std::span<const int32_t> target(h.tokens.data(), h.tokens.size() - (h.ended ? 1 : 0));
        const std::span<const int32_t> source(source_ids[i].data(), source_ids[i].size() - 1);
        return one_line(fill_ ? filled_text(source, target, *tok, vocab) : pair_text(target, *tok, vocab));
      };
      dec.encode(source_ids[i]);
      if (!beam) {
        std::printf("%s\n", text(dec.decode(o_)).c_str());
        continue;
      }
      const std::vector<Hypothesis> hyps = dec.beam(beam_);
      if (cmd_->count("--n-best") == 0) {
        std::printf("%s\n", text(hyps.at(0)).c_str());
        continue;
      }
      for (size_t h = 0; h < hyps.size(); ++h)
        std::printf("%zu\t%zu\t%.4f\t%s\n", i + 1, h + 1, hyps[h].score, text(hyps[h]).c_str());
    }
    std::fflush(stdout);
    return 0;
  }

  // The sampling flags' ranges, then the beam flags; true for beam search.
  bool check_decoding_flags() const {
    LOOM_USER_CHECK(o_.max_new_tokens >= 1, "--max-new-tokens: must be >= 1");
    LOOM_USER_CHECK(o_.temperature > 0 || o_.greedy, "--temperature: must be > 0 (or use --greedy)");
    LOOM_USER_CHECK(o_.top_k >= 0, "--top-k: must be >= 0");
    LOOM_USER_CHECK(o_.top_p > 0 && o_.top_p <= 1, "--top-p: must be in (0, 1]");
    const bool beam = cmd_->count("--beam") > 0;
    check_beam_flags(beam);
    return beam;
  }
  // Beam search is deterministic: it takes none of the sampling flags, and its own flags need it.
  void check_beam_flags(bool beam) const {
    if (!beam) {
      for (const char* f : {"--length-penalty", "--n-best", "--eos"})
        LOOM_USER_CHECK(cmd_->count(f) == 0, f, ": needs --beam N");
      return;
    }
    LOOM_USER_CHECK(beam_.beam >= 1, "--beam: must be >= 1");
    for (const char* f : {"--greedy", "--temperature", "--top-k", "--top-p", "--seed"})
      LOOM_USER_CHECK(cmd_->count(f) == 0, f, ": beam search does not sample; leave it out with --beam");
    LOOM_USER_CHECK(beam_.n_best >= 1 && beam_.n_best <= beam_.beam, "--n-best: must be in [1, --beam (",
                    beam_.beam, ")]");
    LOOM_USER_CHECK(std::isfinite(beam_.length_penalty) && beam_.length_penalty >= 0,
                    "--length-penalty: must be >= 0");
  }
  // --eos's token, or the tokenizer's end-of-text token, or none (-1).
  int32_t eos_id(const Tokenizer& tok, int64_t vocab) const {
    if (cmd_->count("--eos") == 0) {
      const auto eot = tok.eot_id();
      return eot && static_cast<int64_t>(*eot) < vocab ? static_cast<int32_t>(*eot) : -1;
    }
    const std::string text = unescape(eos_);
    const auto ids = tok.encode(text);
    LOOM_USER_CHECK(ids.size() == 1, "--eos: \"", eos_, "\" encodes to ", ids.size(), " tokens; it must be one");
    LOOM_USER_CHECK(static_cast<int64_t>(ids[0]) < vocab, "--eos: token ", ids[0],
                    " is outside the checkpoint's vocabulary of ", vocab);
    return static_cast<int32_t>(ids[0]);
  }
  // The hypotheses after the prompt, the EOS not printed and stop strings applied. With
  // --n-best each gets a header with its total log-probability and its score.
  void print_hypotheses(const std::vector<Hypothesis>& hyps, const std::string& prompt, const Tokenizer& tok) const {
    const bool headers = cmd_->count("--n-best") > 0;
    for (size_t h = 0; h < hyps.size(); ++h) {
      const Hypothesis& y = hyps[h];
      if (headers)
        std::printf("--- hypothesis %zu of %zu: log-prob %.4f, score %.4f, %zu tokens, %s ---\n", h + 1, hyps.size(),
                    y.log_prob, y.score, y.tokens.size(), y.ended ? "ended by EOS" : "cut at the length limit");
      std::fputs(prompt.c_str(), stdout);
      StopFilter out(stops_);
      bool stopped = false;
      for (size_t i = 0; i + (y.ended ? 1 : 0) < y.tokens.size() && !stopped; ++i) {
        const uint32_t u = static_cast<uint32_t>(y.tokens[i]);
        stopped = out.add(tok.decode(std::span<const uint32_t>(&u, 1)));
      }
      if (!stopped) out.flush();
      std::fputs("\n", stdout);
    }
  }

  std::string ckpt_, prompt_, prompt_file_, source_, source_file_, device_ = "auto", eos_;
  KnnFlags knn_;
  std::vector<std::string> stops_;
  bool fill_ = false;
  SampleOptions o_;
  BeamOptions beam_;
};

}  // namespace

std::unique_ptr<Command> add_sample_command(CLI::App& app) { return std::make_unique<SampleCommand>(app); }

}  // namespace loom
