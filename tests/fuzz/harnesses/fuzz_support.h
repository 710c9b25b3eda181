// fuzz_support.h: what every libFuzzer harness of loom shares: files on a private scratch
// folder (most parsers take paths), inputs made of several files, and the one contract every
// parser keeps on any input: it returns, or it throws a UserError whose message is short;
// anything else (a crash, a sanitizer report, another exception, a huge allocation, a hang)
// is a finding.
#pragma once
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/check.h"

namespace loom::fuzz {

// Several files in one input, joined by this line (text-friendly, so that the mutator can cut
// and splice it; seed_corpus.cpp makes sure no seed file holds it).
inline constexpr std::string_view kPartSeparator = "\n--8<--\n";

// The parts of an input: always `n` of them, missing ones empty.
inline std::vector<std::string> split_parts(const uint8_t* data, size_t size, size_t n) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> parts;
  while (parts.size() + 1 < n) {
    const size_t at = in.find(kPartSeparator);
    if (at == std::string_view::npos) break;
    parts.emplace_back(in.substr(0, at));
    in.remove_prefix(at + kPartSeparator.size());
  }
  parts.emplace_back(in);
  parts.resize(n);
  return parts;
}

inline std::string join_parts(const std::vector<std::string>& parts) {
  std::string s;
  for (size_t i = 0; i < parts.size(); ++i) s += (i ? std::string(kPartSeparator) : "") + parts[i];
  return s;
}

// A scratch folder for this process (tmpfs when there is one), removed when it exits.
struct Scratch {
  std::string dir;
  Scratch() {
    namespace fs = std::filesystem;
    const std::string base = fs::is_directory("/dev/shm") ? "/dev/shm" : fs::temp_directory_path().string();
    dir = base + "/loom-fuzz-XXXXXX";
    if (!::mkdtemp(dir.data())) {
      std::perror("mkdtemp");
      std::abort();
    }
  }
  ~Scratch() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};
inline const std::string& scratch() {
  static const Scratch s;
  return s.dir;
}

// Replaces `scratch()/name` with `bytes`; returns its path. An empty name part of a folder
// ("run/model.safetensors") creates the folder.
inline std::string put_file(const std::string& name, std::string_view bytes) {
  const std::string path = scratch() + "/" + name;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) {
    std::perror(path.c_str());
    std::abort();
  }
  return path;
}

// A folder `scratch()/folder` holding the input's parts as the files `names` (in order);
// returns its path.
inline std::string put_folder(const uint8_t* data, size_t size, const std::string& folder,
                              const std::vector<std::string>& names) {
  const auto parts = split_parts(data, size, names.size());
  for (size_t i = 0; i < names.size(); ++i) put_file(folder + "/" + names[i], parts[i]);
  return scratch() + "/" + folder;
}

// Longer than any message of loom needs: the parsers quote untrusted names and values cut short.
inline constexpr size_t kMaxMessageBytes = 2048;

[[noreturn]] inline void finding(const char* what, const std::string& detail) {
  std::fprintf(stderr, "loom fuzz: %s: %s\n", what, detail.c_str());
  std::fflush(stderr);
  std::abort();
}

// Runs one parse. A UserError is the expected answer to bad input (its message must stay
// short); returns whether `f` succeeded, so that a harness can check what it returned.
inline bool accepts(const std::function<void()>& f) {
  try {
    f();
    return true;
  } catch (const UserError& e) {
    const std::string_view msg = e.what();
    if (msg.size() > kMaxMessageBytes) finding("a UserError message is too long", std::string(msg.substr(0, 300)) + "...");
    // LOOM_FUZZ_SHOW=1: print what an input was refused for (checking seeds, replaying one input).
    static const bool show = std::getenv("LOOM_FUZZ_SHOW") != nullptr;
    if (show) std::fprintf(stderr, "loom fuzz: refused: %s\n", e.what());
    return false;
  } catch (const std::exception& e) {
    // launch/main.cpp reports these as internal errors and aborts: a parser bug.
    finding("an exception other than UserError escaped", e.what());
  }
}

// A property the harness checks on an accepted input (LOOM_CHECK aborts the same way).
inline void require(bool ok, const std::string& what) {
  if (!ok) finding("property violated", what);
}

}  // namespace loom::fuzz
