// safetensors.h: our own reader and writer of the safetensors format (writes are atomic:
// engine/io/atomic_file.h).
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

// metadata[key] as a positive int written in decimal digits and nothing else (no sign, space,
// suffix or overflow); 0 when the key is absent. Anything else is a UserError naming `path`.
int metadata_positive_int(const StFile& f, const std::string& key, const std::string& path);

// Writes the file (temporary name, fsync, rename). Tensor data is aligned to 8 bytes
// (header padded with spaces, as the format allows).
void write_safetensors(const std::string& path, const StFile& file);
// Reads and validates; every problem (missing, truncated, bad JSON, bad offsets, unknown
// dtype, size mismatch) is a UserError naming the file.
StFile read_safetensors(const std::string& path);

}  // namespace loom
