// atomic_file.h: crash-safe files and folders: a reader sees the old contents or the new,
// never a torn file. Used by checkpoints, shards, tokenizer files and the run folder.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace loom {

// Crash-safe folders. A checkpoint is written into "<dir>.tmp-<pid>", each file fsynced,
// the folder fsynced and renamed to its final name, then its parent fsynced.
// fsync_file / fsync_dir throw UserError naming the path on failure.
void fsync_file(const std::string& path);
void fsync_dir(const std::string& path);
// Writes `contents` to `path` atomically (temporary file, fsync, rename, fsync parent).
void write_file_atomic(const std::string& path, const std::string& contents);
// Points the symlink `link` at `target` atomically (new symlink under a temporary name,
// then rename over the old one).
void replace_symlink(const std::string& link, const std::string& target);
// Renames a fully written temporary folder to `final_dir` (replacing an older one of the
// same name) and fsyncs the parent.
void commit_dir(const std::string& tmp_dir, const std::string& final_dir);

// A file that appears under its final name only once it is complete and on disk: written to a
// fresh temporary sibling (created with O_EXCL | O_NOFOLLOW, so a planted file or symlink of
// that name is never opened or followed), then commit(): fsync, rename over `path`, fsync of
// the folder. Without commit() the temporary file is removed: a crash or an error leaves the
// old file (or none) under `path`, never a torn one. A header written first can be patched
// (pwrite_at) once the rest is streamed. Errors are UserErrors naming `path`.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  void write(const void* data, size_t n);
  void pwrite_at(uint64_t offset, const void* data, size_t n);
  void commit();
  const std::string& path() const { return path_; }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

// A piece of a file's contents, for write_chunks_atomic.
struct FileChunk {
  const void* data;
  size_t size;
};
// An AtomicFile holding the chunks, committed.
void write_chunks_atomic(const std::string& path, const std::vector<FileChunk>& chunks);
// A temporary name beside `path`, unique within the process and across processes.
std::string temp_sibling(const std::string& path, const char* tag);
// Removes what an interrupted writer left in `dir` (not recursively): files and folders whose
// names carry a temporary tag (".tmp-", ".tmp.", ".old-"). Returns how many were removed.
int remove_stale_temps(const std::string& dir);

}  // namespace loom
