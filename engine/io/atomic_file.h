// atomic_file.h: crash-safe files and folders: a reader sees the old contents or the new,
// never a torn file. Used by checkpoints, shards, tokenizer files and the run folder.
#pragma once
#include <cstddef>
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

// A piece of a file's contents, for write_chunks_atomic.
struct FileChunk {
  const void* data;
  size_t size;
};
// The one atomic-write path: a temporary sibling, fsync, rename, fsync of the parent; the
// temporary file is removed on any failure. Errors are UserErrors naming `path`.
void write_chunks_atomic(const std::string& path, const std::vector<FileChunk>& chunks);
// A temporary name beside `path`, unique within the process and across processes.
std::string temp_sibling(const std::string& path, const char* tag);

}  // namespace loom
