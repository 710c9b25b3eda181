// graph_decoder.h: what the graph kinds' decoders share: a graph on a backend with the
// model's weights uploaded and bound. Eval graphs compute a loss too, so they get valid
// (zero) targets once.
#pragma once
#include <algorithm>
#include <memory>
#include <span>
#include <vector>

#include "engine/graph/executor.h"
#include "engine/optim/weights.h"
#include "models/model.h"

namespace loom {

// Base: TokenDecoder, or Seq2SeqDecoder for the sequence-to-sequence kinds.
template <class Base>
class GraphDecoderOf : public Base {
 protected:
  GraphDecoderOf(ModelGraph mg, const std::vector<float>& params, Backend& be) : be_(be), mg_(std::move(mg)) {
    LOOM_CHECK(static_cast<int64_t>(params.size()) == mg_.g.param_count, "parameter count mismatch");
    weights_ = std::make_unique<DeviceWeights>(be, mg_.g.param_count);
    weights_->upload(params);
    ex_ = std::make_unique<Executor>(mg_.g, be);
    ex_->bind_params(weights_->graph_params(), nullptr);
    if (mg_.targets >= 0) {
      std::vector<int32_t> zeros(static_cast<size_t>(mg_.B) * mg_.T, 0);
      ex_->set_input(mg_.targets, zeros.data(), zeros.size() * 4);
    }
  }
  // Device copies of graph values (the KV cache, the recurrent state) for save()/restore():
  // of each value, `blocks` runs of `run` bytes, `stride` bytes apart (run 0: the whole value),
  // so that a cache copies only the positions filled so far.
  struct Copies final : DecoderState {
    std::vector<DeviceBuffer> bufs;
    int filled = 0;  // what the decoder needs besides (GPT: positions in the cache)
  };
  std::unique_ptr<Copies> save_values(const std::vector<int>& values, int blocks = 1, size_t stride = 0,
                                      size_t run = 0) const {
    auto c = std::make_unique<Copies>();
    for (int v : values) {
      const size_t n = run ? run : mg_.g.values[v].bytes();
      c->bufs.emplace_back(be_, static_cast<size_t>(blocks) * n);
      auto* src = static_cast<const char*>(ex_->view(v).data);
      for (int b = 0; b < blocks && n; ++b)
        be_.copy(static_cast<char*>(c->bufs.back().data()) + b * n, src + b * stride, n);
    }
    return c;
  }
  void restore_values(const DecoderState& s, const std::vector<int>& values, int blocks = 1, size_t stride = 0,
                      size_t run = 0) {
    const auto* c = dynamic_cast<const Copies*>(&s);
    LOOM_CHECK(c && c->bufs.size() == values.size(), "a decoder state of another decoder");
    for (size_t i = 0; i < values.size(); ++i) {
      const size_t n = run ? run : mg_.g.values[values[i]].bytes();
      LOOM_CHECK(c->bufs[i].bytes() >= static_cast<size_t>(blocks) * n, "a decoder state of another shape");
      auto* dst = static_cast<char*>(ex_->view(values[i]).data);
      for (int b = 0; b < blocks && n; ++b)
        be_.copy(dst + b * stride, static_cast<const char*>(c->bufs[i].data()) + b * n, n);
    }
  }

  // Recurrent graphs: feeds one token and copies each layer's final state into its initial
  // one (mg_.state_out into mg_.state_in), so the next step continues from it.
  std::vector<float> step_carrying_state(int32_t token) {
    ex_->set_input(mg_.tokens, &token, 4);
    ex_->forward();
    for (size_t l = 0; l < mg_.state_in.size(); ++l)
      be_.copy(ex_->view(mg_.state_in[l]).data, ex_->view(mg_.state_out[l]).data, mg_.g.values[mg_.state_in[l]].bytes());
    return ex_->fetch_f32(mg_.logits);
  }

  Backend& be_;
  ModelGraph mg_;
  std::unique_ptr<DeviceWeights> weights_;
  std::unique_ptr<Executor> ex_;
};

using GraphDecoder = GraphDecoderOf<TokenDecoder>;

// A pair kind's Encode graph (batch 1) on a decoder's weights: encodes one source at a time
// for the Decode graph, which reads its outputs (ModelGraph::memory, and the initial states
// state_out where the kind has them) as inputs of the same shapes.
class SourceEncoder {
 public:
  SourceEncoder(ModelGraph enc, const DeviceWeights& w, Backend& be, int src_len)
      : be_(be), mg_(std::move(enc)), ex_(mg_.g, be), src_len_(src_len) {
    ex_.bind_params(w.graph_params(), nullptr);
  }
  // Runs on one source with its EOS, padded to src_len (the rows past it are key padding: any
  // id reads as well as another there), and copies its outputs into `dec`'s inputs `memory`
  // and `states`. Returns the source's length, the Decode graph's source_len.
  int32_t encode(std::span<const int32_t> source, Executor& dec, const std::vector<int>& memory,
                 const std::vector<int>& states) {
    LOOM_USER_CHECK(!source.empty() && static_cast<int>(source.size()) <= src_len_, "source: ", source.size(),
                    " tokens (EOS included); the model reads 1 to model.src_len = ", src_len_);
    std::vector<int32_t> row(static_cast<size_t>(src_len_), source.back());
    std::copy(source.begin(), source.end(), row.begin());
    const int32_t len = static_cast<int32_t>(source.size());
    ex_.set_input(mg_.source, row.data(), row.size() * 4);
    ex_.set_input(mg_.source_len, &len, 4);
    ex_.forward();
    auto copy = [&](const std::vector<int>& to, const std::vector<int>& from) {
      LOOM_CHECK(to.size() == from.size(), "encoder outputs and decoder inputs differ");
      for (size_t i = 0; i < to.size(); ++i)
        be_.copy(dec.view(to[i]).data, ex_.view(from[i]).data, mg_.g.values[from[i]].bytes());
    };
    copy(memory, mg_.memory);
    copy(states, mg_.state_out);
    return len;
  }

 private:
  Backend& be_;
  ModelGraph mg_;
  Executor ex_;
  int src_len_;
};

// A Decode graph that feeds one position per call over a self-attention KV cache (mg.caches:
// per layer k then v, [1, heads, seq_len, D]).
template <class Base>
class KvCacheDecoderOf : public GraphDecoderOf<Base> {
 public:
  std::vector<float> step(int32_t token, int pos) override {
    LOOM_CHECK(pos < seq_len_, "KV cache full");
    const int32_t p = pos;
    this->ex_->set_input(this->mg_.tokens, &token, 4);
    this->ex_->set_input(this->mg_.pos, &p, 4);
    this->ex_->forward();
    filled_ = pos + 1;
    return this->ex_->fetch_f32(this->mg_.logits);
  }
  void reset() override { filled_ = 0; }
  int capacity() const override { return seq_len_; }
  // Only the filled positions of each head's rows [seq_len, D] are copied: the rest is never
  // read before a step writes it.
  std::unique_ptr<DecoderState> save() const override {
    auto c = this->save_values(this->mg_.caches, filled_ ? heads_ : 0, row_bytes_ * seq_len_, row_bytes_ * filled_);
    c->filled = filled_;
    return c;
  }
  void restore(const DecoderState& s) override {
    const auto* c = dynamic_cast<const typename GraphDecoderOf<Base>::Copies*>(&s);
    LOOM_CHECK(c, "a decoder state of another decoder");
    this->restore_values(s, this->mg_.caches, c->filled ? heads_ : 0, row_bytes_ * seq_len_, row_bytes_ * c->filled);
    filled_ = c->filled;
  }

 protected:
  KvCacheDecoderOf(ModelGraph mg, const std::vector<float>& params, Backend& be, int seq_len, int heads)
      : GraphDecoderOf<Base>(std::move(mg), params, be),
        seq_len_(seq_len),
        heads_(heads),
        row_bytes_(this->mg_.g.values[this->mg_.caches[0]].bytes() / (static_cast<size_t>(heads) * seq_len)) {}

 private:
  int seq_len_, heads_;
  size_t row_bytes_;  // one position of one head's cache
  int filled_ = 0;    // positions fed since the last reset
};

}  // namespace loom
