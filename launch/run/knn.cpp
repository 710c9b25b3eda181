// knn.cpp: see knn.h.
#include "launch/run/knn.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <queue>

#include "core/check.h"
#include "engine/backend/device.h"
#include "engine/data/pairs.h"
#include "engine/graph/executor.h"
#include "engine/io/safetensors.h"
#include "engine/optim/weights.h"
#include "kernels/matmul/matmul.h"
#include "launch/run/pair_batches.h"
#include "launch/run/pair_decode.h"

namespace loom {

namespace {

constexpr const char* kFormat = "loom-knn";

std::string hex64(uint64_t v) {
  char b[17];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
  return b;
}

template <typename T>
std::vector<unsigned char> bytes_of(const std::vector<T>& v) {
  std::vector<unsigned char> out(v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(out.data(), v.data(), out.size());
  return out;
}

// The mixture's log-probabilities over `inner`'s.
class KnnDecoder final : public Seq2SeqDecoder {
 public:
  KnnDecoder(std::unique_ptr<Seq2SeqDecoder> inner, const KnnStore& store, const KnnOptions& o, int vocab)
      : inner_(std::move(inner)), store_(store), o_(o), vocab_(vocab) {}
  void encode(std::span<const int32_t> source) override { inner_->encode(source); }
  std::vector<float> step(int32_t token, int pos) override {
    std::vector<float> z = inner_->step(token, pos);
    LOOM_CHECK(static_cast<int>(z.size()) == vocab_, "logits of ", z.size(), " for a vocabulary of ", vocab_);
    const std::vector<float> h = inner_->hidden();
    double q2 = 0;
    for (float x : h) q2 += static_cast<double>(x) * x;
    const double lambda = KnnStore::share(o_, store_.distribution(h, o_, vocab_, knn_), q2);
    const float m = *std::max_element(z.begin(), z.end());
    double sum = 0;
    for (float x : z) sum += std::exp(static_cast<double>(x) - m);
    constexpr double kFloor = 1e-38;  // log stays finite where both shares round to 0
    for (size_t y = 0; y < z.size(); ++y) {
      const double model = std::exp(static_cast<double>(z[y]) - m) / sum;
      z[y] = static_cast<float>(std::log(std::max(lambda * knn_[y] + (1 - lambda) * model, kFloor)));
    }
    return z;
  }
  std::vector<float> hidden() override { return inner_->hidden(); }
  void reset() override { inner_->reset(); }
  std::unique_ptr<DecoderState> save() const override { return inner_->save(); }
  void restore(const DecoderState& s) override { inner_->restore(s); }
  int capacity() const override { return inner_->capacity(); }

 private:
  std::unique_ptr<Seq2SeqDecoder> inner_;
  const KnnStore& store_;
  KnnOptions o_;
  int vocab_;
  std::vector<double> knn_;
};

}  // namespace

uint64_t params_fingerprint(const std::vector<float>& params) {
  uint64_t h = 1469598103934665603ull;
  const auto* b = reinterpret_cast<const unsigned char*>(params.data());
  for (size_t i = 0; i < params.size() * sizeof(float); ++i) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

void check_knn_options(const KnnOptions& o) {
  LOOM_USER_CHECK(o.k >= 1 && o.k <= 4096, "--knn-k: ", o.k, " is not in 1 .. 4096");
  LOOM_USER_CHECK(o.probe >= 1, "--knn-probe: ", o.probe, " must be at least 1");
  LOOM_USER_CHECK(o.gate >= 0 && std::isfinite(o.gate), "--knn-gate: ", o.gate, " must be 0 (off) or above");
  LOOM_USER_CHECK(o.lambda >= 0 && o.lambda <= 1, "--knn-lambda: ", o.lambda, " is not in [0, 1]");
  LOOM_USER_CHECK(o.temperature > 0 && std::isfinite(o.temperature), "--knn-temperature: ", o.temperature,
                  " must be above 0");
}

KnnStore::KnnStore(int dim, std::vector<float> keys, std::vector<int32_t> values)
    : dim_(dim), keys_(std::move(keys)), values_(std::move(values)) {
  LOOM_CHECK(dim_ >= 1 && !values_.empty() && keys_.size() == values_.size() * static_cast<size_t>(dim_),
             "kNN keys of ", keys_.size(), " floats for ", values_.size(), " values of width ", dim_);
  index();
  finish();
}

namespace {

// Squared norms of n rows of width c.
std::vector<float> row_norms(const float* x, int64_t n, int c) {
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    double s = 0;
    for (int j = 0; j < c; ++j) s += static_cast<double>(x[i * c + j]) * x[i * c + j];
    out[static_cast<size_t>(i)] = static_cast<float>(s);
  }
  return out;
}

// For each of n rows of width c, the nearest of L centroids (|x - m|^2 = |x|^2 - 2 x.m + |m|^2;
// |x|^2 is the row's own), a chunk of rows per matrix product.
void nearest_centroids(const float* x, int64_t n, int c, const std::vector<float>& cent, const std::vector<float>& cn,
                       std::vector<int32_t>& out) {
  const auto L = static_cast<int64_t>(cn.size());
  constexpr int64_t kChunk = 4096;
  std::vector<float> dots(static_cast<size_t>(std::min(n, kChunk) * L));
  out.resize(static_cast<size_t>(n));
  for (int64_t r0 = 0; r0 < n; r0 += kChunk) {
    const int64_t m = std::min(kChunk, n - r0);
    ref::gemm<float>(false, true, m, L, c, 1.0f, x + r0 * c, c, cent.data(), c, 0.0f, dots.data(), L);
    for (int64_t i = 0; i < m; ++i) {
      const float* d = dots.data() + i * L;
      int32_t best = 0;
      float bd = std::numeric_limits<float>::infinity();
      for (int64_t l = 0; l < L; ++l) {
        const float v = cn[static_cast<size_t>(l)] - 2 * d[l];
        if (v < bd) bd = v, best = static_cast<int32_t>(l);
      }
      out[static_cast<size_t>(r0 + i)] = best;
    }
  }
}

}  // namespace

void KnnStore::index() {
  const int64_t n = size();
  const int c = dim_;
  const auto L = static_cast<int64_t>(std::clamp<double>(std::round(std::sqrt(static_cast<double>(n))), 1.0, 4096.0));
  // k-means (10 rounds) on an even sample of up to 64 keys a list, from L evenly spaced keys.
  const int64_t m = std::min(n, 64 * L);
  std::vector<float> sample(static_cast<size_t>(m * c));
  for (int64_t i = 0; i < m; ++i)
    std::copy_n(keys_.data() + (i * n / m) * c, c, sample.data() + i * c);
  centroids_.assign(static_cast<size_t>(L * c), 0.0f);
  for (int64_t l = 0; l < L; ++l) std::copy_n(sample.data() + (l * m / L) * c, c, centroids_.data() + l * c);
  std::vector<int32_t> owner;
  for (int round = 0; round < 10; ++round) {
    nearest_centroids(sample.data(), m, c, centroids_, row_norms(centroids_.data(), L, c), owner);
    std::vector<double> sum(static_cast<size_t>(L * c), 0.0);
    std::vector<int64_t> count(static_cast<size_t>(L), 0);
    for (int64_t i = 0; i < m; ++i) {
      const auto l = static_cast<size_t>(owner[static_cast<size_t>(i)]);
      ++count[l];
      for (int j = 0; j < c; ++j) sum[l * c + j] += sample[static_cast<size_t>(i * c + j)];
    }
    for (int64_t l = 0; l < L; ++l)  // an empty list keeps its centroid
      if (count[static_cast<size_t>(l)] > 0)
        for (int j = 0; j < c; ++j)
          centroids_[static_cast<size_t>(l * c + j)] =
              static_cast<float>(sum[static_cast<size_t>(l * c + j)] / static_cast<double>(count[static_cast<size_t>(l)]));
  }
  // Every key to its list; then keys and values list by list (a stable counting sort).
  nearest_centroids(keys_.data(), n, c, centroids_, row_norms(centroids_.data(), L, c), owner);
  offsets_.assign(static_cast<size_t>(L + 1), 0);
  for (int32_t l : owner) ++offsets_[static_cast<size_t>(l) + 1];
  for (int64_t l = 0; l < L; ++l) offsets_[static_cast<size_t>(l + 1)] += offsets_[static_cast<size_t>(l)];
  std::vector<int64_t> at(offsets_.begin(), offsets_.end() - 1);
  std::vector<float> keys(keys_.size());
  std::vector<int32_t> values(values_.size());
  for (int64_t i = 0; i < n; ++i) {
    const int64_t to = at[static_cast<size_t>(owner[static_cast<size_t>(i)])]++;
    std::copy_n(keys_.data() + i * c, c, keys.data() + to * c);
    values[static_cast<size_t>(to)] = values_[static_cast<size_t>(i)];
  }
  keys_ = std::move(keys);
  values_ = std::move(values);
}

void KnnStore::finish() {
  norms_ = row_norms(keys_.data(), size(), dim_);
  cnorms_ = row_norms(centroids_.data(), lists(), dim_);
}

KnnStore KnnStore::build(const ModelConfig& model, const std::vector<float>& params, const Tokenizer& tok,
                         const std::string& data_dir, const KnnBuildOptions& o) {
  LOOM_CHECK(model_kind(model.kind).learns_pairs(), "kNN datastore of kind ", model.kind);
  LOOM_CHECK(o.batch >= 1 && o.max_pairs >= 0, "kNN build options");
  const PairFolder folder = open_pair_folder(data_dir);
  const PairVocab vocab = folder_vocab_of(folder, model, tok, data_dir);
  const PairSplit train(folder.dir, "train");
  check_pair_lengths(train, model);
  const int64_t n = first_pairs(train, o.max_pairs);
  auto be = make_backend(o.device);
  ModelGraph eg = build_model(model, GraphMode::Eval, o.batch, model.seq_len, be->float_dtype(), false);
  LOOM_USER_CHECK(eg.hidden >= 0, "the ", model.kind,
                  " kind keeps no decoder state for a kNN datastore (encdec and rnn-seq2seq do)");
  DeviceWeights w(*be, static_cast<int64_t>(params.size()));
  w.upload(params);
  Executor ex(eg.g, *be);
  ex.bind_params(w.graph_params(), nullptr);
  const int C = static_cast<int>(eg.g.values[eg.hidden].shape.back());
  KnnStore s;
  s.dim_ = C;
  s.pairs_ = n;
  uint64_t keys = 0;  // every target token of the first n pairs, EOS included
  for (int64_t i = 0; i < n; ++i) keys += train.target_len(static_cast<uint64_t>(i)) + 1;
  s.keys_.reserve(static_cast<size_t>(keys) * static_cast<size_t>(C));
  s.values_.reserve(static_cast<size_t>(keys));
  PairBatch b;
  PairInputs in;
  // Pairs are read a chunk at a time: the whole split's tokens need not be in memory twice.
  const int64_t chunk = static_cast<int64_t>(o.batch) * 256;
  for (int64_t first = 0; first < n; first += chunk) {
    const std::vector<SplitPair> pairs =
        read_split_pairs(train, vocab, static_cast<uint64_t>(first), static_cast<uint64_t>(std::min(chunk, n - first)));
    for (size_t at = 0; at < pairs.size(); at += static_cast<size_t>(o.batch)) {
      split_batch(pairs, at, eg, vocab, b);
      fill_pair_inputs(b, eg, vocab.pad(), in);
      set_pair_inputs(ex, eg, in);
      ex.forward();
      const std::vector<float> h = ex.fetch_f32(eg.hidden);
      for (int row = 0; row < eg.B; ++row)
        for (int t = 0; t < b.target_len[row]; ++t) {
          const size_t pos = static_cast<size_t>(row) * eg.T + static_cast<size_t>(in.target_start[row] + t);
          s.keys_.insert(s.keys_.end(), h.begin() + static_cast<ptrdiff_t>(pos * C),
                         h.begin() + static_cast<ptrdiff_t>((pos + 1) * C));
          s.values_.push_back(in.targets[pos]);
        }
      if (o.progress) o.progress(std::min<int64_t>(first + static_cast<int64_t>(at) + o.batch, n), n);
    }
  }
  LOOM_CHECK(s.values_.size() == keys, "kNN datastore: ", s.values_.size(), " keys of ", keys, " target tokens");
  s.index();
  s.finish();
  return s;
}

void KnnStore::save(const std::string& path, const ModelConfig& model, const std::vector<float>& params) const {
  StFile f;
  f.metadata = {{"format", kFormat},
                {"kind", model.kind},
                {"d_model", std::to_string(dim_)},
                {"vocab", std::to_string(model.vocab)},
                {"params_fnv1a", hex64(params_fingerprint(params))},
                {"pairs", std::to_string(pairs_)}};
  f.tensors.push_back({"keys", "F32", {size(), dim_}, bytes_of(keys_)});
  f.tensors.push_back({"values", "I32", {size()}, bytes_of(values_)});
  f.tensors.push_back({"centroids", "F32", {lists(), dim_}, bytes_of(centroids_)});
  f.tensors.push_back({"offsets", "I64", {lists() + 1}, bytes_of(offsets_)});
  write_safetensors(path, f);
}

KnnStore KnnStore::load(const std::string& path, const ModelConfig& model, const std::vector<float>& params) {
  const StFile f = read_safetensors(path);
  auto meta = [&](const char* k) {
    const auto it = f.metadata.find(k);
    return it == f.metadata.end() ? std::string() : it->second;
  };
  LOOM_USER_CHECK(meta("format") == kFormat, path, ": not a kNN datastore (loom knn writes them)");
  LOOM_USER_CHECK(meta("params_fnv1a") == hex64(params_fingerprint(params)), path,
                  ": the datastore of another checkpoint (its parameters' fingerprint ", meta("params_fnv1a"),
                  ", this checkpoint's ", hex64(params_fingerprint(params)), "): build one with loom knn");
  const StTensor* k = f.find("keys");
  const StTensor* v = f.find("values");
  const StTensor* m = f.find("centroids");
  const StTensor* o = f.find("offsets");
  LOOM_USER_CHECK(k && v && m && o && k->dtype == "F32" && v->dtype == "I32" && m->dtype == "F32" && o->dtype == "I64" &&
                      k->shape.size() == 2 && v->shape.size() == 1 && m->shape.size() == 2 && o->shape.size() == 1 &&
                      k->shape[0] == v->shape[0] && k->shape[1] == model.d_model && v->shape[0] > 0 &&
                      m->shape[1] == model.d_model && m->shape[0] >= 1 && o->shape[0] == m->shape[0] + 1,
                  path, ": a datastore needs keys F32 [N, ", model.d_model, "], values I32 [N] (N >= 1), centroids F32 [L, ",
                  model.d_model, "] and offsets I64 [L + 1]");
  KnnStore s;
  s.dim_ = static_cast<int>(k->shape[1]);
  s.pairs_ = std::max(0, metadata_positive_int(f, "pairs", path));
  s.keys_.resize(k->data.size() / sizeof(float));
  std::memcpy(s.keys_.data(), k->data.data(), k->data.size());
  s.values_.resize(v->data.size() / sizeof(int32_t));
  std::memcpy(s.values_.data(), v->data.data(), v->data.size());
  s.centroids_.resize(m->data.size() / sizeof(float));
  std::memcpy(s.centroids_.data(), m->data.data(), m->data.size());
  s.offsets_.resize(o->data.size() / sizeof(int64_t));
  std::memcpy(s.offsets_.data(), o->data.data(), o->data.size());
  bool rising = s.offsets_.front() == 0 && s.offsets_.back() == s.size();
  for (size_t l = 0; l + 1 < s.offsets_.size(); ++l) rising = rising && s.offsets_[l] <= s.offsets_[l + 1];
  LOOM_USER_CHECK(rising, path, ": offsets must rise from 0 to the ", s.size(), " keys");
  for (int32_t y : s.values_)
    LOOM_USER_CHECK(y >= 0 && y < model.vocab, path, ": value ", y, " is outside the vocabulary of ", model.vocab);
  s.finish();
  return s;
}

double KnnStore::share(const KnnOptions& o, double d1, double q2) {
  return o.gate > 0 && q2 > 0 ? o.lambda * std::exp(-d1 / (o.gate * q2)) : o.lambda;
}

double KnnStore::distribution(std::span<const float> query, const KnnOptions& o, int vocab,
                              std::vector<double>& p) const {
  LOOM_CHECK(static_cast<int>(query.size()) == dim_, "kNN query of ", query.size(), " for keys of ", dim_);
  const int L = lists();
  // |q - k|^2 = |q|^2 - 2 q.k + |k|^2; |q|^2 is the same for every key, so it joins at the end.
  // The lists to scan: the `probe` whose centroids are nearest.
  dots_.resize(static_cast<size_t>(L));
  ref::gemm<float>(false, true, 1, L, dim_, 1.0f, query.data(), dim_, centroids_.data(), dim_, 0.0f, dots_.data(), L);
  std::vector<std::pair<float, int>> lists(static_cast<size_t>(L));
  for (int l = 0; l < L; ++l) lists[static_cast<size_t>(l)] = {cnorms_[static_cast<size_t>(l)] - 2 * dots_[static_cast<size_t>(l)], l};
  std::sort(lists.begin(), lists.end());
  // The k smallest distances in them (and in the lists after them while fewer than k keys
  // were seen): a max-heap of the best so far.
  const auto k = static_cast<size_t>(std::min<int64_t>(o.k, size()));
  std::priority_queue<std::pair<float, int64_t>> best;
  for (int li = 0; li < L && (li < o.probe || best.size() < k); ++li) {
    const int l = lists[static_cast<size_t>(li)].second;
    const int64_t first = offsets_[static_cast<size_t>(l)], n = offsets_[static_cast<size_t>(l) + 1] - first;
    if (n == 0) continue;
    dots_.resize(static_cast<size_t>(n));
    ref::gemm<float>(false, true, 1, n, dim_, 1.0f, query.data(), dim_, keys_.data() + first * dim_, dim_, 0.0f,
                     dots_.data(), n);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t i = first + j;
      const float d = norms_[static_cast<size_t>(i)] - 2 * dots_[static_cast<size_t>(j)];
      if (best.size() < k) {
        best.emplace(d, i);
      } else if (d < best.top().first) {
        best.pop();
        best.emplace(d, i);
      }
    }
  }
  double q2 = 0;
  for (float x : query) q2 += static_cast<double>(x) * x;
  std::vector<std::pair<double, int32_t>> nn;
  while (!best.empty()) {
    nn.emplace_back(std::max(0.0, best.top().first + q2), values_[static_cast<size_t>(best.top().second)]);
    best.pop();
  }
  const double dmin = nn.back().first;  // the heap pops the farthest first
  p.assign(static_cast<size_t>(vocab), 0.0);
  double z = 0;
  for (const auto& [d, y] : nn) {
    const double w = std::exp(-(d - dmin) / o.temperature);
    p[static_cast<size_t>(y)] += w;
    z += w;
  }
  for (double& x : p) x /= z;
  return dmin;
}

std::unique_ptr<Seq2SeqDecoder> with_knn(std::unique_ptr<Seq2SeqDecoder> inner, const KnnStore& store,
                                         const KnnOptions& o, int vocab) {
  check_knn_options(o);
  return std::make_unique<KnnDecoder>(std::move(inner), store, o, vocab);
}

}  // namespace loom
