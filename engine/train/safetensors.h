// safetensors.h: our own reader and writer of the safetensors format, and crash-safe
// checkpoint folders.
//
// Format: 8-byte little-endian header length N, then N bytes of JSON
//   {"__metadata__": {"k": "v", ...}, "name": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, ...}
// then the raw little-endian data; offsets are relative to the end of the header.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace loom {

struct StTensor {
  std::string name;
  std::string dtype;            // "F32", "I32", "U64", "BF16", "F16", "I64", "U8" ...
  std::vector<int64_t> shape;
  std::vector<unsigned char> data;  // raw bytes, size = numel * dtype size
};

struct StFile {
  std::map<std::string, std::string> metadata;
  std::vector<StTensor> tensors;  // in file order
  const StTensor* find(const std::string& name) const;
};

size_t st_dtype_size(const std::string& dtype);  // 0 if unknown

// Writes the file (temporary name, fsync, rename). Tensor data is aligned to 8 bytes
// (header padded with spaces, as the format allows).
void write_safetensors(const std::string& path, const StFile& file);
// Reads and validates; every problem (missing, truncated, bad JSON, bad offsets, unknown
// dtype, size mismatch) is a UserError naming the file.
StFile read_safetensors(const std::string& path);

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

}  // namespace loom
