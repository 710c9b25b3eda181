// safetensors_test.cpp: unit tests of our safetensors reader/writer and the crash-safe
// file helpers (write_file_atomic, replace_symlink, commit_dir).
//
// Checkpoints must round-trip bit for bit and stay readable by (and from) other
// safetensors implementations, so besides round trips we check the byte layout against
// the format spec and read a file assembled by hand the way Python's safetensors writes
// it. All tensor contents, shapes and names are random so that a wrong offset or a
// swapped tensor cannot pass by luck.
#include "engine/io/atomic_file.h"
#include "engine/io/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/rng.h"
#include "tests/support/helpers.h"

namespace loom::test {
namespace {

const std::vector<std::string> kTestDtypes = {"F32", "I32", "U64", "BF16", "F16", "I64", "U8", "F64", "I8", "BOOL"};

// A fresh directory per test, removed afterwards, so tests can list it to prove that no
// temporary files were left behind.
class SafetensorsTest : public ::testing::Test {
 protected:
  std::string path(const std::string& name) const { return dir_ / name; }
  std::set<std::string> listing(const std::string& sub = "") const {
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(sub.empty() ? dir_.str() : dir_ / sub))
      names.insert(e.path().filename().string());
    return names;
  }
  TempDir dir_;
};

std::string random_name(Rng& rng, const std::string& prefix) {
  static const char kChars[] = "abcdefghijklmnopqrstuvwxyz0123456789._";
  std::string s = prefix;
  const int n = 1 + static_cast<int>(rng.below(12));
  for (int i = 0; i < n; ++i) s += kChars[rng.below(sizeof kChars - 1)];
  return s;
}

// Metadata values exercise JSON escaping: quotes, backslashes, control characters, UTF-8.
std::string random_value(Rng& rng) {
  static const std::vector<std::string> kPieces = {"a", "Z", "7", " ", "\"", "\\", "\n", "\t", "{", "}",
                                                   ":", ",", "\xc3\xa9", "\xe2\x82\xac", "\x01", "/"};
  std::string s;
  const int n = static_cast<int>(rng.below(20));
  for (int i = 0; i < n; ++i) s += kPieces[rng.below(kPieces.size())];
  return s;
}

StTensor random_tensor(Rng& rng, const std::string& name) {
  StTensor t;
  t.name = name;
  t.dtype = kTestDtypes[rng.below(kTestDtypes.size())];
  const int rank = static_cast<int>(rng.below(5));  // rank 0 is a scalar
  size_t numel = 1;
  for (int i = 0; i < rank; ++i) {
    // Mostly non-empty, but zero-sized tensors must round-trip too.
    const int64_t d = rng.below(10) == 0 ? 0 : 1 + static_cast<int64_t>(rng.below(6));
    t.shape.push_back(d);
    numel *= static_cast<size_t>(d);
  }
  t.data.resize(numel * loom::st_dtype_size(t.dtype));
  for (auto& b : t.data) b = static_cast<unsigned char>(rng.next_u64());
  return t;
}

StFile random_file(Rng& rng) {
  StFile f;
  const int nmeta = static_cast<int>(rng.below(5));
  for (int i = 0; i < nmeta; ++i) f.metadata[random_name(rng, "k")] = random_value(rng);
  const int ntensors = 1 + static_cast<int>(rng.below(8));
  std::set<std::string> used;
  while (static_cast<int>(f.tensors.size()) < ntensors) {
    std::string name = random_name(rng, "t.");
    if (used.insert(name).second) f.tensors.push_back(random_tensor(rng, name));
  }
  return f;
}

void expect_same_tensor(const StTensor& a, const StTensor& b) {
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.dtype, b.dtype) << a.name;
  EXPECT_EQ(a.shape, b.shape) << a.name;
  EXPECT_EQ(a.data, b.data) << a.name;
}

}  // namespace

TEST(SafetensorsDtype, SizesFollowTheSpec) {
  EXPECT_EQ(loom::st_dtype_size("F32"), sizeof(float));
  EXPECT_EQ(loom::st_dtype_size("F64"), sizeof(double));
  EXPECT_EQ(loom::st_dtype_size("I32"), sizeof(int32_t));
  EXPECT_EQ(loom::st_dtype_size("I64"), sizeof(int64_t));
  EXPECT_EQ(loom::st_dtype_size("U64"), sizeof(uint64_t));
  EXPECT_EQ(loom::st_dtype_size("BF16"), 2u);
  EXPECT_EQ(loom::st_dtype_size("F16"), 2u);
  EXPECT_EQ(loom::st_dtype_size("U8"), 1u);
  EXPECT_EQ(loom::st_dtype_size("BOOL"), 1u);
  // Names are case-sensitive in the spec; anything else is unknown.
  EXPECT_EQ(loom::st_dtype_size("f32"), 0u);
  EXPECT_EQ(loom::st_dtype_size(""), 0u);
  EXPECT_EQ(loom::st_dtype_size("F4"), 0u);
}

TEST_F(SafetensorsTest, RoundTripRandomFiles) {
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    Rng rng(seed);
    const StFile f = random_file(rng);
    const std::string p = path("model.safetensors");
    loom::write_safetensors(p, f);
    const StFile g = loom::read_safetensors(p);
    EXPECT_EQ(g.metadata, f.metadata);
    ASSERT_EQ(g.tensors.size(), f.tensors.size());
    // The writer keeps the given order, and the reader reports file order.
    for (size_t i = 0; i < f.tensors.size(); ++i) expect_same_tensor(g.tensors[i], f.tensors[i]);
    for (const StTensor& t : f.tensors) {
      const StTensor* found = g.find(t.name);
      ASSERT_NE(found, nullptr) << t.name;
      expect_same_tensor(*found, t);
    }
    EXPECT_EQ(g.find("no such tensor"), nullptr);
  }
}

TEST_F(SafetensorsTest, RoundTripFloatValues) {
  // Real float payloads, to be sure the bytes are passed through untouched (NaN bits,
  // negative zero and denormals included).
  Rng rng(77);
  std::vector<float> values(3 * 5);
  for (auto& v : values) v = rng.normal();
  values[0] = -0.0f;
  values[1] = std::numeric_limits<float>::quiet_NaN();
  values[2] = std::numeric_limits<float>::denorm_min();
  StTensor t{"w", "F32", {3, 5}, {}};
  t.data.resize(values.size() * sizeof(float));
  std::memcpy(t.data.data(), values.data(), t.data.size());
  loom::write_safetensors(path("f.safetensors"), StFile{{}, {t}});
  const StFile g = loom::read_safetensors(path("f.safetensors"));
  ASSERT_EQ(g.tensors.size(), 1u);
  ASSERT_EQ(g.tensors[0].data.size(), values.size() * sizeof(float));
  std::vector<float> back(values.size());
  std::memcpy(back.data(), g.tensors[0].data.data(), g.tensors[0].data.size());
  EXPECT_EQ(std::memcmp(back.data(), values.data(), t.data.size()), 0);
  EXPECT_TRUE(std::signbit(back[0]));
}

TEST_F(SafetensorsTest, EmptyFileRoundTrips) {
  StFile f;
  loom::write_safetensors(path("e.safetensors"), f);
  const StFile g = loom::read_safetensors(path("e.safetensors"));
  EXPECT_TRUE(g.metadata.empty());
  EXPECT_TRUE(g.tensors.empty());
}

TEST_F(SafetensorsTest, ByteLayoutFollowsTheSpec) {
  for (uint64_t seed = 100; seed < 120; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    Rng rng(seed);
    const StFile f = random_file(rng);
    const std::string p = path("layout.safetensors");
    loom::write_safetensors(p, f);
    const std::string bytes = read_bytes(p);
    ASSERT_GE(bytes.size(), 8u);
    uint64_t n = 0;
    for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
    ASSERT_LE(n, bytes.size() - 8);
    EXPECT_EQ((8 + n) % 8, 0u) << "tensor data must start 8-byte aligned";

    const std::string header = bytes.substr(8, n);
    // Padding, if any, is trailing spaces only: the JSON itself ends with '}'.
    const size_t last = header.find_last_not_of(' ');
    ASSERT_NE(last, std::string::npos);
    EXPECT_EQ(header[last], '}');
    EXPECT_LT(header.size() - 1 - last, 8u) << "more padding than alignment needs";
    const nlohmann::json j = nlohmann::json::parse(header);  // throws (fails) if invalid
    ASSERT_TRUE(j.is_object());

    if (f.metadata.empty()) {
      EXPECT_FALSE(j.contains("__metadata__"));
    } else {
      ASSERT_TRUE(j.contains("__metadata__"));
      using StringMap = std::map<std::string, std::string>;
      EXPECT_EQ(j["__metadata__"].get<StringMap>(), f.metadata);
    }
    EXPECT_EQ(j.size(), f.tensors.size() + (f.metadata.empty() ? 0 : 1));

    // Offsets are contiguous in the given order, relative to the end of the header, and
    // the bytes there are the tensor's bytes.
    uint64_t expect_begin = 0;
    for (const StTensor& t : f.tensors) {
      ASSERT_TRUE(j.contains(t.name)) << t.name;
      const auto& e = j[t.name];
      EXPECT_EQ(e["dtype"].get<std::string>(), t.dtype);
      EXPECT_EQ(e["shape"].get<std::vector<int64_t>>(), t.shape);
      const auto offs = e["data_offsets"].get<std::vector<uint64_t>>();
      ASSERT_EQ(offs.size(), 2u);
      EXPECT_EQ(offs[0], expect_begin);
      EXPECT_EQ(offs[1] - offs[0], t.data.size());
      ASSERT_LE(8 + n + offs[1], bytes.size());
      EXPECT_EQ(bytes.substr(8 + n + offs[0], t.data.size()), std::string(t.data.begin(), t.data.end())) << t.name;
      expect_begin = offs[1];
    }
    EXPECT_EQ(bytes.size(), 8 + n + expect_begin) << "no bytes after the last tensor";
  }
}

// Builds a file exactly as the format spec describes and as Python's safetensors writes
// it: compact JSON by hand, no padding (so data is generally unaligned), and data laid
// out in an order that differs from the order of the header's keys.
TEST_F(SafetensorsTest, ReadsHandBuiltSpecFile) {
  for (uint64_t seed = 200; seed < 220; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    Rng rng(seed);
    StFile f = random_file(rng);
    f.metadata["format"] = "pt";
    // Data order: a random permutation of the tensors.
    std::vector<size_t> order(f.tensors.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
    std::vector<uint64_t> begin(f.tensors.size());
    std::string data;
    for (size_t i : order) {
      begin[i] = data.size();
      data.append(reinterpret_cast<const char*>(f.tensors[i].data.data()), f.tensors[i].data.size());
    }
    // Metadata values are kept to characters that need no escaping, so the JSON text is
    // written here without any JSON library.
    std::string json = "{\"__metadata__\":{";
    bool first = true;
    for (const auto& [k, v] : f.metadata) {
      json += (first ? "\"" : ",\"") + k + "\":\"" + (k == "format" ? v : std::to_string(v.size())) + "\"";
      first = false;
    }
    json += "}";
    for (size_t i = 0; i < f.tensors.size(); ++i) {
      const StTensor& t = f.tensors[i];
      json += ",\"" + t.name + "\":{\"dtype\":\"" + t.dtype + "\",\"shape\":[";
      for (size_t d = 0; d < t.shape.size(); ++d) {
        if (d) json += ',';
        json += std::to_string(t.shape[d]);
      }
      json += "],\"data_offsets\":[" + std::to_string(begin[i]) + "," + std::to_string(begin[i] + t.data.size()) + "]}";
    }
    json += "}";
    for (auto& [k, v] : f.metadata)
      if (k != "format") v = std::to_string(v.size());

    const std::string p = path("hand.safetensors");
    write_bytes(p, le64(json.size()) + json + data);
    const StFile g = loom::read_safetensors(p);
    EXPECT_EQ(g.metadata, f.metadata);
    ASSERT_EQ(g.tensors.size(), f.tensors.size());
    for (const StTensor& t : f.tensors) {
      ASSERT_NE(g.find(t.name), nullptr) << t.name;
      expect_same_tensor(*g.find(t.name), t);
    }
    // "File order" is data order. Empty tensors share an offset with a neighbour, so
    // their place among equals is not defined; the non-empty ones must be in order.
    std::vector<const StTensor*> want, got;
    for (size_t i : order)
      if (!f.tensors[i].data.empty()) want.push_back(&f.tensors[i]);
    for (const StTensor& t : g.tensors)
      if (!t.data.empty()) got.push_back(&t);
    ASSERT_EQ(got.size(), want.size());
    for (size_t k = 0; k < want.size(); ++k) EXPECT_EQ(got[k]->name, want[k]->name);
  }
}

TEST_F(SafetensorsTest, AcceptsWhitespaceAndKeyOrderVariants) {
  // Pretty-printed JSON with keys in another order is still the same file.
  Rng rng(9);
  StTensor t = random_tensor(rng, "x");
  t.dtype = "I32";
  t.shape = {2, 1 + static_cast<int64_t>(rng.below(4))};
  t.data.resize(static_cast<size_t>(t.shape[0] * t.shape[1]) * 4);
  for (auto& b : t.data) b = static_cast<unsigned char>(rng.next_u64());
  const std::string json = "{\n  \"x\" : { \"data_offsets\" : [ 0 , " + std::to_string(t.data.size()) +
                           " ],\n \"shape\": [ 2, " + std::to_string(t.shape[1]) + " ], \"dtype\": \"I32\" }\n}\n\t ";
  const std::string p = path("ws.safetensors");
  write_bytes(p, le64(json.size()) + json + std::string(t.data.begin(), t.data.end()));
  const StFile g = loom::read_safetensors(p);
  ASSERT_EQ(g.tensors.size(), 1u);
  expect_same_tensor(g.tensors[0], t);
}

TEST_F(SafetensorsTest, OverwriteLeavesNoTemporaryFiles) {
  Rng rng(5);
  for (int i = 0; i < 3; ++i) loom::write_safetensors(path("m.safetensors"), random_file(rng));
  EXPECT_EQ(listing(), std::set<std::string>{"m.safetensors"});
}

TEST_F(SafetensorsTest, WriterRejectsInconsistentTensors) {
  // A tensor whose bytes do not match its shape is an engine bug, not user input.
  StTensor t{"bad", "F32", {3}, std::vector<unsigned char>(11)};
  EXPECT_DEATH(loom::write_safetensors(path("bad.safetensors"), StFile{{}, {t}}), "bad");
  StTensor u{"u", "Q7", {1}, std::vector<unsigned char>(1)};
  EXPECT_DEATH(loom::write_safetensors(path("bad.safetensors"), StFile{{}, {u}}), "unknown dtype");
  StTensor a{"dup", "U8", {1}, {1}};
  EXPECT_DEATH(loom::write_safetensors(path("bad.safetensors"), StFile{{}, {a, a}}), "duplicate");
}

TEST_F(SafetensorsTest, WriteFileAtomic) {
  Rng rng(11);
  const std::string p = path("state.json");
  std::string previous;
  for (int i = 0; i < 4; ++i) {
    std::string contents;
    const size_t n = rng.below(5000) + (i == 0 ? 0 : 1);
    for (size_t k = 0; k < n; ++k) contents += static_cast<char>(rng.next_u64());
    ASSERT_NE(contents, previous);
    loom::write_file_atomic(p, contents);
    EXPECT_EQ(read_bytes(p), contents);
    previous = contents;
  }
  EXPECT_EQ(listing(), std::set<std::string>{"state.json"});
}

TEST_F(SafetensorsTest, WriteFileAtomicRelativePath) {
  // A bare file name has no parent in the string; its parent is the working directory.
  const fs::path cwd = fs::current_path();
  fs::current_path(dir_.str());
  Rng rng(12);
  const std::string contents = random_value(rng) + "x";
  loom::write_file_atomic("rel.txt", contents);
  fs::current_path(cwd);
  EXPECT_EQ(read_bytes(path("rel.txt")), contents);
  EXPECT_EQ(listing(), std::set<std::string>{"rel.txt"});
}

TEST_F(SafetensorsTest, ReplaceSymlinkSwitchesTarget) {
  Rng rng(13);
  const std::string a = random_name(rng, "step_a"), b = random_name(rng, "step_b");
  fs::create_directory(path(a));
  fs::create_directory(path(b));
  const std::string link = path("latest");
  loom::replace_symlink(link, a);  // creates it
  EXPECT_TRUE(fs::is_symlink(link));
  EXPECT_EQ(fs::read_symlink(link).string(), a);
  loom::replace_symlink(link, b);  // replaces it
  EXPECT_EQ(fs::read_symlink(link).string(), b);
  EXPECT_TRUE(fs::equivalent(link, path(b)));
  loom::replace_symlink(link, a);
  EXPECT_EQ(fs::read_symlink(link).string(), a);
  EXPECT_EQ(listing(), (std::set<std::string>{a, b, "latest"}));
}

TEST_F(SafetensorsTest, CommitDirCreatesAndReplaces) {
  Rng rng(14);
  const std::string final_dir = path("step_100");
  auto make_tmp = [&](const std::string& name, const std::string& file, const std::string& contents) {
    const std::string tmp = path(name);
    fs::create_directory(tmp);
    loom::write_file_atomic(tmp + "/" + file, contents);
    return tmp;
  };
  const std::string c1 = random_value(rng) + "1", c2 = random_value(rng) + "2";

  // First commit: nothing to replace.
  const std::string tmp1 = make_tmp("step_100.tmp-1", "old.bin", c1);
  fs::create_directory(tmp1 + "/sub");
  loom::commit_dir(tmp1, final_dir);
  EXPECT_EQ(read_bytes(final_dir + "/old.bin"), c1);
  EXPECT_EQ(listing(), std::set<std::string>{"step_100"});

  // Second commit replaces the whole folder, nested content included.
  const std::string tmp2 = make_tmp("step_100.tmp-2", "new.bin", c2);
  loom::commit_dir(tmp2, final_dir);
  EXPECT_EQ(read_bytes(final_dir + "/new.bin"), c2);
  EXPECT_EQ(listing("step_100"), std::set<std::string>{"new.bin"});
  EXPECT_EQ(listing(), std::set<std::string>{"step_100"});
}

TEST_F(SafetensorsTest, CheckpointFlowEndToEnd) {
  // The sequence DESIGN.md section 9 describes: write into a temporary folder, commit,
  // move `latest`; the checkpoint read back through the link equals what was written.
  Rng rng(15);
  for (int step = 1; step <= 3; ++step) {
    const StFile f = random_file(rng);
    const std::string name = "step_" + std::to_string(step);
    const std::string tmp = path(name + ".tmp-" + std::to_string(::getpid()));
    fs::create_directory(tmp);
    loom::write_safetensors(tmp + "/model.safetensors", f);
    loom::fsync_file(tmp + "/model.safetensors");
    loom::fsync_dir(tmp);
    loom::commit_dir(tmp, path(name));
    loom::replace_symlink(path("latest"), name);
    const StFile g = loom::read_safetensors(path("latest") + "/model.safetensors");
    EXPECT_EQ(g.metadata, f.metadata);
    ASSERT_EQ(g.tensors.size(), f.tensors.size());
    for (size_t i = 0; i < f.tensors.size(); ++i) expect_same_tensor(g.tensors[i], f.tensors[i]);
  }
  EXPECT_EQ(listing(), (std::set<std::string>{"step_1", "step_2", "step_3", "latest"}));
}

}  // namespace loom::test
