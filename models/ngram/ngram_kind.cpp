// ngram_kind.cpp: model.kind = ngram, the counted baseline: it learns by counting
// (NgramModel), samples from its counts, and has no weights, graphs or gradients.
#include <climits>
#include <cmath>

#include "models/ngram/ngram.h"

namespace loom {

namespace {

// Log-probabilities after the last order-1 tokens.
class NgramDecoder final : public TokenDecoder {
 public:
  NgramDecoder(const ModelConfig& cfg, const StFile& counts)
      : model_(NgramModel::from_tensors(counts, "checkpoint")), keep_(cfg.order - 1) {
    model_.finalize();
  }
  std::vector<float> step(int32_t token, int) override {
    history_.push_back(token);
    if (static_cast<int>(history_.size()) > keep_) history_.erase(history_.begin());
    std::vector<double> p;
    model_.probs(history_, p);
    std::vector<float> logits(p.size());
    for (size_t i = 0; i < p.size(); ++i) logits[i] = static_cast<float>(std::log(std::max(p[i], 1e-300)));
    return logits;
  }
  void reset() override { history_.clear(); }
  int capacity() const override { return INT_MAX; }
  std::unique_ptr<DecoderState> save() const override {
    return std::make_unique<ValueDecoderState<std::vector<int32_t>>>(history_);
  }
  void restore(const DecoderState& s) override { history_ = ValueDecoderState<std::vector<int32_t>>::of(s); }

 private:
  NgramModel model_;
  int keep_;
  std::vector<int32_t> history_;
};

class NgramKind final : public ModelKind {
 public:
  const char* name() const override { return "ngram"; }
  std::vector<const char*> required_keys() const override { return {"model.order"}; }
  std::vector<const char*> keys() const override { return {"model.order"}; }
  void validate(const ModelConfig& c, const Require& req) const override {
    req(c.order >= 1 && c.order <= NgramModel::kMaxOrder, "model.order",
        "must be in [1, " + std::to_string(NgramModel::kMaxOrder) + "]");
  }
  std::string describe(const ModelConfig& c) const override { return "order=" + std::to_string(c.order); }
  bool counts() const override { return true; }
  std::unique_ptr<CountingModel> new_counts(const ModelConfig& c) const override {
    return std::make_unique<NgramModel>(c.order, static_cast<uint32_t>(c.vocab));
  }
  std::unique_ptr<CountingModel> load_counts(const StFile& f, const std::string& origin) const override {
    return std::make_unique<NgramModel>(NgramModel::from_tensors(f, origin));
  }
  std::unique_ptr<TokenDecoder> decoder(const ModelConfig& c, const ModelWeights& w, Backend&) const override {
    return std::make_unique<NgramDecoder>(c, w.tensors);
  }
};

}  // namespace

const ModelKind& ngram_kind() {
  static const NgramKind kind;
  return kind;
}

}  // namespace loom
