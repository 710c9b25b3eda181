// safetensors.cpp: our own reader and writer of the safetensors format (the atomic write
// itself is engine/io/atomic_file.cpp).
//
// Checkpoints are the one place where a bug silently destroys days of training, so the
// reader trusts nothing in the file: every length, offset and type is checked before a
// byte of tensor data is read, and every problem is a one-line UserError naming the file.
// The writer never leaves a half-written file under the final name: it writes a
// temporary sibling, fsyncs it, renames it over the target and fsyncs the parent.
#include "engine/io/safetensors.h"

#include "engine/io/atomic_file.h"
#include "engine/io/fd.h"
#include "engine/io/json_guard.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "core/check.h"

namespace loom {

// The format stores raw little-endian bytes and we hand them through untouched; a
// big-endian host would need byte swapping that nobody has written.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

namespace {

using ordered_json = nlohmann::ordered_json;

std::string errno_text(int err) { return std::strerror(err); }

[[noreturn]] void sys_error(const std::string& path, const char* what, int err) {
  user_error(path, ": ", what, ": ", errno_text(err));
}

// Returns false on end of file before n bytes, so the caller can name the truncation.
bool pread_all(int fd, const std::string& path, void* data, size_t n, uint64_t offset) {
  const auto r = [&](char* p, size_t k, uint64_t o) { return ::pread(fd, p, k, static_cast<off_t>(o)); };
  const size_t got = transfer(data, n, offset, r);
  if (got < n && errno) sys_error(path, "cannot read", errno);
  return got == n;
}

// The reference implementation's bound on the header: no real file comes near it, and it
// keeps a lying length prefix from costing more than this before the JSON is even read.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct DtypeInfo {
  const char* name;
  size_t size;
};

// Only whole-byte types: the sub-byte float formats (F4, F6) pack several values per
// byte and have no numel*size layout we could validate.
constexpr DtypeInfo kDtypes[] = {
    {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"F8_E8M0", 1},
    {"U16", 2},  {"I16", 2}, {"F16", 2}, {"BF16", 2},    {"U32", 4},     {"I32", 4},
    {"F32", 4},  {"U64", 8}, {"I64", 8}, {"F64", 8},     {"C64", 8},
};

// numel * elem_size, or false if it does not fit in 64 bits (a hostile shape must not
// wrap around to a small size that then passes the offset check).
bool checked_nbytes(const std::vector<int64_t>& shape, size_t elem_size, uint64_t* out) {
  unsigned __int128 n = elem_size;
  for (int64_t d : shape) {
    if (d < 0) return false;
    n *= static_cast<uint64_t>(d);
    if (n > std::numeric_limits<uint64_t>::max()) return false;
  }
  *out = static_cast<uint64_t>(n);
  return true;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

}  // namespace

const StTensor* StFile::find(const std::string& name) const {
  for (const StTensor& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

size_t st_dtype_size(const std::string& dtype) {
  for (const DtypeInfo& d : kDtypes)
    if (dtype == d.name) return d.size;
  return 0;
}

int metadata_positive_int(const StFile& f, const std::string& key, const std::string& path) {
  auto it = f.metadata.find(key);
  if (it == f.metadata.end()) return 0;
  const std::string& s = it->second;
  int v = 0;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  LOOM_USER_CHECK(!s.empty() && r.ec == std::errc() && r.ptr == s.data() + s.size() && v > 0, path, ": metadata '",
                  brief(key), "' is '", brief(s, 24), "', not a positive integer");
  return v;
}

void write_safetensors(const std::string& path, const StFile& file) {
  ordered_json header = ordered_json::object();
  if (!file.metadata.empty()) {
    ordered_json meta = ordered_json::object();
    for (const auto& [k, v] : file.metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  // Tensors from the engine are a bug if malformed, not bad user input.
  uint64_t offset = 0;
  std::set<std::string> names;
  for (const StTensor& t : file.tensors) {
    const size_t esize = st_dtype_size(t.dtype);
    LOOM_CHECK(esize != 0, "write_safetensors: tensor ", t.name, " has unknown dtype ", t.dtype);
    LOOM_CHECK(t.name != "__metadata__", "write_safetensors: reserved tensor name __metadata__");
    LOOM_CHECK(names.insert(t.name).second, "write_safetensors: duplicate tensor name ", t.name);
    uint64_t nbytes = 0;
    LOOM_CHECK(checked_nbytes(t.shape, esize, &nbytes), "write_safetensors: tensor ", t.name, " has bad shape ",
               shape_text(t.shape));
    LOOM_CHECK(nbytes == t.data.size(), "write_safetensors: tensor ", t.name, " holds ", t.data.size(),
               " bytes but shape ", shape_text(t.shape), " of ", t.dtype, " needs ", nbytes);
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception&) {
    // Metadata values can come from user config text; JSON demands UTF-8.
    user_error(path, ": tensor name or metadata is not valid UTF-8");
  }
  // Spaces are legal JSON whitespace; padding makes every tensor start 8-byte aligned
  // for readers that mmap the file.
  text.append((8 - text.size() % 8) % 8, ' ');
  unsigned char len[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));

  std::vector<FileChunk> chunks;
  chunks.reserve(file.tensors.size() + 2);
  chunks.push_back({len, sizeof len});
  chunks.push_back({text.data(), text.size()});
  for (const StTensor& t : file.tensors) chunks.push_back({t.data.data(), t.data.size()});
  write_chunks_atomic(path, chunks);
}

StFile read_safetensors(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) sys_error(path, "cannot open", errno);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) sys_error(path, "cannot stat", errno);
  if (!S_ISREG(st.st_mode)) user_error(path, ": not a regular file");
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8)
    user_error(path, ": file is ", file_size, " bytes, shorter than the 8-byte safetensors header length");

  unsigned char len[8];
  if (!pread_all(fd.get(), path, len, 8, 0)) user_error(path, ": unexpected end of file in header length");
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= static_cast<uint64_t>(len[i]) << (8 * i);
  if (header_len > file_size - 8)
    user_error(path, ": header length ", header_len, " exceeds the ", file_size - 8, " bytes after it");
  if (header_len > kMaxHeaderBytes)
    user_error(path, ": header length ", header_len, " exceeds the format's limit of ", kMaxHeaderBytes, " bytes");
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = file_size - data_start;

  std::string text(header_len, '\0');
  if (!pread_all(fd.get(), path, text.data(), text.size(), 8)) user_error(path, ": unexpected end of file in header");
  check_json_depth(text, path, "header");

  // nlohmann keeps the last of duplicate keys silently; a duplicate tensor name would
  // hide a tensor, so the parse callback rejects duplicates in any object.
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  auto on_event = [&](int, ordered_json::parse_event_t ev, ordered_json& parsed) {
    using E = ordered_json::parse_event_t;
    if (ev == E::object_start) {
      open_objects.emplace_back();
    } else if (ev == E::object_end) {
      if (!open_objects.empty()) open_objects.pop_back();
    } else if (ev == E::key && !open_objects.empty()) {
      const std::string& k = parsed.get_ref<const std::string&>();
      if (!open_objects.back().insert(k).second && duplicate.empty()) duplicate = k;
    }
    return true;
  };
  ordered_json header;
  try {
    header = ordered_json::parse(text, on_event);
  } catch (const nlohmann::json::exception& e) {
    user_error(path, ": header is not valid JSON: ", json_error_text(e));
  }
  if (!duplicate.empty()) user_error(path, ": header has duplicate key \"", brief(duplicate), "\"");
  if (!header.is_object()) user_error(path, ": header is not a JSON object");

  StFile out;
  struct Region {
    uint64_t begin, end;
    size_t index;  // into out.tensors
  };
  std::vector<Region> regions;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) user_error(path, ": __metadata__ is not a JSON object");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) user_error(path, ": __metadata__ value of \"", brief(k), "\" is not a string");
        out.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string where = detail::concat(path, ": tensor \"", brief(name), "\"");
    if (!entry.is_object()) user_error(where, ": entry is not a JSON object");
    for (const char* key : {"dtype", "shape", "data_offsets"})
      if (!entry.contains(key)) user_error(where, ": missing \"", key, "\"");

    StTensor t;
    t.name = name;
    const auto& dtype = entry["dtype"];
    if (!dtype.is_string()) user_error(where, ": dtype is not a string");
    t.dtype = dtype.get<std::string>();
    const size_t esize = st_dtype_size(t.dtype);
    if (esize == 0) user_error(where, ": unknown dtype \"", brief(t.dtype), "\"");

    const auto& shape = entry["shape"];
    if (!shape.is_array()) user_error(where, ": shape is not an array");
    for (const auto& d : shape) {
      // is_number_unsigned rejects negatives, fractions and values beyond 64 bits.
      if (!d.is_number_unsigned() || d.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
        user_error(where, ": shape ", json_brief(shape), " is not a list of non-negative integers");
      t.shape.push_back(static_cast<int64_t>(d.get<uint64_t>()));
    }
    uint64_t nbytes = 0;
    if (!checked_nbytes(t.shape, esize, &nbytes)) user_error(where, ": shape ", json_brief(shape), " is too large");

    const auto& offs = entry["data_offsets"];
    if (!offs.is_array() || offs.size() != 2 || !offs[0].is_number_unsigned() || !offs[1].is_number_unsigned())
      user_error(where, ": data_offsets ", json_brief(offs), " is not a pair of non-negative integers");
    const uint64_t b = offs[0].get<uint64_t>(), e = offs[1].get<uint64_t>();
    if (b > e) user_error(where, ": data_offsets [", b, ",", e, "] begin after end");
    if (e > data_size)
      user_error(where, ": data_offsets [", b, ",", e, "] out of range: the data section has ", data_size, " bytes");
    if (e - b != nbytes)
      user_error(where, ": data_offsets [", b, ",", e, "] span ", e - b, " bytes but shape ", json_brief(shape), " of ",
                 t.dtype, " needs ", nbytes);
    regions.push_back({b, e, out.tensors.size()});
    out.tensors.push_back(std::move(t));
  }

  // Like the reference implementation we require the regions to tile the data section
  // exactly: an overlap means two tensors alias, a gap or tail means the file is not
  // what its header says (corrupt, or a polyglot file).
  // Sorting by (begin, end) puts an empty tensor before a non-empty one at the same
  // offset; equal regions keep header order.
  std::stable_sort(regions.begin(), regions.end(), [](const Region& x, const Region& y) {
    return x.begin != y.begin ? x.begin < y.begin : x.end < y.end;
  });
  uint64_t expected = 0;
  for (const Region& r : regions) {
    const std::string name = brief(out.tensors[r.index].name);
    if (r.begin < expected)
      user_error(path, ": tensor \"", name, "\" data_offsets [", r.begin, ",", r.end,
                 "] overlap another tensor's data (which ends at ", expected, ")");
    if (r.begin > expected)
      user_error(path, ": tensor \"", name, "\" data_offsets [", r.begin, ",", r.end, "] leave a gap of ",
                 r.begin - expected, " bytes before them");
    expected = r.end;
  }
  if (expected != data_size)
    user_error(path, ": data section has ", data_size - expected, " trailing bytes not covered by any tensor");

  // Only now, with every size proven to fit in the file, allocate and read.
  std::vector<StTensor> ordered;
  ordered.reserve(regions.size());
  for (const Region& r : regions) {
    StTensor& t = out.tensors[r.index];
    t.data.resize(r.end - r.begin);
    if (!pread_all(fd.get(), path, t.data.data(), t.data.size(), data_start + r.begin))
      user_error(path, ": unexpected end of file in tensor \"", brief(t.name), "\"");
    ordered.push_back(std::move(t));
  }
  out.tensors = std::move(ordered);
  return out;
}

}  // namespace loom
