// helpers.h: shared pieces of the system tests: temporary folders and files, a generated
// corpus, a prepared data folder, running the loom binary and capturing what it prints, and
// the bad-input contract (one line naming the file, exit 2) for the CLI and in process.
#pragma once
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/rng.h"
#include "engine/data/prepare.h"
#include "engine/data/shard.h"

namespace loom::test {

namespace fs = std::filesystem;

// A fresh temporary folder per test, removed at the end.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "loom-test-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp " + tmpl + " failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& str() const { return path_; }
  std::string operator/(const std::string& s) const { return path_ + "/" + s; }

 private:
  std::string path_;
};

// Pseudo-English with structure to learn: words from a small list, sentences of 4-9 words.
inline std::string make_corpus(size_t bytes, uint64_t seed) {
  static const char* words[] = {"the", "lord", "said", "unto", "him", "and", "they", "went", "into", "city",
                                "of", "david", "king", "house", "land", "people", "all", "his", "sons", "were"};
  Rng r(seed);
  std::string s;
  while (s.size() < bytes) {
    const int n = 4 + static_cast<int>(r.below(6));
    for (int i = 0; i < n; ++i) {
      std::string w = words[r.below(20)];
      if (i == 0) w[0] = static_cast<char>(w[0] - 32);
      s += w + (i + 1 < n ? " " : ".\n");
    }
  }
  return s;
}

// Writes a corpus and prepares it into <dir>/data; returns the data folder.
inline std::string prepare_tiny_data(const std::string& dir, size_t bytes = 200000, uint64_t seed = 11) {
  const std::string txt = dir + "/corpus.txt";
  std::ofstream(txt) << make_corpus(bytes, seed);
  const std::string out = dir + "/data";
  prepare_corpus(txt, "byte", out, 0.1);
  return out;
}

// The run folder's metrics, one JSON object per step. A last line still being written (a run
// in progress) is left out.
inline std::vector<nlohmann::json> read_metrics(const std::string& run_dir) {
  std::vector<nlohmann::json> r;
  std::ifstream f(run_dir + "/metrics.jsonl");
  for (std::string line; std::getline(f, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded()) break;
    r.push_back(std::move(j));
  }
  return r;
}

struct RunResult {
  int rc = -1;
  std::string out, err;
};

// A file's bytes ("" when it cannot be read), and a file made of `bytes` (replacing it).
inline std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// `s` cut at each `sep` (a last piece without one is kept, an empty one after the last sep is not).
inline std::vector<std::string> split_lines(const std::string& s, char sep = '\n') {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == sep) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

// `n` as 8 little-endian bytes (the length prefix of a safetensors file).
inline std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(n >> (8 * i));
  return s;
}

// An llm.c token shard: 256 int32 header (magic 20240520, version, count) and uint16 tokens.
// `header` overrides header fields by index (to craft bad ones).
inline std::string llmc_shard_bytes(const std::vector<uint32_t>& tokens,
                                    const std::vector<std::pair<int, int32_t>>& header = {}) {
  std::vector<int32_t> h(256, 0);
  h[0] = 20240520;
  h[1] = 1;
  h[2] = static_cast<int32_t>(tokens.size());
  for (const auto& [i, v] : header) h[i] = v;
  std::string s(reinterpret_cast<const char*>(h.data()), h.size() * 4);
  for (uint32_t t : tokens) {
    s += static_cast<char>(t & 0xff);
    s += static_cast<char>((t >> 8) & 0xff);
  }
  return s;
}

inline std::string loom_binary() { return std::string(LOOM_BINARY_DIR) + "/loom"; }
// The CLI built against the SIMT emulator (a CUDA device without a GPU).
inline std::string loom_emu_binary() { return std::string(LOOM_BINARY_DIR) + "/loom-emu"; }

// Runs `BINARY ARGS` (args are shell-quoted), capturing stdout and stderr.
inline RunResult run_binary(const std::string& binary, const std::vector<std::string>& args,
                            const std::string& cwd = "") {
  TempDir t;
  std::string cmd = (cwd.empty() ? "" : "cd '" + cwd + "' && ") + "'" + binary + "'";
  for (const auto& a : args) {
    std::string q = "'";
    for (char c : a) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    cmd += " " + q + "'";
  }
  cmd += " >'" + (t / "out") + "' 2>'" + (t / "err") + "' </dev/null";
  const int st = std::system(cmd.c_str());
  RunResult r;
  r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  r.out = read_bytes(t / "out");
  r.err = read_bytes(t / "err");
  return r;
}

inline RunResult run_loom(const std::vector<std::string>& args, const std::string& cwd = "") {
  return run_binary(loom_binary(), args, cwd);
}

// Asserts the bad-input contract: exit 2 and exactly one line on stderr that names `what`.
inline void expect_user_error(const RunResult& r, const std::string& what) {
  EXPECT_EQ(r.rc, 2) << "stderr: " << r.err << "\nstdout: " << r.out;
  EXPECT_NE(r.err.find("loom: error: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(what), std::string::npos) << "expected '" << what << "' in: " << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "not one line: " << r.err;
}

// The same contract inside the process: `f` must throw a UserError whose message is one line,
// starts with `prefix` and contains every one of `needles`; any other exception fails.
inline void expect_user_error(const std::function<void()>& f, const std::vector<std::string>& needles,
                              const std::string& prefix = "") {
  try {
    f();
  } catch (const UserError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "not one line: " << msg;
    EXPECT_EQ(msg.rfind(prefix, 0), 0u) << "does not start with '" << prefix << "': " << msg;
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
    return;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected a UserError, got another exception: " << e.what();
    return;
  }
  ADD_FAILURE() << "no UserError";
}

// Runs f with LOOM_HOME set to `home`, a private one holding scripts/fetch_kjv.sh, so that the
// corpus "kjv" is fetched into home/data/ and never read from or written into the source
// tree's data/; LOOM_HOME is restored after, also when f throws.
inline void with_private_kjv_home(const fs::path& home, const std::function<void()>& f) {
  fs::create_directories(home / "scripts");
  fs::copy_file(fs::path(LOOM_SOURCE_DIR) / "scripts" / "fetch_kjv.sh", home / "scripts" / "fetch_kjv.sh");
  const char* old = std::getenv("LOOM_HOME");
  const std::string old_home = old ? old : "";
  const auto restore = [&] { old ? ::setenv("LOOM_HOME", old_home.c_str(), 1) : ::unsetenv("LOOM_HOME"); };
  ::setenv("LOOM_HOME", home.c_str(), 1);
  try {
    f();
  } catch (...) {
    restore();
    throw;
  }
  restore();
}

// A tiny config pointing at a data folder and a run folder.
inline std::string tiny_config(const std::string& data, const std::string& run_dir, int steps = 40) {
  std::ostringstream s;
  s << "device = \"cpu\"\n[model]\nkind = \"gpt\"\nn_layer = 2\nn_head = 2\nd_model = 32\nseq_len = 32\n"
    << "[data]\npath = \"" << data << "\"\n[train]\nsteps = " << steps
    << "\nbatch_size = 8\nseed = 7\neval_every = 10\neval_steps = 2\n"
    << "[optim]\nlr = 3e-3\nmin_lr = 3e-4\nwarmup_steps = 5\n[checkpoint]\nevery = 10\nkeep = 0\n[log]\nrun_dir = \""
    << run_dir << "\"\nevery = 10\n";
  return s.str();
}

}  // namespace loom::test
