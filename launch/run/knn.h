// knn.h: a nearest-neighbour memory for a sequence-to-sequence checkpoint (kNN-MT,
// Khandelwal et al. 2021). The datastore: for every target token of every train pair, the
// decoder's state under teacher forcing (ModelGraph::hidden: what the classifier reads) as the
// key and that token as the value. Decoding then asks, at each step, for the k keys nearest to
// the decoder's state and mixes their tokens into the model's distribution:
//   p(y) = l p_knn(y) + (1 - l) p_model(y),   l = lambda exp(-d_1 / (gate |q|^2)),
//   p_knn(y) = sum over the k nearest keys i with value y of exp(-d_i / temperature) / Z,
// d_i the squared L2 distance, d_1 the nearest's, q the query: the memory speaks up when it
// holds a state close to the decoder's (a verse it was trained on) and falls silent when its
// nearest key is far (gate 0: lambda at every step, kNN-MT as published). The model's weights do not change; the memory holds what a
// 1M-parameter model cannot: which words its train pairs had. A datastore belongs to one
// checkpoint (it records the parameters' fingerprint) and is refused for any other.
//
// The search is an inverted file (FAISS's IVF-Flat): the keys are clustered by k-means into
// L ~ sqrt(N) lists, and a query scans the `probe` lists whose centroids are nearest to it
// (all of them: exact). The distances within a scanned list are exact.
//
// File (safetensors, engine/io/safetensors.h): "keys" F32 [N, C] and "values" I32 [N], list by
// list; "centroids" F32 [L, C]; "offsets" I64 [L + 1] (list l is rows offsets[l] ..
// offsets[l + 1]); metadata "format" = "loom-knn", "kind", "d_model", "vocab", "params_fnv1a"
// (hex), "pairs".
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/data/tokenizer.h"
#include "models/model.h"

namespace loom {

struct KnnOptions {
  int k = 16;                  // neighbours asked for at each step
  double lambda = 0.5;         // the memory's share of the mixture
  double temperature = 10.0;   // of exp(-d / temperature), d the squared distance
  int probe = 32;              // lists scanned a query (>= the lists: every key, exact)
  double gate = 0.3;           // lambda's decay with the nearest distance (0: none)
};

struct KnnBuildOptions {
  int64_t max_pairs = 0;  // the first N train pairs (0: all)
  int batch = 32;         // pairs per teacher-forced batch
  std::string device = "auto";
  // Called after each batch with (pairs done, pairs to do).
  std::function<void(int64_t, int64_t)> progress;
};

// FNV-1a over the parameters' bytes: which checkpoint a datastore was built from.
uint64_t params_fingerprint(const std::vector<float>& params);

class KnnStore {
 public:
  // Teacher-forced passes over the first train pairs of `data_dir` (a pair folder of the
  // model's vocabulary). UserError for a kind without decoder states (gpt-pairs) or data that
  // does not fit the model.
  static KnnStore build(const ModelConfig& model, const std::vector<float>& params, const Tokenizer& tok,
                        const std::string& data_dir, const KnnBuildOptions& o);
  // Reads `path`; UserError naming it when it is not a datastore, or not of this checkpoint.
  static KnnStore load(const std::string& path, const ModelConfig& model, const std::vector<float>& params);
  // Keys and values given directly (tests): keys [values.size(), dim], indexed here.
  KnnStore(int dim, std::vector<float> keys, std::vector<int32_t> values);

  void save(const std::string& path, const ModelConfig& model, const std::vector<float>& params) const;
  int64_t size() const { return static_cast<int64_t>(values_.size()); }
  int dim() const { return dim_; }
  int64_t pairs() const { return pairs_; }
  int lists() const { return static_cast<int>(offsets_.size()) - 1; }
  // List by list (not in the order they were added).
  const std::vector<float>& keys() const { return keys_; }
  const std::vector<int32_t>& values() const { return values_; }

  // p_knn for `query` [dim] over a vocabulary of `vocab` ids, into `p` (sums to 1); returns
  // the nearest key's squared distance.
  double distribution(std::span<const float> query, const KnnOptions& o, int vocab, std::vector<double>& p) const;
  // The memory's share of the mixture for a query of squared norm q2 whose nearest key is d1 away.
  static double share(const KnnOptions& o, double d1, double q2);

 private:
  KnnStore() = default;
  void index();   // k-means lists of the keys as added, then the keys and values list by list
  void finish();  // the keys' and centroids' squared norms
  int dim_ = 0;
  int64_t pairs_ = 0;
  std::vector<float> keys_, norms_, centroids_, cnorms_;
  std::vector<int32_t> values_;
  std::vector<int64_t> offsets_;
  mutable std::vector<float> dots_;  // distribution()'s scratch
};

// `inner` with the memory mixed in: its step() returns log p of the mixture (valid logits:
// sampling, greedy and beam search read them as they read a model's), everything else is
// `inner`'s. `store` must outlive it.
std::unique_ptr<Seq2SeqDecoder> with_knn(std::unique_ptr<Seq2SeqDecoder> inner, const KnnStore& store,
                                         const KnnOptions& o, int vocab);

// UserError naming the option when k < 1, lambda outside [0, 1], temperature <= 0, probe < 1 or gate < 0.
void check_knn_options(const KnnOptions& o);

}  // namespace loom
