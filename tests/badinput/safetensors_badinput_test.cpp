// safetensors_badinput_test.cpp: every malformed checkpoint file, and every failing file
// operation, must give a one-line loom::UserError naming the path, never a crash.
//
// The bad files are made by breaking one thing in a valid, randomly generated file, so
// each case shows that the reader notices exactly that problem. A fuzz pass at the end
// corrupts random bytes and truncates at random lengths: the reader may accept a file
// whose damage happens to be harmless, but it must never crash or fail any other way.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/rng.h"
#include "engine/io/atomic_file.h"
#include "engine/io/safetensors.h"
#include "tests/support/helpers.h"

namespace loom::test {
using ordered_json = nlohmann::ordered_json;

namespace {

// Runs fn and checks the error contract: a UserError, one line, starting with the path,
// mentioning the problem.
void expect_path_error(const std::string& path, const std::function<void()>& fn, const std::string& problem) {
  SCOPED_TRACE(path + " (" + problem + ")");
  expect_user_error(fn, {problem}, path + ": ");
}

class SafetensorsBadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    // A valid file with random tensors; the cases below break it one way at a time.
    Rng rng(1234);
    const std::vector<std::string> dtypes = {"F32", "BF16", "I64", "U8", "I32"};
    for (int i = 0; i < 4; ++i) {
      StTensor t;
      t.name = "layer" + std::to_string(i) + ".w";
      t.dtype = dtypes[rng.below(dtypes.size())];
      t.shape = {1 + static_cast<int64_t>(rng.below(5)), 1 + static_cast<int64_t>(rng.below(5))};
      t.data.resize(static_cast<size_t>(t.shape[0] * t.shape[1]) * loom::st_dtype_size(t.dtype));
      for (auto& b : t.data) b = static_cast<unsigned char>(rng.next_u64());
      good_.tensors.push_back(std::move(t));
    }
    good_.metadata["step"] = std::to_string(rng.below(100000));
    loom::write_safetensors(path("good.safetensors"), good_);
    const std::string bytes = read_bytes(path("good.safetensors"));
    uint64_t n = 0;
    for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
    header_ = ordered_json::parse(bytes.substr(8, n));
    data_ = bytes.substr(8 + n);
  }
  void TearDown() override {
    // Make everything removable again after the permission tests (dir_ then goes).
    std::error_code ec;
    for (const auto& e : fs::recursive_directory_iterator(dir_.str(), ec))
      fs::permissions(e.path(), fs::perms::owner_all, fs::perm_options::add, ec);
  }
  std::string path(const std::string& name) const { return dir_ / name; }

  // Writes header + data as a file (compact JSON, no padding) and expects the reader to
  // reject it with `problem` in the message.
  void expect_bad(const std::string& name, const std::string& header_text, const std::string& data,
                  const std::string& problem) {
    SCOPED_TRACE(name);
    const std::string p = path(name + ".safetensors");
    write_bytes(p, le64(header_text.size()) + header_text + data);
    expect_path_error(p, [&] { loom::read_safetensors(p); }, problem);
  }
  void expect_bad(const std::string& name, const ordered_json& header, const std::string& problem) {
    expect_bad(name, header.dump(), data_, problem);
  }
  const std::string& first_tensor() const { return good_.tensors[0].name; }

  TempDir dir_;
  StFile good_;
  ordered_json header_;
  std::string data_;
};

}  // namespace

TEST_F(SafetensorsBadInput, BaselineFileIsValid) {
  // Without this, every "bad" case below could pass for the wrong reason.
  const std::string p = path("rebuilt.safetensors");
  write_bytes(p, le64(header_.dump().size()) + header_.dump() + data_);
  const StFile g = loom::read_safetensors(p);
  ASSERT_EQ(g.tensors.size(), good_.tensors.size());
  for (size_t i = 0; i < g.tensors.size(); ++i) EXPECT_EQ(g.tensors[i].data, good_.tensors[i].data);
}

TEST_F(SafetensorsBadInput, MissingFile) {
  const std::string p = path("nope.safetensors");
  expect_path_error(p, [&] { loom::read_safetensors(p); }, "cannot open");
}

TEST_F(SafetensorsBadInput, DirectoryInsteadOfFile) {
  fs::create_directory(path("adir"));
  expect_path_error(path("adir"), [&] { loom::read_safetensors(path("adir")); }, "not a regular file");
}

TEST_F(SafetensorsBadInput, UnreadableFile) {
  if (::geteuid() == 0) GTEST_SKIP() << "root ignores file permissions";
  const std::string p = path("good.safetensors");
  fs::permissions(p, fs::perms::none);
  expect_path_error(p, [&] { loom::read_safetensors(p); }, "cannot open");
}

TEST_F(SafetensorsBadInput, ShorterThanEightBytes) {
  Rng rng(1);
  for (size_t n = 0; n < 8; ++n) {
    std::string bytes(n, '\0');
    for (auto& c : bytes) c = static_cast<char>(rng.next_u64());
    const std::string p = path("short" + std::to_string(n) + ".safetensors");
    write_bytes(p, bytes);
    expect_path_error(p, [&] { loom::read_safetensors(p); }, "shorter than");
  }
}

TEST_F(SafetensorsBadInput, HeaderLengthLargerThanFile) {
  const std::string text = header_.dump();
  const std::string p = path("len.safetensors");
  for (uint64_t n : {uint64_t(text.size() + data_.size() + 1), uint64_t(1) << 40, ~uint64_t(0)}) {
    SCOPED_TRACE(n);
    write_bytes(p, le64(n) + text + data_);
    expect_path_error(p, [&] { loom::read_safetensors(p); }, "header length");
  }
}

TEST_F(SafetensorsBadInput, InvalidJson) {
  const std::string text = header_.dump();
  expect_bad("trunc", text.substr(0, text.size() / 2), data_, "not valid JSON");
  expect_bad("garbage", std::string(text.size(), 'x'), data_, "not valid JSON");
  expect_bad("empty", "", data_, "not valid JSON");
  expect_bad("trailing", text + "}", data_, "not valid JSON");
  expect_bad("notobject", "[1,2,3]", data_, "not a JSON object");
  expect_bad("string", "\"hello\"", data_, "not a JSON object");
}

TEST_F(SafetensorsBadInput, DuplicateTensorName) {
  // The JSON text repeats a key; a lenient parser would silently keep one of the two.
  std::string text = header_.dump();
  const std::string entry = "\"" + first_tensor() + "\":" + header_[first_tensor()].dump();
  text.insert(text.size() - 1, "," + entry);
  expect_bad("dup", text, data_, "duplicate key");
}

TEST_F(SafetensorsBadInput, MissingFields) {
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    ordered_json h = header_;
    h[first_tensor()].erase(key);
    expect_bad(std::string("missing_") + key, h, key);
  }
  ordered_json h = header_;
  h[first_tensor()] = 5;
  expect_bad("entry_not_object", h, "not a JSON object");
}

TEST_F(SafetensorsBadInput, WrongFieldTypes) {
  ordered_json h = header_;
  h[first_tensor()]["dtype"] = 4;
  expect_bad("dtype_number", h, "dtype");

  h = header_;
  h[first_tensor()]["shape"] = "2x3";
  expect_bad("shape_string", h, "shape");
  h = header_;
  h[first_tensor()]["shape"] = {2, -3};
  expect_bad("shape_negative", h, "shape");
  h = header_;
  h[first_tensor()]["shape"] = {2.5};
  expect_bad("shape_fraction", h, "shape");
  h = header_;
  h[first_tensor()]["shape"] = {uint64_t(1) << 40, uint64_t(1) << 40};
  expect_bad("shape_overflow", h, "too large");

  h = header_;
  h[first_tensor()]["data_offsets"] = {0};
  expect_bad("offsets_one", h, "data_offsets");
  h = header_;
  h[first_tensor()]["data_offsets"] = {0, 4, 8};
  expect_bad("offsets_three", h, "data_offsets");
  h = header_;
  h[first_tensor()]["data_offsets"] = {-4, 4};
  expect_bad("offsets_negative", h, "data_offsets");
  h = header_;
  h[first_tensor()]["data_offsets"] = "0-4";
  expect_bad("offsets_string", h, "data_offsets");

  h = header_;
  h["__metadata__"] = {1, 2};
  expect_bad("metadata_array", h, "__metadata__");
  h = header_;
  h["__metadata__"]["step"] = 12;
  expect_bad("metadata_number", h, "__metadata__");
}

TEST_F(SafetensorsBadInput, UnknownDtype) {
  for (const char* dtype : {"F33", "f32", "", "FLOAT", "F4"}) {
    ordered_json h = header_;
    h[first_tensor()]["dtype"] = dtype;
    expect_bad(std::string("dtype_") + dtype, h, "unknown dtype");
  }
}

TEST_F(SafetensorsBadInput, OffsetsOutOfRange) {
  // The last tensor's end moved past the data section (and its begin with it, so the
  // span still matches its shape).
  ordered_json h = header_;
  const std::string last = good_.tensors.back().name;
  auto offs = h[last]["data_offsets"].get<std::vector<uint64_t>>();
  h[last]["data_offsets"] = {offs[0] + 8, offs[1] + 8};
  expect_bad("past_end", h, "out of range");
  h[last]["data_offsets"] = {offs[1], offs[0]};
  expect_bad("reversed", h, "begin after end");
  // Truncating a valid file leaves the header pointing past the end.
  expect_bad("truncated", header_.dump(), data_.substr(0, data_.size() - 1), "out of range");
}

TEST_F(SafetensorsBadInput, OffsetsNotMatchingShape) {
  ordered_json h = header_;
  auto shape = h[first_tensor()]["shape"].get<std::vector<int64_t>>();
  shape[0] += 1;
  h[first_tensor()]["shape"] = shape;
  expect_bad("shape_bigger", h, "needs");
  h = header_;
  h[first_tensor()]["dtype"] = loom::st_dtype_size(good_.tensors[0].dtype) == 8 ? "F32" : "F64";
  expect_bad("dtype_size", h, "needs");
}

TEST_F(SafetensorsBadInput, OverlappingRegions) {
  // Two tensors of the same size, the second pointed at the first's bytes.
  ordered_json h = ordered_json::object();
  const uint64_t n = 4 * 3;
  h["a"] = {{"dtype", "F32"}, {"shape", {3}}, {"data_offsets", {0, n}}};
  h["b"] = {{"dtype", "F32"}, {"shape", {3}}, {"data_offsets", {0, n}}};
  h["c"] = {{"dtype", "F32"}, {"shape", {3}}, {"data_offsets", {n, 2 * n}}};
  expect_bad("same_region", h.dump(), std::string(3 * n, '\x01'), "overlap");
  h["b"]["dtype"] = "U8";
  h["b"]["shape"] = {n};
  h["b"]["data_offsets"] = {n / 2, n / 2 + n};
  expect_bad("partial_overlap", h.dump(), std::string(3 * n, '\x01'), "overlap");
}

TEST_F(SafetensorsBadInput, GapsAndTrailingBytes) {
  ordered_json h = ordered_json::object();
  h["a"] = {{"dtype", "U8"}, {"shape", {4}}, {"data_offsets", {0, 4}}};
  h["b"] = {{"dtype", "U8"}, {"shape", {4}}, {"data_offsets", {8, 12}}};
  expect_bad("gap", h.dump(), std::string(12, '\x02'), "gap");
  h["b"]["data_offsets"] = {4, 8};
  expect_bad("tail", h.dump(), std::string(12, '\x02'), "trailing");
}

// Random damage: the reader either accepts (damage in a harmless spot such as a padding
// space or tensor bytes) or throws UserError naming the file; never anything else.
TEST_F(SafetensorsBadInput, FuzzedFilesNeverCrash) {
  const std::string good = read_bytes(path("good.safetensors"));
  const std::string p = path("fuzz.safetensors");
  Rng rng(99);
  int rejected = 0;
  for (int iter = 0; iter < 400; ++iter) {
    std::string bytes = good;
    const int flips = 1 + static_cast<int>(rng.below(4));
    for (int k = 0; k < flips; ++k) {
      // Mostly hit the length and the header, where damage matters.
      const size_t limit = rng.below(4) == 0 ? bytes.size() : std::min<size_t>(bytes.size(), 8 + header_.dump().size());
      bytes[rng.below(limit)] = static_cast<char>(rng.next_u64());
    }
    write_bytes(p, bytes);
    try {
      loom::read_safetensors(p);
    } catch (const loom::UserError& e) {
      ++rejected;
      EXPECT_EQ(std::string(e.what()).rfind(p + ": ", 0), 0u) << e.what();
    }
  }
  EXPECT_GT(rejected, 0);
  // Any strict prefix of a valid file is incomplete and must be rejected.
  for (int iter = 0; iter < 100; ++iter) {
    const size_t n = rng.below(good.size());
    write_bytes(p, good.substr(0, n));
    expect_path_error(p, [&] { loom::read_safetensors(p); }, "");
  }
}

TEST_F(SafetensorsBadInput, FileOperationsNameThePath) {
  const std::string missing_dir = path("no/such/dir");
  const std::string target = missing_dir + "/file.bin";
  expect_path_error(target, [&] { loom::write_file_atomic(target, "x"); }, "cannot create");
  expect_path_error(target, [&] { loom::write_safetensors(target, good_); }, "cannot create");
  expect_path_error(target, [&] { loom::fsync_file(target); }, "cannot open");
  expect_path_error(missing_dir, [&] { loom::fsync_dir(missing_dir); }, "cannot open");
  expect_path_error(path("good.safetensors"), [&] { loom::fsync_dir(path("good.safetensors")); }, "cannot open");
  const std::string link = missing_dir + "/latest";
  expect_path_error(link, [&] { loom::replace_symlink(link, "step_1"); }, "symlink");
  expect_path_error(missing_dir, [&] { loom::commit_dir(missing_dir, path("final")); }, "cannot commit");
  expect_path_error(path("good.safetensors"), [&] { loom::commit_dir(path("good.safetensors"), path("final")); },
                    "not a directory");
  // Nothing was created along the way.
  EXPECT_FALSE(fs::exists(path("final")));
  EXPECT_FALSE(fs::exists(path("no")));
}

TEST_F(SafetensorsBadInput, FailedWriteKeepsOldFileAndLeavesNoTemp) {
  if (::geteuid() == 0) GTEST_SKIP() << "root ignores directory permissions";
  // A read-only folder: the write must fail cleanly, the old file must be untouched.
  const std::string sub = path("ro");
  fs::create_directory(sub);
  const std::string p = sub + "/state.txt";
  loom::write_file_atomic(p, "old contents");
  fs::permissions(sub, fs::perms::owner_read | fs::perms::owner_exec);
  expect_path_error(p, [&] { loom::write_file_atomic(p, "new contents"); }, "cannot create");
  fs::permissions(sub, fs::perms::owner_all);
  EXPECT_EQ(read_bytes(p), "old contents");
  int entries = 0;
  for (const auto& e : fs::directory_iterator(sub)) (void)e, ++entries;
  EXPECT_EQ(entries, 1);
}

TEST_F(SafetensorsBadInput, FailedRenameLeavesNoTemp) {
  // Works as root too: a file cannot be renamed over a non-empty directory, so the
  // write fails after the temporary file exists, and that file must be cleaned up.
  const std::string target = path("occupied");
  fs::create_directory(target);
  write_bytes(target + "/inside", "x");
  expect_path_error(target, [&] { loom::write_file_atomic(target, "new contents"); }, "cannot rename");
  expect_path_error(target, [&] { loom::write_safetensors(target, good_); }, "cannot rename");
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir_.str())) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"good.safetensors", "occupied"}));
  EXPECT_EQ(read_bytes(target + "/inside"), "x");
}

}  // namespace loom::test
