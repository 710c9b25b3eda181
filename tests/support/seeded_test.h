// seeded_test.h: the fixture of the data tests: a fresh temporary folder and a random seed
// (a new one each run, printed on failure through SEED_TRACE()), with the random inputs they
// build from it: token lists, word-like text and token shards.
#pragma once
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "core/rng.h"
#include "engine/data/shard.h"
#include "tests/support/helpers.h"

namespace loom::test {

class SeededTest : public ::testing::Test {
 protected:
  SeededTest() : seed_((static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}()), rng_(seed_) {}

  std::string path(const std::string& name) const { return dir_ / name; }

  std::vector<uint32_t> random_tokens(size_t n, uint32_t vocab) {
    std::vector<uint32_t> t(n);
    for (auto& v : t) v = static_cast<uint32_t>(rng_.below(vocab));
    return t;
  }

  // Text of random lowercase words and newlines, so that a corpus looks like a corpus.
  std::string random_words(size_t min_bytes) {
    std::string s;
    while (s.size() < min_bytes) {
      const size_t len = 1 + rng_.below(9);
      for (size_t i = 0; i < len; ++i) s += static_cast<char>('a' + rng_.below(26));
      s += rng_.below(12) == 0 ? '\n' : ' ';
    }
    return s;
  }

  // A shard `name` of `n` random tokens below `vocab`; returns its path.
  std::string random_shard(const std::string& name, size_t n, uint32_t vocab) {
    const std::string p = path(name);
    write_shard(p, random_tokens(n, vocab), vocab);
    return p;
  }

  TempDir dir_;
  uint64_t seed_;
  Rng rng_;
};

#define SEED_TRACE() SCOPED_TRACE(::testing::Message() << "seed " << seed_)

}  // namespace loom::test
