// corpus.h: text corpora for `loom prepare` and `loom tokenizer train`: resolving "kjv", and
// streaming a file of any size in chunks.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace loom {

// "kjv" -> <loom home>/data/kjv.txt (written by scripts/fetch_kjv.sh the first time);
// anything else is a path, returned unchanged.
std::string corpus_text_path(const std::string& corpus);

// Reads a whole regular file of at most max_bytes (checked before allocating, and again if it
// grows while being read). Errors are UserErrors naming the file and saying what `what` it was
// meant to be.
std::string read_small_file(const std::string& path, const char* what, uint64_t max_bytes);

// Called with the bytes read so far and the file's size.
using ByteProgress = std::function<void(uint64_t done, uint64_t total)>;

// Streams a regular file through `consume` in chunks of about chunk_bytes. consume(text,
// at_end) returns how many leading bytes it used; the rest is kept and comes back in front of
// the next chunk. at_end is true on the last call (and then everything must be used). If a
// carried rest grows past max_carry bytes, consume is called with at_end true for it (one
// pre-token longer than that gets split). Missing, unreadable or empty file: UserError naming
// it as `what`. Returns the file's size.
uint64_t stream_file(const std::string& path, const char* what, size_t chunk_bytes,
                     const std::function<size_t(std::string_view, bool)>& consume, const ByteProgress& progress = {},
                     size_t max_carry = size_t{64} << 20);

// Incremental UTF-8 check of a stream: feed consecutive pieces; a character may straddle two
// of them. Overlongs, surrogates and > U+10FFFF count as invalid. UserError naming `path` and
// the byte's offset in the stream.
class Utf8Validator {
 public:
  explicit Utf8Validator(std::string path) : path_(std::move(path)) {}
  void feed(std::string_view bytes, bool at_end);

 private:
  std::string path_;
  std::string tail_;  // an unfinished character from the previous piece
  uint64_t offset_ = 0;  // stream offset of tail_[0] (or of the next byte when tail_ is empty)
};

// Offset of the first byte that breaks UTF-8 in s, or npos. With `partial_ok`, a character
// cut off by the end of s is not an error: *complete (if given) receives where it starts.
size_t first_invalid_utf8(std::string_view s, bool partial_ok = false, size_t* complete = nullptr);

}  // namespace loom
