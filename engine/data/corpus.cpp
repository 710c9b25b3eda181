// corpus.cpp: finding the KJV text, streaming corpus files, checking UTF-8 as it streams.
#include "engine/data/corpus.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

#include "core/check.h"
#include "engine/data/home.h"

namespace loom {

namespace fs = std::filesystem;

namespace {

std::string errno_text() { return std::strerror(errno); }

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

bool program_on_path(const char* name) {
  const char* path = std::getenv("PATH");
  std::string_view rest = path ? path : "/usr/local/bin:/usr/bin:/bin";
  while (true) {
    size_t colon = rest.find(':');
    std::string dir(rest.substr(0, colon));
    std::string cand = (dir.empty() ? std::string(".") : dir) + "/" + name;
    if (::access(cand.c_str(), X_OK) == 0) return true;
    if (colon == std::string_view::npos) return false;
    rest.remove_prefix(colon + 1);
  }
}

// Runs `bash script out` and returns its exit status (the script's messages go straight to
// our stderr). fork/exec rather than system() so no path is ever parsed by a shell.
int run_script(const std::string& script, const std::string& out) {
  std::fflush(nullptr);
  pid_t pid = ::fork();
  LOOM_USER_CHECK(pid >= 0, script, ": cannot start: ", errno_text());
  if (pid == 0) {
    ::execlp("bash", "bash", script.c_str(), out.c_str(), static_cast<char*>(nullptr));
    std::fprintf(stderr, "loom: cannot run bash: %s\n", std::strerror(errno));
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    LOOM_USER_CHECK(errno == EINTR, script, ": cannot wait for it: ", errno_text());
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

// The King James Bible as text: <root>/data/kjv.txt, fetched by scripts/fetch_kjv.sh the
// first time. Returns the text file's path.
std::string kjv_text_path() {
  const std::vector<fs::path> roots = loom_home_candidates();
  for (const fs::path& root : roots) {
    fs::path text = root / "data" / "kjv.txt";
    fs::path script = root / "scripts" / "fetch_kjv.sh";
    if (is_file(text)) return text.lexically_normal().string();
    if (!is_file(script)) continue;
    LOOM_USER_CHECK(program_on_path("bible"),
                    "kjv: the `bible` program is not installed (Debian packages bible-kjv and bible-kjv-text); "
                    "run scripts/install_deps.sh");
    const std::string script_s = script.lexically_normal().string();
    const std::string text_s = text.lexically_normal().string();
    std::fprintf(stderr, "loom: fetching the King James Bible with %s -> %s\n", script_s.c_str(), text_s.c_str());
    int rc = run_script(script_s, text_s);
    LOOM_USER_CHECK(rc == 0, script_s, ": failed with exit code ", rc, " (see its message above)");
    LOOM_USER_CHECK(is_file(text), script_s, ": finished but did not write ", text_s);
    return text_s;
  }
  std::string looked;
  for (const fs::path& r : roots) looked += (looked.empty() ? "" : ", ") + (r / "scripts").lexically_normal().string();
  user_error("kjv: cannot find scripts/fetch_kjv.sh (looked in ", looked,
             "); set LOOM_HOME to the loom source folder");
}

}  // namespace

std::string read_small_file(const std::string& path, const char* what, uint64_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  LOOM_USER_CHECK(fd >= 0, path, ": cannot open ", what, ": ", errno_text());
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    user_error(path, ": not a regular file (expected ", what, ")");
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    ::close(fd);
    user_error(path, ": ", st.st_size, " bytes, larger than any ", what, " (at most ", max_bytes, ")");
  }
  std::string out;
  out.resize(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (true) {
    if (got == out.size()) {  // the file may have grown
      if (out.size() >= max_bytes) {
        ::close(fd);
        user_error(path, ": grew past ", max_bytes, " bytes while being read (expected ", what, ")");
      }
      out.resize(out.size() + 65536);
    }
    ssize_t r = ::read(fd, out.data() + got, out.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      std::string e = errno_text();
      ::close(fd);
      user_error(path, ": cannot read ", what, ": ", e);
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  ::close(fd);
  out.resize(got);
  return out;
}

std::string corpus_text_path(const std::string& corpus) { return corpus == "kjv" ? kjv_text_path() : corpus; }

uint64_t stream_file(const std::string& path, const char* what, size_t chunk_bytes,
                     const std::function<size_t(std::string_view, bool)>& consume, const ByteProgress& progress,
                     size_t max_carry) {
  LOOM_CHECK(chunk_bytes > 0, "stream_file: chunk_bytes 0");
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  LOOM_USER_CHECK(fd >= 0, path, ": cannot open ", what, ": ", errno_text());
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  LOOM_USER_CHECK(::fstat(fd, &st) == 0 && S_ISREG(st.st_mode), path, ": not a regular file (expected ", what, ")");
  const uint64_t total = static_cast<uint64_t>(st.st_size);
  LOOM_USER_CHECK(total > 0, path, ": ", what, " is empty");
  (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);

  std::string buf;  // carried rest + the chunk just read
  uint64_t read_total = 0;
  bool eof = false;
  while (!eof || !buf.empty()) {
    // Top the buffer up by one chunk (a read may return less; loop until full or EOF).
    const size_t want = buf.size() + chunk_bytes;
    size_t have = buf.size();
    buf.resize(want);
    while (have < want && !eof) {
      ssize_t r = ::read(fd, buf.data() + have, want - have);
      if (r < 0 && errno == EINTR) continue;
      LOOM_USER_CHECK(r >= 0, path, ": cannot read ", what, ": ", errno_text());
      if (r == 0) eof = true;
      have += static_cast<size_t>(r);
      read_total += static_cast<uint64_t>(r);
    }
    buf.resize(have);
    if (buf.empty()) break;
    const bool last = eof || buf.size() >= max_carry;
    const size_t used = consume(buf, last);
    LOOM_CHECK(used <= buf.size() && (!last || used == buf.size()), "stream_file: consumer used ", used, " of ",
               buf.size(), " bytes (at_end ", last, ")");
    buf.erase(0, used);
    if (progress) progress(read_total - buf.size(), std::max(total, read_total));
  }
  LOOM_USER_CHECK(read_total > 0, path, ": ", what, " is empty");
  return read_total;
}

size_t first_invalid_utf8(std::string_view s, bool partial_ok, size_t* complete) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  if (complete) *complete = n;
  size_t i = 0;
  while (i < n) {
    unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07;
    } else {
      return i;
    }
    const size_t avail = std::min(len, n - i);
    for (size_t k = 1; k < avail; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if (avail < len) {
      // Cut off by the end of s. (An overlong or out-of-range start is caught when the rest
      // arrives: the check below runs on the whole character.)
      if (!partial_ok) return i;
      if (complete) *complete = i;
      return std::string_view::npos;
    }
    static constexpr uint32_t kMinForLen[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMinForLen[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += len;
  }
  return std::string_view::npos;
}

void Utf8Validator::feed(std::string_view bytes, bool at_end) {
  // Only the unfinished character is copied; the bulk is checked in place.
  std::string joined;
  std::string_view s = bytes;
  if (!tail_.empty()) {
    joined = tail_;
    joined.append(bytes);
    s = joined;
  }
  size_t complete = 0;
  const size_t bad = first_invalid_utf8(s, !at_end, &complete);
  if (bad != std::string_view::npos) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02X", static_cast<unsigned char>(s[bad]));
    user_error(path_, ": not UTF-8 text (invalid byte ", hex, " at offset ", offset_ + bad, ")");
  }
  offset_ += complete;
  tail_.assign(s.substr(complete));
}

}  // namespace loom
