// length_buckets_test.cpp: training a pair kind on graphs of several shapes
// (train.length_buckets, launch/run/pair_batches.h). The bucket lengths cover every length of a
// side; a batch on the smallest graph that holds it has the loss and the gradients it has on the
// full graph (padding adds nothing), for every pair kind; and graphs that share one activation
// arena leave nothing in it for each other.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "engine/graph/executor.h"
#include "launch/run/pair_batches.h"
#include "models/model.h"
#include "tests/support/seeded_test.h"

namespace loom::test {
namespace {

TEST(LengthBuckets, LengthsCoverEachSideAndEndAtItsLength) {
  EXPECT_EQ(bucket_lengths(61, 4), (std::vector<int>{16, 31, 46, 61}));
  EXPECT_EQ(bucket_lengths(22, 4), (std::vector<int>{6, 11, 17, 22}));
  EXPECT_EQ(bucket_lengths(3, 8), (std::vector<int>{1, 2, 3}));  // more buckets than lengths
  EXPECT_EQ(bucket_lengths(40, 1), (std::vector<int>{40}));
  for (int L = 1; L <= 70; ++L)
    for (int k = 1; k <= 12; ++k) {
      const std::vector<int> b = bucket_lengths(L, k);
      ASSERT_EQ(b.size(), static_cast<size_t>(std::min(L, k))) << L << " " << k;
      EXPECT_EQ(b.back(), L);
      EXPECT_TRUE(std::is_sorted(b.begin(), b.end()) && std::adjacent_find(b.begin(), b.end()) == b.end());
      // Every length goes to the shortest bucket that holds it, never more than L / k + 1 too long.
      for (int n = 1; n <= L; ++n) {
        const int got = bucket_for(b, n);
        EXPECT_GE(got, n);
        EXPECT_TRUE(got == b.front() || *(std::find(b.begin(), b.end(), got) - 1) < n) << L << " " << k << " " << n;
        EXPECT_LE(got - n, L / k + 1);
      }
    }
}

struct Kind {
  const char* name;
  ModelConfig c;
};

std::vector<Kind> pair_kinds() {
  ModelConfig ed{.kind = "encdec", .n_head = 2, .d_model = 16, .seq_len = 9, .vocab = 23};
  ed.src_len = 13;
  ed.n_enc_layer = ed.n_dec_layer = 2;
  ModelConfig learned = ed;
  learned.positions = "learned";
  learned.tie_embeddings = false;
  ModelConfig rnn = ed;
  rnn.kind = "rnn-seq2seq";
  rnn.cell = "lstm";
  rnn.bidirectional = true;
  rnn.attention = "additive";
  ModelConfig gru = rnn;
  gru.cell = "gru";
  gru.bidirectional = false;
  gru.attention = "general";
  ModelConfig gp{.kind = "gpt-pairs", .n_layer = 2, .n_head = 2, .d_model = 16, .seq_len = 9, .vocab = 23};
  gp.src_len = 13;
  return {{"encdec sinusoidal tied", ed}, {"encdec learned untied", learned}, {"rnn-seq2seq lstm bi additive", rnn},
          {"rnn-seq2seq gru general", gru}, {"gpt-pairs", gp}};
}

// A graph, its executor, and gradients of its own, on the shared weights.
struct ShapeRun {
  ModelGraph mg;
  std::unique_ptr<Executor> ex;
  std::vector<double> grads;
  double mean_loss = 0;
};

class LengthBucketGraphs : public SeededTest {
 protected:
  // B rows with sources of 1..max_src - 1 tokens and targets of 0..max_tgt - 1 (EOS added to
  // each); the longest of each side is exactly max_src and max_tgt. PAD, EOS, BOS are the last ids.
  PairBatch random_batch(int B, int max_src, int max_tgt, int V) {
    const int32_t pad = V - 1, eos = V - 2, bos = V - 3;
    PairBatch b;
    b.rows = B, b.S = max_src, b.T = max_tgt;
    b.source.assign(static_cast<size_t>(B) * max_src, pad);
    b.target.assign(static_cast<size_t>(B) * max_tgt, pad);
    b.decoder_input.assign(b.target.size(), pad);
    for (int r = 0; r < B; ++r) {
      const int ls = r == 0 ? max_src : 1 + static_cast<int>(rng_.below(max_src));
      const int lt = r == 1 ? max_tgt : 1 + static_cast<int>(rng_.below(max_tgt));
      for (int i = 0; i + 1 < ls; ++i) b.source[r * max_src + i] = static_cast<int32_t>(rng_.below(V - 3));
      b.source[r * max_src + ls - 1] = eos;
      for (int i = 0; i + 1 < lt; ++i) b.target[r * max_tgt + i] = static_cast<int32_t>(rng_.below(V - 3));
      b.target[r * max_tgt + lt - 1] = eos;
      b.decoder_input[r * max_tgt] = bos;
      for (int i = 1; i < lt; ++i) b.decoder_input[r * max_tgt + i] = b.target[r * max_tgt + i - 1];
      b.source_len.push_back(ls);
      b.target_len.push_back(lt);
    }
    return b;
  }

  // Forward and backward of `b` on `run`: the mean loss over its real target tokens, and the
  // gradients of that mean, in f64.
  void step(ShapeRun& run, std::vector<double>& params, const PairBatch& b, int32_t pad) {
    PairInputs in;
    fill_pair_inputs(b, run.mg, static_cast<uint32_t>(pad), in);
    set_pair_inputs(*run.ex, run.mg, in);
    const double scale = loss_scale(run.mg, in.target_tokens);
    run.ex->set_input(run.mg.dloss, &scale, 8);
    run.grads.assign(static_cast<size_t>(run.mg.g.trainable_prefix()), 0.0);
    run.ex->bind_params(params.data(), run.grads.data());
    run.ex->run();
    run.mean_loss = run.ex->fetch<double>(run.mg.loss)[0] * scale;
  }
};

// The graphs run in f64: they sum the same products over rows of other lengths, so only the order
// (and the zeros of padding) differ. Not f32: a gradient that is the small difference of larger
// terms (the additive score's query and key weights of a fresh model, 1e-4 of the other tensors')
// differs there by more than any tolerance relative to its own size, while the padding bugs this
// test is for move gradients by 1e-2 of their size and more.
constexpr double kF64Tol = 1e-9;

TEST_F(LengthBucketGraphs, ASmallerGraphGivesTheFullGraphsLossAndGradients) {
  SCOPED_TRACE("seed " + std::to_string(seed_));
  auto be = make_cpu_backend(DType::F64);
  for (const Kind& k : pair_kinds()) {
    SCOPED_TRACE(k.name);
    validate_model(k.c, "test");
    const int B = 3, V = k.c.vocab;
    const std::vector<int> src = bucket_lengths(k.c.src_len, 4), tgt = bucket_lengths(k.c.seq_len, 4);
    // A batch whose sides fall between bucket lengths: {4, 7, 10, 13} x {3, 5, 7, 9}.
    const PairBatch b = random_batch(B, 6, 4, V);
    const int S = bucket_for(src, b.S), T = bucket_for(tgt, b.T);
    ASSERT_LT(S, k.c.src_len);
    ASSERT_LT(T, k.c.seq_len);
    const std::vector<float> init = init_params(k.c, seed_);
    std::vector<double> params(init.begin(), init.end());
    ShapeRun full{build_model(k.c, GraphMode::Train, B, k.c.seq_len, DType::F64), nullptr, {}};
    full.ex = std::make_unique<Executor>(full.mg.g, *be);
    ShapeRun small{build_model(k.c, GraphMode::Train, B, T, DType::F64, false, Recompute::None, S), nullptr, {}};
    small.ex = std::make_unique<Executor>(small.mg.g, *be, *full.ex);
    EXPECT_EQ(small.mg.S, S);
    EXPECT_EQ(graph_target_len(small.mg), T);
    EXPECT_TRUE(small.ex->borrows_arena());
    EXPECT_FALSE(full.ex->borrows_arena());
    ASSERT_EQ(small.mg.g.param_count, full.mg.g.param_count);

    step(full, params, b, V - 1);
    const std::vector<double> full_grads = full.grads;
    const double full_loss = full.mean_loss;
    step(small, params, b, V - 1);
    ASSERT_TRUE(std::isfinite(full_loss));
    EXPECT_NEAR(small.mean_loss, full_loss, kF64Tol * std::fabs(full_loss));
    EXPECT_GT(full_loss, 0.5 * std::log(static_cast<double>(V)));  // a fresh model: near uniform
    // Every parameter tensor: the same gradient, and not zero (the batch reaches it).
    for (const ParamInfo& p : full.mg.g.params) {
      if (!p.trainable) continue;
      double scale = 0, diff = 0;
      for (int64_t i = p.offset; i < p.offset + p.count(); ++i) {
        ASSERT_TRUE(std::isfinite(small.grads[i])) << p.name;
        scale = std::max(scale, std::fabs(full_grads[i]));
        diff = std::max(diff, std::fabs(small.grads[i] - full_grads[i]));
      }
      EXPECT_GT(scale, 0.0) << p.name << " gets no gradient";
      EXPECT_LE(diff, kF64Tol * scale) << p.name << ": gradients differ by " << diff << " (largest " << scale << ")";
    }
    // The full graph after the small one ran in the same arena: the same bits as before.
    step(full, params, b, V - 1);
    EXPECT_EQ(full.mean_loss, full_loss);
    EXPECT_EQ(full.grads, full_grads);
  }
}

}  // namespace
}  // namespace loom::test
