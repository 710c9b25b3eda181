// fd.h: a file descriptor owned by a scope, and the one loop that moves a whole buffer through
// read/write/pread/pwrite/recv/send however many calls, short counts and EINTRs it takes -
// for files and sockets alike.
#pragma once
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>

namespace loom {

// Closes on scope exit, so that every early return or throw releases the descriptor.
class UniqueFd {
 public:
  explicit UniqueFd(int fd = -1) : fd_(fd) {}
  ~UniqueFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  // close() can report a deferred write error (NFS), so writers close explicitly and check.
  int close() {
    const int r = ::close(fd_);
    fd_ = -1;
    return r;
  }

 private:
  int fd_;
};

// Moves n bytes from or to p through `step(ptr, left, offset)`, a read/write-shaped call that
// returns the bytes it moved, 0 at an end, or -1 with errno. Returns the bytes moved: fewer
// than n means an end came first (errno 0) or an error (errno set).
template <typename Step>
size_t transfer(void* p, size_t n, uint64_t offset, Step step) {
  char* c = static_cast<char*>(p);
  size_t done = 0;
  while (done < n) {
    errno = 0;
    const ssize_t r = step(c + done, n - done, offset + done);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    done += static_cast<size_t>(r);
  }
  return done;
}

}  // namespace loom
