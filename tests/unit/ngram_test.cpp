// ngram_test.cpp: unit tests of the interpolated Kneser-Ney n-gram model.
//
// The reference is a brute-force KN written here from the formula in ngram.h with none of
// the model's machinery: n-grams are std::vector keys in std::maps, continuation counts
// are recounted from the (n+1)-gram map, and every level sums over its history's entries
// on the spot. Corpora are random but structured (phrases repeated with noise) so that
// contexts of every order are seen, unseen and seen only a few times.
#include "models/ngram/ngram.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/rng.h"
#include "engine/io/safetensors.h"

using loom::NgramModel;
using loom::Rng;
using loom::StFile;
using loom::StTensor;
using loom::UserError;

namespace {

// Phrases drawn from a pool, with a noise token now and then.
std::vector<uint32_t> phrase_corpus(Rng& rng, uint32_t vocab, size_t n_tokens, int n_phrases, int max_len,
                                    double noise, uint64_t pool_seed) {
  Rng pool_rng(pool_seed);  // the same pool for training and held-out text
  std::vector<std::vector<uint32_t>> pool(n_phrases);
  for (auto& ph : pool) {
    ph.resize(2 + pool_rng.below(max_len - 1));
    for (auto& t : ph) t = static_cast<uint32_t>(pool_rng.below(vocab));
  }
  std::vector<uint32_t> out;
  while (out.size() < n_tokens) {
    if (rng.uniform_double() < noise) {
      out.push_back(static_cast<uint32_t>(rng.below(vocab)));
    } else {
      const auto& ph = pool[rng.below(n_phrases)];
      out.insert(out.end(), ph.begin(), ph.end());
    }
  }
  out.resize(n_tokens);
  return out;
}

NgramModel trained(int order, uint32_t vocab, const std::vector<uint32_t>& toks) {
  NgramModel m(order, vocab);
  m.count(toks, 0, toks.size());
  m.finalize();
  return m;
}

std::vector<int32_t> as_context(const std::vector<uint32_t>& toks, size_t end, size_t len) {
  return std::vector<int32_t>(toks.begin() + (end - len), toks.begin() + end);
}

// ---------------------------------------------------------------------------------------
// Brute-force reference.
struct RefKN {
  using Gram = std::vector<uint32_t>;
  int order;
  uint32_t vocab;
  std::vector<std::map<Gram, uint64_t>> raw, cont;  // [n]
  std::vector<double> d_raw, d_cont;

  static double discount(const std::map<Gram, uint64_t>& m) {
    double n1 = 0, n2 = 0;
    for (const auto& [g, c] : m) n1 += c == 1, n2 += c == 2;
    if (n1 + n2 == 0) return 0.5;
    return std::min(0.99, std::max(0.01, n1 / (n1 + 2 * n2)));
  }

  RefKN(int order_, uint32_t vocab_, const std::vector<uint32_t>& toks)
      : order(order_), vocab(vocab_), raw(order_ + 1), cont(order_ + 1), d_raw(order_ + 1), d_cont(order_ + 1) {
    for (size_t i = 0; i < toks.size(); ++i)
      for (int n = 1; n <= order && static_cast<size_t>(n) <= i + 1; ++n)
        ++raw[n][Gram(toks.begin() + (i + 1 - n), toks.begin() + i + 1)];
    for (int n = 1; n < order; ++n)
      for (const auto& [g, c] : raw[n + 1]) ++cont[n][Gram(g.begin() + 1, g.end())];
    for (int n = 1; n <= order; ++n) d_raw[n] = discount(raw[n]), d_cont[n] = discount(cont[n]);
  }

  double prob(const std::vector<int32_t>& ctx, uint32_t w) const {
    const size_t len = std::min<size_t>(ctx.size(), order - 1);
    const int top = static_cast<int>(len) + 1;
    double p = 1.0 / vocab;
    for (int n = 1; n <= top; ++n) {
      const auto& m = n == top ? raw[n] : cont[n];
      const double d = n == top ? d_raw[n] : d_cont[n];
      const Gram h(ctx.end() - (n - 1), ctx.end());
      double sum = 0, distinct = 0, a = 0;
      for (auto it = m.lower_bound(h); it != m.end() && std::equal(h.begin(), h.end(), it->first.begin()); ++it) {
        sum += it->second;
        distinct += 1;
        if (it->first.back() == w) a = it->second;
      }
      if (sum == 0) continue;
      p = std::max(a - d, 0.0) / sum + d * distinct / sum * p;
    }
    return p;
  }
};

// ---------------------------------------------------------------------------------------

TEST(Ngram, ConstructorRejectsBadArguments) {
  EXPECT_THROW(NgramModel(0, 256), UserError);
  EXPECT_THROW(NgramModel(9, 256), UserError);
  EXPECT_THROW(NgramModel(-3, 256), UserError);
  EXPECT_THROW(NgramModel(3, 1), UserError);
  EXPECT_THROW(NgramModel(3, 0), UserError);
  EXPECT_THROW(NgramModel(3, 65537), UserError);
  EXPECT_NO_THROW(NgramModel(1, 2));
  EXPECT_NO_THROW(NgramModel(8, 65536));
}

TEST(Ngram, BadTokensAreUserErrors) {
  Rng rng(5);
  const uint32_t vocab = 11;
  std::vector<uint32_t> toks = phrase_corpus(rng, vocab, 200, 5, 6, 0.2, 17);
  NgramModel m(3, vocab);
  toks[57] = vocab;
  EXPECT_THROW(m.count(toks, 0, toks.size()), UserError);
  EXPECT_THROW(m.count(toks, 50, 100), UserError);
  EXPECT_THROW(m.count(toks, 58, 100), UserError);  // read as context (order 3 reads 2 back)
  EXPECT_EQ(m.tokens_counted(), 0u);
  EXPECT_EQ(m.num_ngrams(1), 0u);
  m.count(toks, 60, 200);  // no longer read
  EXPECT_EQ(m.tokens_counted(), 140u);
  m.finalize();
  const std::vector<int32_t> ctx = {1, 2};
  EXPECT_THROW(m.log_prob(ctx, static_cast<int32_t>(vocab)), UserError);
  EXPECT_THROW(m.log_prob(ctx, -1), UserError);
  const std::vector<int32_t> bad_ctx = {1, static_cast<int32_t>(vocab)};
  std::vector<double> p;
  EXPECT_THROW(m.log_prob(bad_ctx, 0), UserError);
  EXPECT_THROW(m.probs(bad_ctx, p), UserError);
  const std::vector<int32_t> old_bad = {-4, 1, 2};  // beyond order-1: never read
  EXPECT_NO_THROW(m.log_prob(old_bad, 0));
}

TEST(Ngram, CountAfterFinalizeIsALogicError) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const std::vector<uint32_t> toks = {1, 0, 1, 1, 0};
  NgramModel m(2, 2);
  m.count(toks, 0, toks.size());
  m.finalize();
  EXPECT_DEATH(m.count(toks, 0, toks.size()), "count\\(\\) after finalize");
}

TEST(Ngram, EmptyModelIsUniform) {
  NgramModel m(4, 37);
  m.finalize();
  std::vector<double> p;
  const std::vector<int32_t> ctx = {3, 5, 7};
  m.probs(ctx, p);
  ASSERT_EQ(p.size(), 37u);
  for (double v : p) EXPECT_DOUBLE_EQ(v, 1.0 / 37);
  EXPECT_DOUBLE_EQ(m.log_prob(ctx, 36), std::log(1.0 / 37));
}

TEST(Ngram, ProbabilitiesSumToOne) {
  Rng rng(101);
  for (int order = 1; order <= 5; ++order) {
    for (const uint32_t vocab : {2u, 7u, 61u, 300u}) {
      const std::vector<uint32_t> toks = phrase_corpus(rng, vocab, 3000, 25, 9, 0.15, 1000 + order);
      const NgramModel m = trained(order, vocab, toks);
      std::vector<double> p;
      for (int trial = 0; trial < 150; ++trial) {
        std::vector<int32_t> ctx;
        const size_t len = rng.below(order + 2);
        if (trial % 3 != 0) {  // seen: a slice of the corpus
          ctx = as_context(toks, len + rng.below(toks.size() - len), len);
        } else {  // most likely unseen
          for (size_t i = 0; i < len; ++i) ctx.push_back(static_cast<int32_t>(rng.below(vocab)));
        }
        m.probs(ctx, p);
        ASSERT_EQ(p.size(), vocab);
        double sum = 0;
        for (double v : p) {
          ASSERT_GT(v, 0.0);
          sum += v;
        }
        ASSERT_NEAR(sum, 1.0, 1e-9) << "order " << order << " vocab " << vocab << " context length " << len;
        for (int k = 0; k < 4; ++k) {  // probs() and log_prob() agree
          const int32_t w = static_cast<int32_t>(rng.below(vocab));
          ASSERT_NEAR(m.log_prob(ctx, w), std::log(p[w]), 1e-12);
        }
      }
    }
  }
}

TEST(Ngram, MatchesBruteForceReference) {
  Rng rng(7);
  struct Case {
    int order;
    uint32_t vocab;
    size_t n;
    bool big_ids;  // tokens near 2^16: exercises every bit of the 128-bit keys
  };
  const Case cases[] = {{1, 3, 500, false}, {2, 4, 800, false}, {3, 5, 1200, false}, {4, 6, 1500, false},
                        {5, 3, 1000, false}, {3, 65536, 1500, true}, {8, 65536, 2000, true}, {8, 4, 1200, false}};
  for (const Case& c : cases) {
    std::vector<uint32_t> toks = phrase_corpus(rng, c.big_ids ? 9 : c.vocab, c.n, 12, 7, 0.2, 77 + c.order);
    if (c.big_ids) {
      for (auto& t : toks) t = 65535 - t * 4099;  // spread over the whole 16 bits
      // Tokens seen only at the start of the stream: raw counts without continuation
      // counts (their histories have raw mass but no continuation mass).
      toks[0] = 0, toks[1] = 1, toks[2] = 2;
    }
    const NgramModel m = trained(c.order, c.vocab, toks);
    const RefKN ref(c.order, c.vocab, toks);
    for (int n = 1; n <= c.order; ++n) {
      EXPECT_EQ(m.discount(n, true), ref.d_raw[n]) << "order " << c.order << " level " << n;
      if (n < c.order) {
        EXPECT_EQ(m.discount(n, false), ref.d_cont[n]) << "order " << c.order << " level " << n;
      }
      EXPECT_EQ(m.num_ngrams(n), ref.raw[n].size());
    }
    // Every position of the corpus (full and shortened contexts), plus held-out text.
    std::vector<uint32_t> eval = toks;
    std::vector<uint32_t> held = phrase_corpus(rng, c.big_ids ? 9 : c.vocab, 300, 12, 7, 0.4, 77 + c.order);
    if (c.big_ids) {
      for (auto& t : held) t = 65535 - t * 4099;
      held[100] = 0, held[101] = 1, held[102] = 2;  // histories with raw but no continuation mass
    }
    for (int pass = 0; pass < 2; ++pass) {
      const std::vector<uint32_t>& s = pass == 0 ? eval : held;
      for (size_t i = 0; i < s.size(); ++i) {
        size_t len = std::min<size_t>(i, c.order - 1 + rng.below(2));
        if (rng.below(5) == 0) len = rng.below(len + 1);
        const std::vector<int32_t> ctx = as_context(s, i, len);
        const double want = std::log(ref.prob(ctx, s[i]));
        ASSERT_NEAR(m.log_prob(ctx, static_cast<int32_t>(s[i])), want, 1e-12)
            << "order " << c.order << " vocab " << c.vocab << " position " << i << " context length " << len;
        // An unseen token too (when the vocabulary is small enough to pick one at random).
        const uint32_t w = static_cast<uint32_t>(rng.below(c.vocab));
        ASSERT_NEAR(m.log_prob(ctx, static_cast<int32_t>(w)), std::log(ref.prob(ctx, w)), 1e-12);
      }
    }
  }
}

TEST(Ngram, ChunkedCountingEqualsOnePass) {
  Rng rng(31);
  for (int order = 1; order <= 6; ++order) {
    const uint32_t vocab = 2 + static_cast<uint32_t>(rng.below(40));
    const std::vector<uint32_t> toks = phrase_corpus(rng, vocab, 4000, 20, 8, 0.1, 500 + order);
    NgramModel whole(order, vocab), chunked(order, vocab);
    whole.count(toks, 0, toks.size());
    std::vector<uint64_t> cuts = {0, toks.size()};
    for (int k = 0; k < 12; ++k) cuts.push_back(rng.below(toks.size() + 1));
    cuts.push_back(1);  // a cut inside the first order-1 tokens
    std::sort(cuts.begin(), cuts.end());
    std::vector<size_t> chunk_order(cuts.size() - 1);  // counted in a random order
    for (size_t i = 0; i < chunk_order.size(); ++i) chunk_order[i] = i;
    for (size_t i = chunk_order.size(); i > 1; --i) std::swap(chunk_order[i - 1], chunk_order[rng.below(i)]);
    for (size_t i : chunk_order) chunked.count(toks, cuts[i], cuts[i + 1]);
    EXPECT_EQ(whole.tokens_counted(), toks.size());
    EXPECT_EQ(chunked.tokens_counted(), toks.size());
    const auto bytes = [](const std::vector<StTensor>& ts) {
      std::vector<unsigned char> b;
      for (const StTensor& t : ts) {
        b.insert(b.end(), t.name.begin(), t.name.end());
        b.insert(b.end(), t.dtype.begin(), t.dtype.end());
        for (int64_t d : t.shape) b.insert(b.end(), reinterpret_cast<const unsigned char*>(&d),
                                           reinterpret_cast<const unsigned char*>(&d) + sizeof(d));
        b.insert(b.end(), t.data.begin(), t.data.end());
      }
      return b;
    };
    const auto before = bytes(whole.to_tensors());
    EXPECT_EQ(before, bytes(chunked.to_tensors())) << "order " << order;
    whole.finalize();
    chunked.finalize();
    auto after = bytes(whole.to_tensors());
    // Only the finalized flag differs from the saved-before-finalize bytes.
    EXPECT_EQ(after, bytes(chunked.to_tensors())) << "order " << order;
    EXPECT_EQ(after.size(), before.size());
    for (size_t i = 0; i + order < toks.size(); i += 1 + rng.below(7)) {
      const auto ctx = as_context(toks, i + order - 1, order - 1);
      EXPECT_EQ(whole.log_prob(ctx, toks[i + order - 1]), chunked.log_prob(ctx, toks[i + order - 1]));
    }
  }
}

TEST(Ngram, TensorRoundTrip) {
  Rng rng(43);
  const std::string dir = (std::filesystem::temp_directory_path() / ("loom-ngram-" + std::to_string(getpid()))).string();
  std::filesystem::create_directories(dir);
  for (int order = 1; order <= 5; ++order) {
    const uint32_t vocab = 2 + static_cast<uint32_t>(rng.below(300));
    const std::vector<uint32_t> toks = phrase_corpus(rng, vocab, 5000, 30, 9, 0.1, 900 + order);
    const NgramModel m = trained(order, vocab, toks);
    // Through a real file, the way a checkpoint would hold it.
    StFile f;
    f.tensors = m.to_tensors();
    const std::string path = dir + "/ngram" + std::to_string(order) + ".safetensors";
    loom::write_safetensors(path, f);
    const NgramModel back = NgramModel::from_tensors(loom::read_safetensors(path), path);
    EXPECT_TRUE(back.finalized());
    EXPECT_EQ(back.order(), order);
    EXPECT_EQ(back.vocab(), vocab);
    EXPECT_EQ(back.tokens_counted(), m.tokens_counted());
    std::vector<double> p1, p2;
    for (int trial = 0; trial < 200; ++trial) {
      const size_t len = rng.below(order + 1);
      const size_t end = len + rng.below(toks.size() - len);
      const auto ctx = as_context(toks, end, len);
      const int32_t w = static_cast<int32_t>(rng.below(vocab));
      ASSERT_EQ(m.log_prob(ctx, w), back.log_prob(ctx, w));
      m.probs(ctx, p1);
      back.probs(ctx, p2);
      ASSERT_EQ(p1, p2);
    }
    // Saved before finalize: comes back unfinalized and can go on counting.
    NgramModel part(order, vocab);
    part.count(toks, 0, toks.size() / 2);
    StFile pf;
    pf.tensors = part.to_tensors();
    NgramModel resumed = NgramModel::from_tensors(pf, "part");
    EXPECT_FALSE(resumed.finalized());
    resumed.count(toks, toks.size() / 2, toks.size());
    resumed.finalize();
    for (int trial = 0; trial < 50; ++trial) {
      const size_t len = rng.below(order + 1);
      const size_t end = len + rng.below(toks.size() - len);
      const auto ctx = as_context(toks, end, len);
      ASSERT_EQ(m.log_prob(ctx, toks[end]), resumed.log_prob(ctx, toks[end]));
    }
  }
  std::filesystem::remove_all(dir);
}

TEST(Ngram, HigherOrderGivesLowerHeldOutCrossEntropy) {
  Rng rng(2024);
  const uint32_t vocab = 64;
  const std::vector<uint32_t> train = phrase_corpus(rng, vocab, 30000, 40, 10, 0.05, 4242);
  const std::vector<uint32_t> held = phrase_corpus(rng, vocab, 3000, 40, 10, 0.05, 4242);
  std::vector<double> ce(6);
  for (int order = 1; order <= 5; ++order) {
    const NgramModel m = trained(order, vocab, train);
    double nll = 0;
    for (size_t i = 0; i < held.size(); ++i) {
      const auto ctx = as_context(held, i, std::min<size_t>(i, order - 1));
      nll -= m.log_prob(ctx, static_cast<int32_t>(held[i]));
    }
    ce[order] = nll / held.size();
    EXPECT_TRUE(std::isfinite(ce[order]));
  }
  EXPECT_LT(ce[1], std::log(vocab) + 0.01);
  EXPECT_LT(ce[2], ce[1] - 0.5) << "order 1: " << ce[1] << ", order 2: " << ce[2];
  EXPECT_LT(ce[3], ce[2]) << "order 2: " << ce[2] << ", order 3: " << ce[3];
  EXPECT_LT(ce[5], 0.5 * ce[1]) << "order 1: " << ce[1] << ", order 5: " << ce[5];
}

// ---------------------------------------------------------------------------------------
// Tampered tensors.

class NgramTamper : public ::testing::Test {
 protected:
  void SetUp() override {
    Rng rng(9);
    toks_ = phrase_corpus(rng, vocab_, 2000, 15, 7, 0.2, 99);
    good_.tensors = trained(3, vocab_, toks_).to_tensors();
  }
  StTensor& tensor(StFile& f, const std::string& name) {
    for (StTensor& t : f.tensors)
      if (t.name == name) return t;
    ADD_FAILURE() << "no tensor " << name;
    return f.tensors[0];
  }
  static uint64_t get64(const StTensor& t, size_t i) {
    uint64_t v;
    std::memcpy(&v, t.data.data() + 8 * i, 8);
    return v;
  }
  static void set64(StTensor& t, size_t i, uint64_t v) { std::memcpy(t.data.data() + 8 * i, &v, 8); }
  static void set16(StTensor& t, size_t i, uint16_t v) { std::memcpy(t.data.data() + 2 * i, &v, 2); }
  // Loading must fail with a UserError that names the origin and mentions `what`.
  void expect_rejected(const StFile& f, const std::string& what) {
    try {
      NgramModel::from_tensors(f, "ckpt/model.safetensors");
      ADD_FAILURE() << "accepted a model with: " << what;
    } catch (const UserError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("ckpt/model.safetensors"), std::string::npos) << msg;
      EXPECT_NE(msg.find(what), std::string::npos) << "expected '" << what << "' in: " << msg;
    }
  }
  const uint32_t vocab_ = 23;
  std::vector<uint32_t> toks_;
  StFile good_;
};

TEST_F(NgramTamper, GoodTensorsLoad) { EXPECT_NO_THROW(NgramModel::from_tensors(good_, "x")); }

TEST_F(NgramTamper, MissingTensors) {
  for (const std::string name : {"ngram.config", "ngram.order1.tokens", "ngram.order2.counts", "ngram.order3.tokens"}) {
    StFile f = good_;
    f.tensors.erase(std::find_if(f.tensors.begin(), f.tensors.end(), [&](const StTensor& t) { return t.name == name; }));
    expect_rejected(f, "missing tensor " + name);
  }
}

TEST_F(NgramTamper, WrongDtypeOrShape) {
  {
    StFile f = good_;
    tensor(f, "ngram.order2.tokens").dtype = "I16";
    expect_rejected(f, "dtype");
  }
  {
    StFile f = good_;
    tensor(f, "ngram.order3.counts").dtype = "I64";
    expect_rejected(f, "dtype");
  }
  {
    StFile f = good_;
    StTensor& t = tensor(f, "ngram.order2.tokens");
    t.shape = {t.shape[0] * 2, 1};
    expect_rejected(f, "shape");
  }
  {
    StFile f = good_;
    StTensor& t = tensor(f, "ngram.order3.counts");
    t.shape[0] -= 1;
    t.data.resize(t.data.size() - 8);
    expect_rejected(f, "shape");
  }
  {
    StFile f = good_;
    tensor(f, "ngram.order1.counts").data.pop_back();
    expect_rejected(f, "bytes");
  }
  {
    StFile f = good_;
    tensor(f, "ngram.config").shape = {2, 2};
    expect_rejected(f, "shape");
  }
}

TEST_F(NgramTamper, BadConfig) {
  const std::pair<size_t, uint64_t> edits[] = {{0, 0}, {0, 9}, {1, 1}, {1, 70000}, {2, 2}};
  for (const auto& [i, v] : edits) {
    StFile f = good_;
    set64(tensor(f, "ngram.config"), i, v);
    expect_rejected(f, "ngram.config");
  }
  {  // order mismatch: fewer orders than the tensors hold, or more
    StFile f = good_;
    set64(tensor(f, "ngram.config"), 0, 2);
    expect_rejected(f, "does not fit a model of order 2");
    set64(tensor(f, "ngram.config"), 0, 4);
    expect_rejected(f, "missing tensor ngram.order4.tokens");
  }
  {  // vocab mismatch: tokens beyond a smaller vocabulary
    StFile f = good_;
    set64(tensor(f, "ngram.config"), 1, vocab_ - 1);
    expect_rejected(f, ">= vocab");
  }
  {
    StFile f = good_;
    set64(tensor(f, "ngram.config"), 3, toks_.size() + 1);
    expect_rejected(f, "tokens_counted");
  }
}

TEST_F(NgramTamper, BadContents) {
  {
    StFile f = good_;
    set16(tensor(f, "ngram.order2.tokens"), 5, static_cast<uint16_t>(vocab_));
    expect_rejected(f, ">= vocab");
  }
  {  // two rows swapped
    StFile f = good_;
    StTensor& t = tensor(f, "ngram.order3.tokens");
    std::swap_ranges(t.data.begin() + 6 * 4, t.data.begin() + 6 * 5, t.data.begin() + 6 * 9);
    StTensor& c = tensor(f, "ngram.order3.counts");  // counts follow, so only the order is wrong
    std::swap_ranges(c.data.begin() + 8 * 4, c.data.begin() + 8 * 5, c.data.begin() + 8 * 9);
    expect_rejected(f, "sorted");
  }
  {  // a duplicated row
    StFile f = good_;
    StTensor& t = tensor(f, "ngram.order2.tokens");
    std::copy(t.data.begin() + 4 * 3, t.data.begin() + 4 * 4, t.data.begin() + 4 * 4);
    expect_rejected(f, "sorted");
  }
  {
    StFile f = good_;
    set64(tensor(f, "ngram.order3.counts"), 7, 0);
    expect_rejected(f, "zero");
  }
  {  // an n-gram counted more often than its suffix
    StFile f = good_;
    StTensor& c = tensor(f, "ngram.order3.counts");
    set64(c, 2, get64(c, 2) + 100000);
    expect_rejected(f, "suffix");
  }
  {  // an n-gram whose suffix is missing altogether: drop the first bigram row
    StFile f = good_;
    StTensor& t = tensor(f, "ngram.order2.tokens");
    StTensor& c = tensor(f, "ngram.order2.counts");
    t.data.erase(t.data.begin(), t.data.begin() + 4);
    t.shape[0] -= 1;
    c.data.erase(c.data.begin(), c.data.begin() + 8);
    c.shape[0] -= 1;
    expect_rejected(f, "suffix");
  }
}

}  // namespace
