// sampler.h: text generation from a checkpoint, one token at a time, for every model kind
// (each kind brings its TokenDecoder: models/model.h), and the decoding policies: greedy,
// temperature, top-k, top-p (nucleus), and beam search.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/rng.h"
#include "engine/backend/backend.h"
#include "engine/io/safetensors.h"
#include "launch/run/beam_search.h"
#include "models/model.h"

namespace loom {

// Feeds a model one token at a time through its kind's TokenDecoder, counting positions.
// `tensors`: a counting kind's tables (the checkpoint's model.safetensors), else empty.
class Decoder {
 public:
  Decoder(const ModelConfig& cfg, const std::vector<float>& params, Backend& be, const StFile& tensors = {});
  // Over a decoder made elsewhere (a sequence-to-sequence kind's, after its source is encoded).
  Decoder(const ModelConfig& cfg, std::unique_ptr<TokenDecoder> impl);
  ~Decoder();
  // Feeds one token at the next position; returns the logits [vocab] for what follows it.
  std::vector<float> step(int32_t token);
  void reset();
  int pos() const { return pos_; }
  // Positions the decoder can hold before it must be rebuilt (GPT: seq_len; the others keep
  // a bounded state and never fill up).
  int capacity() const;
  // What has been fed so far (position included), to come back to with restore(): beam
  // search forks a prefix this way. States are shared, never changed.
  struct State {
    int pos = 0;
    std::shared_ptr<const DecoderState> impl;
  };
  State save() const;
  void restore(const State& s);

 private:
  ModelConfig cfg_;
  std::unique_ptr<TokenDecoder> impl_;
  int pos_ = 0;
};

struct SampleOptions {
  int max_new_tokens = 200;
  bool greedy = false;
  double temperature = 1.0;
  int top_k = 0;       // 0 = off
  double top_p = 1.0;  // 1 = off
  uint64_t seed = 0;
};

// Picks the next token from logits under the options (temperature, top-k, top-p).
int32_t pick_token(std::vector<float> logits, const SampleOptions& o, Rng& rng);

// Generates after `prompt_ids`; `on_token` sees each new token as it is produced. When the
// context fills up, the cache is rebuilt from the last half of the context (sliding window).
std::vector<int32_t> generate(Decoder& dec, const std::vector<int32_t>& prompt_ids, const SampleOptions& o,
                              const std::function<void(int32_t)>& on_token = {});

// Beam search (launch/run/beam_search.h) after `prompt_ids`: the prompt is fed once, and each
// hypothesis continues from its parent's saved decoder state. Only the last `capacity` prompt
// tokens are seen, and no hypothesis outgrows the context (max_len is cut to what fits).
std::vector<Hypothesis> beam_generate(Decoder& dec, const std::vector<int32_t>& prompt_ids, BeamOptions o);

}  // namespace loom
