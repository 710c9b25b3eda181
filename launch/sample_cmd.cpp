// sample_cmd.cpp: `loom sample --checkpoint DIR (--prompt TEXT | --prompt-file FILE)
// [--stop STR ...] [decoding flags]`: text from a checkpoint, streamed as it is generated
// (launch/run/sampler.h).
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <fstream>

#include "core/check.h"
#include "engine/backend/device.h"
#include "engine/data/tokenizer.h"
#include "launch/command.h"
#include "launch/run/checkpoint.h"
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

// --prompt-file: one prompt per line; blank lines are skipped, a trailing \r is dropped.
std::vector<std::pair<std::string, std::string>> read_prompts(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  LOOM_USER_CHECK(f.good(), path, ": cannot open prompt file");
  std::vector<std::pair<std::string, std::string>> prompts;  // (where, text)
  std::string line;
  for (int n = 1; std::getline(f, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) prompts.emplace_back(path + ":" + std::to_string(n), line);
  }
  LOOM_USER_CHECK(!f.bad(), path, ": cannot read prompt file");
  LOOM_USER_CHECK(!prompts.empty(), path, ": no prompts (one prompt per line; blank lines are skipped)");
  return prompts;
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
    cmd_->add_option("--prompt-file", prompt_file_,
                     "file of prompts, one per line (blank lines skipped), sampled in turn")
        ->excludes(prompt);
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
  }
  int run() override {
  // (CLI11 refuses both at once.)
  LOOM_USER_CHECK(!prompt_file_.empty() || !prompt_.empty(),
                  "--prompt: empty prompt (give at least one character, or --prompt-file FILE)");
  for (std::string& s : stops_) {
    s = unescape(s);
    LOOM_USER_CHECK(!s.empty(), "--stop: empty stop string");
  }
  LOOM_USER_CHECK(o_.max_new_tokens >= 1, "--max-new-tokens: must be >= 1");
  LOOM_USER_CHECK(o_.temperature > 0 || o_.greedy, "--temperature: must be > 0 (or use --greedy)");
  LOOM_USER_CHECK(o_.top_k >= 0, "--top-k: must be >= 0");
  LOOM_USER_CHECK(o_.top_p > 0 && o_.top_p <= 1, "--top-p: must be in (0, 1]");
  const auto prompts =
      prompt_file_.empty() ? std::vector<std::pair<std::string, std::string>>{{"--prompt", prompt_}} : read_prompts(prompt_file_);
  CheckpointData ck = load_checkpoint(ckpt_, false);
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
  auto be = make_backend(device_);
  Decoder dec(ck.model, ck.params, *be, ck.counts);
  // Each prompt from its own fresh context and the same seed, so a prompt's sample does not
  // depend on its place in the file. With a prompt file every sample gets a header line.
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (!prompt_file_.empty()) std::printf("=== sample %zu of %zu (%s) ===\n", i + 1, prompts.size(), prompts[i].first.c_str());
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
  std::string ckpt_, prompt_, prompt_file_, device_ = "auto";
  std::vector<std::string> stops_;
  SampleOptions o_;
};

}  // namespace

std::unique_ptr<Command> add_sample_command(CLI::App& app) { return std::make_unique<SampleCommand>(app); }

}  // namespace loom
