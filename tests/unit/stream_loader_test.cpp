// stream_loader_test.cpp: the consecutive-window loader of the recurrent models.
#include <gtest/gtest.h>

#include "core/check.h"
#include "engine/data/stream_loader.h"
#include "tests/support/helpers.h"

namespace loom::test {
namespace {

std::string write_counting_shard(const TempDir& d, uint32_t n) {
  std::vector<uint32_t> t(n);
  Rng r(5);
  for (auto& x : t) x = static_cast<uint32_t>(r.below(1000));
  write_shard(d / "s.bin", t, 1000);
  return d / "s.bin";
}

TEST(StreamLoader, RowsAreConsecutiveWindowsOfFixedStreams) {
  TempDir d;
  Shard s(write_counting_shard(d, 1000));
  const int T = 7, G = 4;
  StreamLoader l(s, T, G);
  const uint64_t L = 1000 / G;
  EXPECT_EQ(l.windows_per_epoch(), static_cast<int64_t>((L - 1) / T));
  std::vector<int32_t> x(G * T), y(G * T);
  for (int64_t k = 0; k < l.windows_per_epoch() + 2; ++k) {
    const bool fresh = l.next_batch(0, 1, x.data(), y.data());
    const int64_t w = k % l.windows_per_epoch();
    EXPECT_EQ(fresh, w == 0) << "batch " << k;
    for (int r = 0; r < G; ++r)
      for (int t = 0; t < T; ++t) {
        const uint64_t i = r * L + w * T + t;
        ASSERT_EQ(x[r * T + t], static_cast<int32_t>(s[i]));
        ASSERT_EQ(y[r * T + t], static_cast<int32_t>(s[i + 1]));
      }
  }
}

TEST(StreamLoader, RanksPartitionTheBatchAndStateResumes) {
  TempDir d;
  Shard s(write_counting_shard(d, 2000));
  const int T = 5, G = 6;
  StreamLoader one(s, T, G), r0(s, T, G), r1(s, T, G);
  std::vector<int32_t> x(G * T), y(G * T), a(G / 2 * T), b(G / 2 * T), ya(a.size()), yb(b.size());
  for (int k = 0; k < 3; ++k) {
    one.next_batch(0, 1, x.data(), y.data());
    r0.next_batch(0, 2, a.data(), ya.data());
    r1.next_batch(1, 2, b.data(), yb.data());
    a.insert(a.end(), b.begin(), b.end());
    EXPECT_EQ(a, x);
    a.resize(G / 2 * T);
  }
  StreamLoader again(s, T, G);
  again.set_state(one.state());
  std::vector<int32_t> x2(G * T), y2(G * T);
  one.next_batch(0, 1, x.data(), y.data());
  again.next_batch(0, 1, x2.data(), y2.data());
  EXPECT_EQ(x, x2);
}

TEST(StreamLoader, TooShortIsAUserError) {
  TempDir d;
  Shard s(write_counting_shard(d, 100));
  EXPECT_THROW(StreamLoader(s, 32, 8), UserError);
}

}  // namespace
}  // namespace loom::test
