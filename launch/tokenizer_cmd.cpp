// tokenizer_cmd.cpp: `loom tokenizer train --corpus kjv|FILE --vocab-size N --out FILE`:
// learns a byte-level BPE vocabulary (engine/data/bpe.h) and writes it crash-safely.
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/check.h"
#include "engine/data/bpe.h"
#include "engine/data/corpus.h"
#include "launch/command.h"
#include "launch/run/progress.h"

namespace loom {

namespace {

// `loom tokenizer` is a group: train today (encode/decode/info are natural next members).
CLI::App& group(CLI::App& app) {
  CLI::App* tk = app.add_subcommand("tokenizer", "tokenizers");
  tk->require_subcommand(1);
  return *tk;
}

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

}  // namespace loom
