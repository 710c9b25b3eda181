// tokenizer_cmd.cpp: the `loom tokenizer` group.
//   train  --corpus kjv|FILE --vocab-size N --out FILE: learns a byte-level BPE vocabulary
//          (engine/data/bpe.h) and writes it crash-safely.
//   encode --tokenizer T (--file F | TEXT) [--json]: the ids of the exact bytes, one line.
//   decode --tokenizer T (--file F | IDS): the bytes back, exactly, with nothing added.
//   info   --tokenizer T: vocabulary size, special tokens, merges.
// encode and decode are inverses on any bytes (invalid UTF-8 and NUL included), so they are
// how a user checks what a model sees.
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <sys/stat.h>

#include "core/check.h"
#include "engine/data/bpe.h"
#include "engine/data/corpus.h"
#include "engine/data/tokenizer.h"
#include "engine/io/json_guard.h"
#include "launch/command.h"
#include "launch/run/progress.h"

namespace loom {

namespace {

CLI::App& group(CLI::App& app) { return command_group(app, "tokenizer", "tokenizers: train, encode, decode, info"); }

constexpr const char* kTokenizerHelp =
    "byte | gpt2 | FILE (written by `loom tokenizer train`), each optionally with eot: in front (an "
    "end-of-text token after the vocabulary, as `loom prepare` adds for several documents)";

// An ids file is text; anything this large is not one.
constexpr uint64_t kMaxIdsFileBytes = uint64_t{1} << 30;

void write_stdout(std::string_view bytes) {
  LOOM_USER_CHECK(std::fwrite(bytes.data(), 1, bytes.size(), stdout) == bytes.size(),
                  "stdout: cannot write: ", std::strerror(errno));
}

void finish_stdout() { LOOM_USER_CHECK(std::fflush(stdout) == 0, "stdout: cannot write: ", std::strerror(errno)); }

// Token ids as text: decimal numbers separated by whitespace and/or commas, optionally inside
// [ ] (so encode's --json output decodes too). `source` names the input in errors.
std::vector<uint32_t> parse_ids(std::string_view text, const std::string& source) {
  size_t a = text.find_first_not_of(" \t\r\n"), b = text.find_last_not_of(" \t\r\n");
  if (a != std::string_view::npos && text[a] == '[') {
    LOOM_USER_CHECK(text[b] == ']', source, ": starts with [ but does not end with ]");
    text = text.substr(a + 1, b - a - 1);
  }
  std::vector<uint32_t> ids;
  size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ',') {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < text.size() && !std::strchr(" \t\r\n,", text[end])) ++end;
    const std::string_view word = text.substr(i, end - i);
    uint32_t id = 0;
    const auto [p, ec] = std::from_chars(word.data(), word.data() + word.size(), id);
    LOOM_USER_CHECK(ec == std::errc() && p == word.data() + word.size(), source, ": '", brief(word),
                    "' (token ", ids.size(), ") is not a token id (a whole number from 0 to ",
                    std::numeric_limits<uint32_t>::max(), ")");
    ids.push_back(id);
    i = end;
  }
  return ids;
}

// Encodes from a file in chunks (any size) or from one argument; calls emit with each piece.
void encode_input(const Tokenizer& tok, const std::string& file, const std::string& text,
                  const std::function<void(const std::vector<uint32_t>&)>& emit) {
  std::vector<uint32_t> ids;
  if (file.empty()) {
    tok.encode_stream(text, true, ids);
    return emit(ids);
  }
  struct stat st {};
  LOOM_USER_CHECK(::stat(file.c_str(), &st) == 0, file, ": cannot open: ", std::strerror(errno));
  if (S_ISREG(st.st_mode) && st.st_size == 0) return;  // stream_file refuses empty files
  stream_file(file, "text to encode", size_t{4} << 20, [&](std::string_view chunk, bool at_end) {
    ids.clear();
    const size_t used = tok.encode_stream(chunk, at_end, ids);
    emit(ids);
    return used;
  });
}

// What encode and decode both take: --tokenizer, and --file or positional input (not both).
template <class T>
void add_input_options(CLI::App* cmd, std::string& tokenizer, std::string& file, const char* file_help,
                       const char* name, T& positional, const char* positional_help) {
  cmd->add_option("--tokenizer", tokenizer, kTokenizerHelp)->capture_default_str();
  cmd->add_option("--file", file, file_help)->excludes(cmd->add_option(name, positional, positional_help));
}

class TokenizerEncodeCommand final : public Command {
 public:
  explicit TokenizerEncodeCommand(CLI::App& app)
      : Command(group(app).add_subcommand("encode", "print the token ids of the exact bytes of a text or file")) {
    add_input_options(cmd_, tokenizer_, file_, "encode this file's bytes", "text", text_,
                      "encode this text (exactly; no newline is added)");
    cmd_->add_flag("--json", json_, "print a JSON array instead of space-separated ids");
  }
  int run() override {
    LOOM_USER_CHECK(!file_.empty() || cmd_->count("text"), "tokenizer encode: give --file FILE or a TEXT");
    const auto tok = make_tokenizer(tokenizer_);
    bool first = true;
    std::string line;
    write_stdout(json_ ? "[" : "");
    encode_input(*tok, file_, text_, [&](const std::vector<uint32_t>& ids) {
      line.clear();
      for (uint32_t id : ids) {
        if (!first) line += json_ ? "," : " ";
        first = false;
        line += std::to_string(id);
      }
      write_stdout(line);
    });
    write_stdout(json_ ? "]\n" : "\n");
    finish_stdout();
    return 0;
  }

 private:
  std::string tokenizer_ = "byte", file_, text_;
  bool json_ = false;
};

class TokenizerDecodeCommand final : public Command {
 public:
  explicit TokenizerDecodeCommand(CLI::App& app)
      : Command(group(app).add_subcommand("decode", "print the bytes of token ids, exactly (no newline added)")) {
    add_input_options(cmd_, tokenizer_, file_, "read the ids from this file (as encode prints them)", "ids", ids_,
                      "token ids (space- or comma-separated, or a JSON array)");
  }
  int run() override {
    LOOM_USER_CHECK(!file_.empty() || !ids_.empty(), "tokenizer decode: give --file FILE or the IDS");
    const auto tok = make_tokenizer(tokenizer_);
    std::vector<uint32_t> ids;
    std::string source = file_;
    if (!file_.empty()) {
      ids = parse_ids(read_small_file(file_, "token ids file", kMaxIdsFileBytes), file_);
    } else {
      source = "ids";
      std::string all;
      for (const std::string& s : ids_) all += s + " ";
      ids = parse_ids(all, source);
    }
    std::string bytes;
    try {
      bytes = tok->decode(ids);
    } catch (const UserError& e) {
      user_error(source, ": ", e.what());
    }
    write_stdout(bytes);
    finish_stdout();
    return 0;
  }

 private:
  std::string tokenizer_ = "byte", file_;
  std::vector<std::string> ids_;
};

class TokenizerInfoCommand final : public Command {
 public:
  explicit TokenizerInfoCommand(CLI::App& app)
      : Command(group(app).add_subcommand("info", "print a tokenizer's vocabulary size, special tokens and merges")) {
    cmd_->add_option("--tokenizer", tokenizer_, kTokenizerHelp)->capture_default_str();
  }
  int run() override {
    const auto tok = make_tokenizer(tokenizer_);
    std::string special = "none";
    if (const auto eot = tok->eot_id()) special = std::string(kEotText) + " " + std::to_string(*eot) + " (end of text)";
    std::printf("tokenizer       %s\nvocabulary      %d\nspecial tokens  %s\nmerges          %zu\n",
                tok->name().c_str(), tok->vocab_size(), special.c_str(), tok->num_merges());
    finish_stdout();
    return 0;
  }

 private:
  std::string tokenizer_ = "byte";
};

class TokenizerCommand final : public Command {
 public:
  explicit TokenizerCommand(CLI::App& app)
      : Command(group(app).add_subcommand("train", "learn a byte-level BPE vocabulary (GPT-2 pre-tokenization) "
                                                   "from a corpus")) {
    cmd_->add_option("--corpus", corpus_, "kjv or a text file")->required();
    cmd_->add_option("--vocab-size", vocab_, "vocabulary size: 256 byte tokens + merges")->required();
    cmd_->add_option("--out", out_, "tokenizer file to write (JSON; use with loom prepare --tokenizer FILE)")
        ->required();
  }
  int run() override {
    LOOM_USER_CHECK(vocab_ >= 256, "--vocab-size: ", vocab_,
                    " is too small (byte-level BPE starts from the 256 byte tokens)");
    LOOM_USER_CHECK(vocab_ <= (int64_t{1} << 24), "--vocab-size: ", vocab_, " is too large (at most 16777216)");
    const std::string path = corpus_text_path(corpus_);
    // Written beside --out and renamed into place at the end; opened first, so an unwritable
    // --out fails before the training time is spent, and removed on any failure.
    const std::string tmp = out_ + ".tmp." + std::to_string(::getpid());
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    LOOM_USER_CHECK(f, out_, ": cannot write the tokenizer file: ", std::strerror(errno));
    struct Cleanup {
      const std::string& p;
      std::FILE* f;
      bool keep = false;
      ~Cleanup() {
        if (f) std::fclose(f);
        if (!keep) std::remove(p.c_str());
      }
    } cleanup{tmp, f};
    BytesBar bar("loom tokenizer train: counting");
    std::function<void(uint64_t, uint64_t)> progress;
    if (on_terminal()) progress = std::ref(bar);
    BpeTrainStats st;
    const BpeMerges m = train_bpe(path, static_cast<uint32_t>(vocab_), &st, progress);
    const std::string text = serialize_bpe(m);
    // fsync before the rename: a crash leaves the old file or the new one, never a torn one.
    const bool wrote = std::fwrite(text.data(), 1, text.size(), f) == text.size() && std::fflush(f) == 0 &&
                       ::fsync(fileno(f)) == 0;
    cleanup.f = nullptr;
    LOOM_USER_CHECK(std::fclose(f) == 0 && wrote, out_, ": cannot write the tokenizer file: ", std::strerror(errno));
    LOOM_USER_CHECK(std::rename(tmp.c_str(), out_.c_str()) == 0, out_, ": cannot rename the finished file into place");
    cleanup.keep = true;
    if (256 + m.merges.size() < static_cast<size_t>(vocab_))
      std::printf("loom tokenizer train: the corpus ran out of pairs to merge after %zu merges\n", m.merges.size());
    std::printf("loom tokenizer train: %s: %.1f MiB, %llu pre-tokens (%llu distinct) -> %zu merges, vocabulary %zu, "
                "in %.2f s -> %s\n",
                path.c_str(), st.bytes / 1048576.0, static_cast<unsigned long long>(st.pieces),
                static_cast<unsigned long long>(st.distinct_pieces), m.merges.size(), 256 + m.merges.size(),
                st.seconds, out_.c_str());
    return 0;
  }

 private:
  std::string corpus_, out_;
  int64_t vocab_ = 0;
};

}  // namespace

std::unique_ptr<Command> add_tokenizer_command(CLI::App& app) { return std::make_unique<TokenizerCommand>(app); }
std::unique_ptr<Command> add_tokenizer_encode_command(CLI::App& app) {
  return std::make_unique<TokenizerEncodeCommand>(app);
}
std::unique_ptr<Command> add_tokenizer_decode_command(CLI::App& app) {
  return std::make_unique<TokenizerDecodeCommand>(app);
}
std::unique_ptr<Command> add_tokenizer_info_command(CLI::App& app) { return std::make_unique<TokenizerInfoCommand>(app); }

}  // namespace loom
