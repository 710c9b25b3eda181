// atomic_file.cpp: the POSIX plumbing (fsync, atomic rename, symlink swap, folder swap) that
// makes checkpoints and every other file loom writes crash-safe.
#include "engine/io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/check.h"
#include "engine/io/fd.h"

namespace loom {

namespace {

namespace fs = std::filesystem;

std::string errno_text(int err) { return std::strerror(err); }

[[noreturn]] void sys_error(const std::string& path, const char* what, int err) {
  user_error(path, ": ", what, ": ", errno_text(err));
}

std::string parent_of(const std::string& path) {
  std::string parent = fs::path(path).parent_path().string();
  return parent.empty() ? std::string(".") : parent;
}

void write_all(int fd, const std::string& path, const void* data, size_t n) {
  const auto w = [&](char* p, size_t k, uint64_t) { return ::write(fd, p, k); };
  if (transfer(const_cast<void*>(data), n, 0, w) != n) sys_error(path, "cannot write", errno ? errno : EIO);
}

}  // namespace

// Unique within the process as well as across processes, so two writers of the same
// path in one process (say a test and a background saver) cannot share a temp file.
std::string temp_sibling(const std::string& path, const char* tag) {
  static std::atomic<uint64_t> counter{0};
  return detail::concat(path, tag, ::getpid(), "-", counter.fetch_add(1));
}

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  // A fresh name each try: O_EXCL refuses an existing file (a stale one, or one planted to
  // redirect the write) and O_NOFOLLOW a symlink in its place.
  for (int attempt = 0; attempt < 16 && fd_ < 0; ++attempt) {
    tmp_ = temp_sibling(path_, ".tmp-");
    fd_ = ::open(tmp_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd_ < 0 && errno != EEXIST) sys_error(path_, "cannot create temporary file", errno);
  }
  if (fd_ < 0) sys_error(path_, "cannot create temporary file", EEXIST);
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicFile::write(const void* data, size_t n) { write_all(fd_, path_, data, n); }

void AtomicFile::pwrite_at(uint64_t offset, const void* data, size_t n) {
  const auto w = [&](char* p, size_t k, uint64_t o) { return ::pwrite(fd_, p, k, static_cast<off_t>(o)); };
  if (transfer(const_cast<void*>(data), n, offset, w) != n) sys_error(path_, "cannot write", errno ? errno : EIO);
}

void AtomicFile::commit() {
  if (::fsync(fd_) != 0) sys_error(path_, "cannot fsync", errno);
  const int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) sys_error(path_, "cannot close", errno);  // a deferred write error (NFS)
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) sys_error(path_, "cannot rename temporary file into place", errno);
  committed_ = true;
  fsync_dir(parent_of(path_));
}

void write_chunks_atomic(const std::string& path, const std::vector<FileChunk>& chunks) {
  AtomicFile f(path);
  for (const FileChunk& c : chunks) f.write(c.data, c.size);
  f.commit();
}

int remove_stale_temps(const std::string& dir) {
  int removed = 0;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.find(".tmp-") == std::string::npos && name.find(".tmp.") == std::string::npos &&
        name.find(".old-") == std::string::npos)
      continue;
    std::error_code rm;
    fs::remove_all(it->path(), rm);  // a symlink is removed, never followed
    removed += !rm;
  }
  return removed;
}

void fsync_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) sys_error(path, "cannot open for fsync", errno);
  if (::fsync(fd.get()) != 0) sys_error(path, "cannot fsync", errno);
}

void fsync_dir(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) sys_error(path, "cannot open directory for fsync", errno);
  // Some file systems cannot fsync a directory and say EINVAL; there is nothing more
  // we could do for durability there, so that is not an error.
  if (::fsync(fd.get()) != 0 && errno != EINVAL) sys_error(path, "cannot fsync directory", errno);
}

void write_file_atomic(const std::string& path, const std::string& contents) {
  write_chunks_atomic(path, {{contents.data(), contents.size()}});
}

void replace_symlink(const std::string& link, const std::string& target) {
  const std::string tmp = temp_sibling(link, ".tmp-");
  if (::symlink(target.c_str(), tmp.c_str()) != 0) sys_error(link, "cannot create symlink", errno);
  // rename() replaces the old link in one step, so readers see the old target or the
  // new one, never a missing link.
  if (::rename(tmp.c_str(), link.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    sys_error(link, "cannot replace symlink", err);
  }
  fsync_dir(parent_of(link));
}

void commit_dir(const std::string& tmp_dir, const std::string& final_dir) {
  struct stat st {};
  if (::stat(tmp_dir.c_str(), &st) != 0) sys_error(tmp_dir, "cannot commit folder", errno);
  if (!S_ISDIR(st.st_mode)) user_error(tmp_dir, ": cannot commit folder: not a directory");
  // The writer should already have synced it; once more is cheap next to the data.
  fsync_dir(tmp_dir);

  const std::string tmp_parent = parent_of(tmp_dir), final_parent = parent_of(final_dir);
  struct stat fst {};
  const bool had_old = ::lstat(final_dir.c_str(), &fst) == 0;
  std::string old_dir;  // where the replaced folder ends up, to be deleted
  if (!had_old) {
    if (::rename(tmp_dir.c_str(), final_dir.c_str()) != 0) sys_error(final_dir, "cannot rename folder into place", errno);
  } else if (::renameat2(AT_FDCWD, tmp_dir.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) == 0) {
    // An atomic swap: at every instant final_dir is either the whole old checkpoint or
    // the whole new one. The old one now sits under tmp_dir's name.
    old_dir = tmp_dir;
  } else if (errno == EINVAL || errno == ENOSYS) {
    // No RENAME_EXCHANGE on this file system: move the old one aside first. A crash
    // between the two renames leaves the old checkpoint whole under old_dir.
    old_dir = temp_sibling(final_dir, ".old-");
    if (::rename(final_dir.c_str(), old_dir.c_str()) != 0) sys_error(final_dir, "cannot move old folder aside", errno);
    if (::rename(tmp_dir.c_str(), final_dir.c_str()) != 0) {
      const int err = errno;
      ::rename(old_dir.c_str(), final_dir.c_str());
      sys_error(final_dir, "cannot rename folder into place", err);
    }
  } else {
    sys_error(final_dir, "cannot swap folder into place", errno);
  }
  fsync_dir(final_parent);
  if (tmp_parent != final_parent) fsync_dir(tmp_parent);

  if (!old_dir.empty()) {
    std::error_code ec;
    fs::remove_all(old_dir, ec);
    if (ec) user_error(old_dir, ": cannot remove replaced folder: ", ec.message());
  }
}

}  // namespace loom
