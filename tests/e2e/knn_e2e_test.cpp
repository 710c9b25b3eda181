// knn_e2e_test.cpp: the kNN datastore of a sequence-to-sequence checkpoint (launch/run/knn.h):
// its keys are the states the cached decoder reaches, the neighbour distribution is the
// softmax of -distance / temperature over the k nearest, the mixture is lambda p_knn +
// (1 - lambda) p_model, and with the memory alone (lambda 1, k 1) an undertrained encdec and
// rnn-seq2seq decode their train targets exactly, through `loom knn` and `loom sample --knn`;
// bad input is one line and exit 2.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "engine/backend/device.h"
#include "engine/data/tokenizer.h"
#include "launch/run/checkpoint.h"
#include "launch/run/knn.h"
#include "launch/run/pair_decode.h"
#include "tests/support/helpers.h"
#include "tests/support/pair_tasks.h"

namespace loom::test {
namespace {

// p_knn against the definition, on keys whose distances the test knows: exact when every list
// is scanned; and a stored key, asked for with one list scanned, finds itself.
TEST(KnnStore, NeighboursWeighByDistanceAndTemperature) {
  Rng rng(11);
  const int dim = 6, n = 3000, vocab = 9;
  std::vector<float> keys(static_cast<size_t>(n) * dim);
  std::vector<int32_t> values(n);
  for (float& k : keys) k = rng.normal();
  for (int i = 0; i < n; ++i) values[i] = static_cast<int32_t>(rng.below(vocab));
  const KnnStore store(dim, keys, values);
  ASSERT_EQ(store.lists(), 55);  // round(sqrt(3000))
  std::vector<float> q(dim);
  for (float& x : q) x = rng.normal();
  // The reference: every distance in double, sorted.
  std::vector<std::pair<double, int>> d;
  for (int i = 0; i < n; ++i) {
    double s = 0;
    for (int c = 0; c < dim; ++c) s += std::pow(static_cast<double>(q[c]) - keys[static_cast<size_t>(i) * dim + c], 2);
    d.emplace_back(s, values[i]);
  }
  std::sort(d.begin(), d.end());
  for (const KnnOptions o : {KnnOptions{1, 0.5, 1.0, 55}, KnnOptions{7, 0.5, 3.0, 100}, KnnOptions{40, 0.5, 0.5, 55}}) {
    std::vector<double> want(vocab, 0.0);
    double z = 0;
    for (int i = 0; i < o.k; ++i) {
      want[d[i].second] += std::exp(-(d[i].first - d[0].first) / o.temperature);
      z += std::exp(-(d[i].first - d[0].first) / o.temperature);
    }
    std::vector<double> p(vocab, -1.0);  // poisoned
    EXPECT_NEAR(store.distribution(q, o, vocab, p), d[0].first, 1e-4);
    double sum = 0;
    for (int y = 0; y < vocab; ++y) {
      EXPECT_NEAR(p[y], want[y] / z, 1e-5) << "k " << o.k << " token " << y;
      sum += p[y];
    }
    EXPECT_NEAR(sum, 1.0, 1e-12);
  }
  // More neighbours than keys: all of them.
  std::vector<double> p;
  store.distribution(q, KnnOptions{n + 5, 0.5, 1e9, 1}, vocab, p);
  for (int y = 0; y < vocab; ++y)
    EXPECT_NEAR(p[y], static_cast<double>(std::count(values.begin(), values.end(), y)) / n, 1e-6);
  for (int i = 0; i < n; i += 97) {
    const std::span<const float> self(keys.data() + static_cast<size_t>(i) * dim, dim);
    store.distribution(self, KnnOptions{1, 0.5, 1.0, 1}, vocab, p);
    EXPECT_EQ(p[values[i]], 1.0) << "key " << i;
  }
}

class KnnDecoding : public ::testing::Test {
 protected:
  // Two steps: the model alone gets few sorted strings right; its memory gets them all.
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    data_ = new std::string(prepare_pairs(*dir_, "sort", 400));
    std::ofstream(d("encdec.toml")) << encdec_config(*data_, d("encdec"), 2);
    std::ofstream(d("rnnseq.toml")) << pair_config(
        "kind = \"rnn-seq2seq\"\nn_enc_layer = 1\nn_dec_layer = 1\nd_model = 64\n",
        "lr = 1e-2\nmin_lr = 1e-3\nwarmup_steps = 20\nweight_decay = 0.0\n", *data_, d("rnnseq"), 2, "");
    for (const char* kind : {"encdec", "rnnseq"})
      ASSERT_EQ(run_loom({"train", "--config", d(std::string(kind) + ".toml")}).rc, 0) << kind;
    const auto lines = split_lines(read_bytes(d("sort.tsv")));
    ASSERT_EQ(lines.size(), 400u);
    std::string src, tgt;
    for (size_t i = 0; i < 40; ++i) {  // train pairs
      const size_t tab = lines[i].find('\t');
      src += lines[i].substr(0, tab) + "\n";
      tgt += lines[i].substr(tab + 1) + "\n";
    }
    write_bytes(d("train40.src"), src);
    write_bytes(d("train40.tgt"), tgt);
  }
  static void TearDownTestSuite() { delete dir_, delete data_; }
  static std::string d(const std::string& s) { return *dir_ / s; }
  static TempDir* dir_;
  static std::string* data_;
};
TempDir* KnnDecoding::dir_ = nullptr;
std::string* KnnDecoding::data_ = nullptr;

// A datastore's key for a target token is the state the cached decoder is in when it has been
// fed the tokens before it (BOS first): the batched teacher-forced pass and the one-token steps
// agree, so a query can find its own pair.
TEST_F(KnnDecoding, KeysAreTheCachedDecodersStates) {
  for (const char* kind : {"encdec", "rnnseq"}) {
    SCOPED_TRACE(kind);
    const CheckpointData ck = load_checkpoint(d(kind), false);
    const auto tok = make_tokenizer(ck.tokenizer);
    KnnBuildOptions o;
    o.max_pairs = 5;
    o.batch = 2;  // rows past the end of the last batch hold no target: they add no key
    o.device = "cpu";
    const KnnStore store = KnnStore::build(ck.model, ck.params, *tok, *data_, o);
    const PairFolder f = open_pair_folder(*data_);
    const PairSplit train(f.dir, "train");
    uint64_t tokens = 0;
    for (uint64_t i = 0; i < 5; ++i) tokens += train.target_len(i) + 1;  // EOS
    ASSERT_EQ(store.size(), static_cast<int64_t>(tokens));
    ASSERT_EQ(store.dim(), ck.model.d_model);
    auto be = make_cpu_backend();
    auto dec = model_kind(ck.model.kind).seq2seq_decoder(ck.model, ModelWeights{ck.params, ck.counts}, *be);
    size_t key = 0;
    double worst = 0;
    std::vector<bool> found(static_cast<size_t>(store.size()), false);
    for (uint64_t i = 0; i < 5; ++i) {
      std::vector<uint32_t> s, t;
      train.read_source(i, s);
      train.read_target(i, t);
      std::vector<int32_t> source(s.begin(), s.end());
      source.push_back(static_cast<int32_t>(f.vocab.eos()));
      dec->encode(source);
      dec->reset();
      std::vector<int32_t> fed{static_cast<int32_t>(f.vocab.bos())};
      fed.insert(fed.end(), t.begin(), t.end());  // BOS + target: the inputs of every target token
      for (size_t p = 0; p < fed.size(); ++p, ++key) {
        dec->step(fed[p], static_cast<int>(p));
        const std::vector<float> h = dec->hidden();
        ASSERT_EQ(h.size(), static_cast<size_t>(store.dim()));
        // The stored key nearest to this state (keys are kept list by list, not in this order).
        size_t near = 0;
        double nd = 1e300;
        for (size_t r = 0; r < found.size(); ++r) {
          double dd = 0;
          for (int c = 0; c < store.dim(); ++c) dd = std::max(dd, std::fabs(static_cast<double>(h[c]) - store.keys()[r * store.dim() + c]));
          if (dd < nd) nd = dd, near = r;
        }
        worst = std::max(worst, nd);
        const int32_t want = p < t.size() ? static_cast<int32_t>(t[p]) : static_cast<int32_t>(f.vocab.eos());
        EXPECT_EQ(store.values()[near], want) << "pair " << i << " position " << p;
        EXPECT_FALSE(found[near]) << "two states share key " << near;
        found[near] = true;
      }
    }
    EXPECT_EQ(key, tokens);
    EXPECT_LT(worst, 1e-4);  // f32, two summation orders
  }
}

// The mixed decoder's logits are log(l p_knn + (1 - l) softmax(model logits)), l = lambda, or
// with the gate lambda exp(-d_1 / (gate |q|^2)), d_1 the nearest key's squared distance.
TEST_F(KnnDecoding, TheMixtureIsLambdaKnnPlusTheRestModel) {
  const CheckpointData ck = load_checkpoint(d("encdec"), false);
  const auto tok = make_tokenizer(ck.tokenizer);
  KnnBuildOptions bo;
  bo.max_pairs = 30;
  bo.device = "cpu";
  const KnnStore store = KnnStore::build(ck.model, ck.params, *tok, *data_, bo);
  const PairVocab v = pair_vocab_of(ck.model, *tok);
  const std::vector<int32_t> source = encode_source("hcfa", *tok, v, ck.model.src_len, "test");
  for (const double gate : {0.0, 0.15}) {
    SCOPED_TRACE(gate);
    const KnnOptions o{4, 0.3, 2.0, 1000, gate};
    auto be = make_cpu_backend();
    auto plain = model_kind(ck.model.kind).seq2seq_decoder(ck.model, ModelWeights{ck.params, ck.counts}, *be);
    auto mixed = with_knn(model_kind(ck.model.kind).seq2seq_decoder(ck.model, ModelWeights{ck.params, ck.counts}, *be),
                          store, o, ck.model.vocab);
    plain->encode(source);
    mixed->encode(source);
    plain->reset();
    mixed->reset();
    std::vector<int32_t> fed{static_cast<int32_t>(v.bos())};
    for (uint32_t t : tok->encode("acf")) fed.push_back(static_cast<int32_t>(t));
    double lowest = 1, highest = 0;
    for (size_t p = 0; p < fed.size(); ++p) {
      const std::vector<float> z = plain->step(fed[p], static_cast<int>(p));
      const std::vector<float> m = mixed->step(fed[p], static_cast<int>(p));
      const std::vector<float> h = plain->hidden();
      std::vector<double> knn;
      store.distribution(h, o, ck.model.vocab, knn);
      // The share, from a scan of every key in double.
      double q2 = 0, d1 = 1e300;
      for (float x : h) q2 += static_cast<double>(x) * x;
      for (int64_t r = 0; r < store.size(); ++r) {
        double dd = 0;
        for (int c = 0; c < store.dim(); ++c) dd += std::pow(static_cast<double>(h[c]) - store.keys()[r * store.dim() + c], 2);
        d1 = std::min(d1, dd);
      }
      const double l = gate > 0 ? 0.3 * std::exp(-d1 / (gate * q2)) : 0.3;
      lowest = std::min(lowest, l), highest = std::max(highest, l);
      const double zmax = *std::max_element(z.begin(), z.end());
      double sum = 0;
      for (float x : z) sum += std::exp(x - zmax);
      double total = 0;
      for (size_t y = 0; y < z.size(); ++y) {
        const double want = l * knn[y] + (1 - l) * std::exp(z[y] - zmax) / sum;
        EXPECT_NEAR(std::exp(static_cast<double>(m[y])), want, 1e-6 + 1e-5 * want) << "position " << p << " token " << y;
        total += std::exp(static_cast<double>(m[y]));
      }
      EXPECT_NEAR(total, 1.0, 1e-4);
    }
    if (gate > 0) EXPECT_LT(lowest, 0.3 * 0.999) << "the gate never closed: the test checks nothing of it";
  }
}

// `loom knn` over the train split, then `loom sample --knn` with the memory alone: every train
// source decodes (greedy and beam 4) to its target, where the model alone gets few right.
TEST_F(KnnDecoding, TheMemoryAloneRecallsTrainTargetsThroughTheCli) {
  const auto targets = split_lines(read_bytes(d("train40.tgt")));
  for (const char* kind : {"encdec", "rnnseq"}) {
    SCOPED_TRACE(kind);
    const std::string store = d(std::string(kind) + ".knn");
    const RunResult b = run_loom({"knn", "--checkpoint", d(kind), "--out", store});
    ASSERT_EQ(b.rc, 0) << b.err;
    EXPECT_NE(b.out.find("wrote " + store), std::string::npos) << b.out;
    EXPECT_NE(b.out.find("every target token of 360 train pairs"), std::string::npos) << b.out;
    auto decode = [&](std::vector<std::string> extra) {
      std::vector<std::string> args = {"sample", "--checkpoint", d(kind), "--source-file", d("train40.src")};
      args.insert(args.end(), extra.begin(), extra.end());
      const RunResult r = run_loom(args);
      EXPECT_EQ(r.rc, 0) << r.err;
      return split_lines(r.out);
    };
    auto right = [&](const std::vector<std::string>& got) {
      int n = 0;
      for (size_t i = 0; i < targets.size() && i < got.size(); ++i) n += got[i] == targets[i];
      return n;
    };
    const auto alone = decode({"--greedy"});
    const auto memory = decode({"--greedy", "--knn", store, "--knn-lambda", "1", "--knn-k", "1"});
    const auto memory_beam = decode({"--beam", "4", "--knn", store, "--knn-lambda", "1", "--knn-k", "1"});
    ASSERT_EQ(memory.size(), targets.size());
    EXPECT_LT(right(alone), 20) << "the 2-step model should not know the task yet";
    EXPECT_EQ(right(memory), 40);
    EXPECT_EQ(right(memory_beam), 40);
    // The default mixture runs too (lambda 0.5 of 16 neighbours, 32 lists).
    EXPECT_EQ(decode({"--beam", "2", "--knn", store}).size(), targets.size());
    // loom eval on the train split: the same recall, and the loss stays the model's own.
    auto eval = [&](std::vector<std::string> extra) {
      std::vector<std::string> args = {"eval", "--checkpoint", d(kind), "--split", "train", "--max-pairs", "40",
                                       "--json", d("eval.json")};
      args.insert(args.end(), extra.begin(), extra.end());
      const RunResult r = run_loom(args);
      EXPECT_EQ(r.rc, 0) << r.err;
      EXPECT_NE(r.out.find("(train split: 40 pairs"), std::string::npos) << r.out;
      return nlohmann::json::parse(read_bytes(d("eval.json")));
    };
    const auto plain = eval({});
    const auto mixed = eval({"--beam", "4", "--knn", store, "--knn-lambda", "1", "--knn-k", "1", "--knn-probe", "2"});
    EXPECT_LT(plain["exact_match"].get<double>(), 0.5);
    EXPECT_EQ(mixed["exact_match"].get<double>(), 1.0);
    EXPECT_EQ(mixed["loss"].get<double>(), plain["loss"].get<double>());
    EXPECT_EQ(mixed["split"], "train");
    EXPECT_EQ(mixed["knn"]["k"], 1);
    EXPECT_EQ(mixed["knn"]["probe"], 2);
    EXPECT_EQ(mixed["knn"]["gate"], 0.3);
  }
}

TEST_F(KnnDecoding, BadInputIsOneLine) {
  const std::string store = d("bad.knn");
  ASSERT_EQ(run_loom({"knn", "--checkpoint", d("encdec"), "--out", store, "--max-pairs", "20"}).rc, 0);
  auto sample = [&](const std::string& run, std::vector<std::string> extra) {
    std::vector<std::string> args = {"sample", "--checkpoint", d(run), "--source", "hcfa"};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_loom(args);
  };
  expect_user_error(sample("rnnseq", {"--knn", store}), "the datastore of another checkpoint");
  const std::string weights = load_checkpoint(d("encdec"), false).dir + "/model.safetensors";
  expect_user_error(sample("encdec", {"--knn", weights}), "not a kNN datastore");
  expect_user_error(sample("encdec", {"--knn", d("missing.knn")}), "missing.knn");
  expect_user_error(sample("encdec", {"--knn", store, "--knn-lambda", "1.5"}), "--knn-lambda");
  expect_user_error(sample("encdec", {"--knn", store, "--knn-k", "0"}), "--knn-k");
  expect_user_error(sample("encdec", {"--knn", store, "--knn-temperature", "0"}), "--knn-temperature");
  expect_user_error(sample("encdec", {"--knn", store, "--knn-probe", "0"}), "--knn-probe");
  expect_user_error(sample("encdec", {"--knn", store, "--knn-gate", "-1"}), "--knn-gate");
  expect_user_error(sample("encdec", {"--knn-k", "4"}), "--knn-k: needs --knn FILE");
  expect_user_error(run_loom({"eval", "--checkpoint", d("encdec"), "--knn-lambda", "0.1"}), "--knn-lambda: needs --knn FILE");
  expect_user_error(run_loom({"eval", "--checkpoint", d("encdec"), "--split", "test"}), "--split: 'test'");
  expect_user_error(run_loom({"eval", "--checkpoint", d("rnnseq"), "--knn", store}), "another checkpoint");
  expect_user_error(run_loom({"knn", "--checkpoint", d("encdec"), "--batch-size", "0"}), "--batch-size");
  expect_user_error(run_loom({"knn", "--checkpoint", d("missing_run")}), "missing_run");
  // A language model has no pairs, and its samples no source.
  fs::create_directories(d("lm"));
  std::ofstream(d("lm.toml")) << tiny_config(prepare_tiny_data(d("lm"), 20000), d("lm_run"), 2);
  ASSERT_EQ(run_loom({"train", "--config", d("lm.toml")}).rc, 0);
  expect_user_error(run_loom({"knn", "--checkpoint", d("lm_run")}), "does not learn pairs");
  expect_user_error(run_loom({"sample", "--checkpoint", d("lm_run"), "--prompt", "ab", "--knn", store}),
                    "--knn: only with --source");
  expect_user_error(run_loom({"eval", "--checkpoint", d("lm_run"), "--knn", store}), "--knn: only for checkpoints");
}

}  // namespace
}  // namespace loom::test
