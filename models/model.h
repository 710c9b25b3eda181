// model.h: what every model kind shares, and the one interface a kind implements.
//
// A model kind (gpt, lstm, gru, rnn, ffnn, ngram, the sequence-to-sequence kinds) is a ModelKind registered once in
// models/kinds.def. Everything above models/ (the run loop, checkpoints, sampling, the CLI)
// asks the kind through this interface and never compares kind names: which config keys it
// needs and how to check them, how it learns (a graph trained by gradient descent, or counts),
// whether it carries state across batches or learns from pairs, how to build its graphs or
// count, its FLOPs per token, and a decoder that feeds it one token at a time.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/check.h"
#include "engine/backend/backend.h"
#include "engine/graph/graph.h"
#include "engine/graph/recompute.h"
#include "engine/io/safetensors.h"
#include "kernels/softmax_xent/softmax_xent.h"  // kIgnoreTarget

namespace loom {

struct ModelConfig {
  std::string kind = "gpt";  // a registered ModelKind's name
  int n_layer = 4;    // transformer blocks, recurrent layers, or ffnn hidden layers
  int n_head = 4;     // gpt
  int d_model = 256;  // gpt width; recurrent hidden size (= embedding size); ffnn embedding size
  int d_hidden = 0;   // ffnn hidden width (0: 4 * d_model)
  int context = 0;    // ffnn: previous tokens seen (n - 1 of an n-gram window)
  int order = 0;      // ngram: n
  int seq_len = 256;
  int vocab = 256;  // from the data folder, never from the user
  // LoRA (gpt): rank 0 = none. With rank r > 0 the base weights are frozen and each targeted
  // projection W gets W + (alpha / r) B A, A [r, in], B [out, r] (B starts at zero).
  int lora_rank = 0;
  double lora_alpha = 16.0;
  std::string lora_targets = "attn,mlp";  // attn (c_attn, attn.c_proj), mlp (c_fc, mlp.c_proj)
  // Document mask (data.document_mask, data.eot_id; kinds with masks_documents()): attention
  // stays inside documents, each started by the end-of-text token eot_id (-1: the data's
  // tokenizer's, resolved before a graph is built).
  bool document_mask = false;
  int eot_id = -1;
  // Sequence-to-sequence kinds (learns_pairs()): seq_len is the target length T (EOS
  // included) and src_len the source length S; the encoder and decoder stacks have their own
  // depths; tie_embeddings makes the source embedding, the target embedding and the classifier
  // one matrix; positions: "sinusoidal" (fixed) or "learned".
  int src_len = 0;
  int n_enc_layer = 0, n_dec_layer = 0;
  bool tie_embeddings = true;
  std::string positions = "sinusoidal";
  // The recurrent sequence-to-sequence kind: its cell (lstm | gru), a bidirectional encoder,
  // and the attention score (dot | general | additive).
  std::string cell = "lstm";
  bool bidirectional = false;
  std::string attention = "general";
};

// train: tokens + targets -> loss, with backward nodes (B x T windows)
// eval:  tokens + targets -> loss (and logits when asked), no backward
// decode: tokens [B, 1] at position `pos` with a KV cache -> logits [B, 1, V] (gpt); the
//         other graph kinds decode with their Eval graph and keep_logits
// encode: pair kinds: source [B, S] + source_len -> what every decoder step reads of the
//         source (ModelGraph::memory, kept outputs), computed once per source
// Pair kinds' Decode graphs read `memory` as inputs of the same shapes, and source_len.
enum class GraphMode { Train, Eval, Decode, Encode };


struct ModelGraph {
  Graph g;
  int tokens = -1, targets = -1, loss = -1, logits = -1;
  // Pair graphs (Eval, Decode): what the classifier reads, [B, T, C], kept to the end of a run
  // (the keys of a kNN datastore, launch/run/knn.h).
  int hidden = -1;
  int dloss = -1;             // seed of the loss gradient (Train)
  int pos = -1;               // decode position input [1] i32
  std::vector<int> caches;    // decode: per layer k then v, [B, H, maxT, D]
  // Recurrent kinds: per layer, the initial state (Input [NS, B, H], stat dtype) and the final
  // state (kept output) -- the next batch's initial state under truncated BPTT.
  std::vector<int> state_in, state_out;
  // Pair kinds (learns_pairs()): the source tokens [B, S] i32 (EOS, then PAD) and the source
  // lengths [B] i32 (EOS included; keys past them are padding). `tokens` is the decoder's
  // input [B, T] (teacher forcing: BOS + target[:-1]), `targets` the target [B, T] with
  // kIgnoreTarget on padding. The loss is the sum over the real target tokens divided by
  // B x T (padding adds zero); loss_scale() turns it into the mean over real target tokens.
  // A decoder-only pair kind's graph has no source input (source = -1, S = src_len): its
  // `tokens` [B, S + T] hold each pair as one sequence, the source with its EOS, then BOS +
  // target[:-1], then PAD, and `targets` the target under the target's positions
  // (kIgnoreTarget elsewhere); T is then S + model.seq_len.
  int source = -1, source_len = -1;
  // Encode outputs / Decode inputs: what the decoder reads of the encoded source (encdec: each
  // decoder layer's cross-attention keys/values [B, S, 2C]).
  std::vector<int> memory;
  int B = 0, T = 0, S = 0;
  explicit ModelGraph(DType dt) : g(dt) {}
};

// What a TokenDecoder has been fed (the KV cache, the recurrent state, the window, the
// history), copied out of it: beam search forks a prefix into several continuations and comes
// back to each in turn.
class DecoderState {
 public:
  virtual ~DecoderState() = default;
};

// A DecoderState that is one copyable value (a window or a history of tokens).
template <class T>
struct ValueDecoderState final : DecoderState {
  explicit ValueDecoderState(T v) : value(std::move(v)) {}
  T value;
  // The value `s` holds; `s` must be a ValueDecoderState<T> (one its decoder saved).
  static const T& of(const DecoderState& s) {
    const auto* v = dynamic_cast<const ValueDecoderState*>(&s);
    LOOM_CHECK(v, "a decoder state of another decoder");
    return v->value;
  }
};

// Feeds a model one token at a time (sampling). Each kind has its own: GPT over a KV cache,
// the recurrent kinds carrying their state, the feed-forward model over its window, the
// n-gram model from its counts.
class TokenDecoder {
 public:
  virtual ~TokenDecoder() = default;
  // Feeds `token` at position `pos`; returns the logits [vocab] of what follows it.
  virtual std::vector<float> step(int32_t token, int pos) = 0;
  // Forgets everything fed so far.
  virtual void reset() = 0;
  // A copy of everything fed so far; restore() of it (on this decoder) continues from there,
  // whatever was fed in between. The caller tracks the position, as for step().
  virtual std::unique_ptr<DecoderState> save() const = 0;
  virtual void restore(const DecoderState& s) = 0;
  // Positions it holds before it must be reset and refilled (GPT: seq_len; INT_MAX where the
  // state is bounded).
  virtual int capacity() const = 0;
};

// A sequence-to-sequence kind's decoder: the encoder runs once per source, then the decoder is
// fed target tokens one at a time (step(BOS, 0) first) over its caches of the encoded source
// and of its own past. save()/restore() cover the target side (beam hypotheses share one
// source); reset() forgets the target side and keeps the source.
class Seq2SeqDecoder : public TokenDecoder {
 public:
  // The source's tokens with its EOS (the pair loader's rows without PAD), at most src_len.
  virtual void encode(std::span<const int32_t> source) = 0;
  // What the classifier read at the position the last step() fed, [C] (ModelGraph::hidden).
  virtual std::vector<float> hidden() = 0;
};

// The loss of a pair graph over real target tokens (ModelGraph's targets): the factor that
// turns its sum / (B x T) into the mean over `real` target tokens.
inline double loss_scale(const ModelGraph& m, int64_t real) {
  return real > 0 ? static_cast<double>(m.B) * m.T / static_cast<double>(real) : 0.0;
}

// A counted model (the ngram kind): it learns by counting tokens, not by gradients.
class CountingModel {
 public:
  virtual ~CountingModel() = default;
  // Counts every event that ENDS at a position in [begin, end) of `tokens`; earlier tokens are
  // context only, so counting [0,a) then [a,n) equals counting [0,n).
  virtual void count(std::span<const uint32_t> tokens, uint64_t begin, uint64_t end) = 0;
  virtual uint64_t tokens_counted() const = 0;
  // Turns the counts into a model (no counting afterwards); a second call does nothing.
  virtual void finalize() = 0;
  // Natural-log probability of `token` after `context` (oldest first). After finalize().
  virtual double log_prob(std::span<const int32_t> context, int32_t token) const = 0;
  // The whole next-token distribution after `context`. After finalize().
  virtual void probs(std::span<const int32_t> context, std::vector<double>& out) const = 0;
  // What a checkpoint stores (model.safetensors holds these instead of weights).
  virtual std::vector<StTensor> to_tensors() const = 0;
};

// A model's learned state as a checkpoint holds it: the flat parameters of a graph kind, the
// count tensors (model.safetensors) of a counting kind.
struct ModelWeights {
  const std::vector<float>& params;
  const StFile& tensors;
};

// Throws UserError "<where>: <key>: <what>" when `ok` is false.
using Require = std::function<void(bool ok, const char* key, const std::string& what)>;
// Checks lo <= v <= hi, naming the key and the bounds.
void require_in(const Require& req, int64_t v, int64_t lo, int64_t hi, const char* key);
// Bounds far above any real model, so that a typo is one line naming the key rather than an
// allocation failure or an overflow (every kind checks its sizes against them).
inline constexpr int64_t kMaxLayers = 1024, kMaxWidth = 1 << 16, kMaxHeads = 1024, kMaxSeqLen = 1 << 20,
                         kMaxContext = 4096, kMaxLoraRank = 4096;

class ModelKind {
 public:
  virtual ~ModelKind() = default;
  virtual const char* name() const = 0;
  // Config keys this kind requires beyond the ones every kind requires.
  virtual std::vector<const char*> required_keys() const = 0;
  // Every config key this kind reads beyond the ones every kind reads (required or not; a
  // "section.*" entry covers a whole section): what a resolved config shows for it.
  virtual std::vector<const char*> keys() const = 0;
  // The kind's own checks of a model config (a resolved config, or a checkpoint's metadata).
  virtual void validate(const ModelConfig& c, const Require& req) const = 0;
  // The shape for banners, e.g. "L=4 H=4 C=256".
  virtual std::string describe(const ModelConfig& c) const = 0;
  // A decoder for sampling, on `be` (counting kinds read `w.tensors`, graph kinds `w.params`).
  virtual std::unique_ptr<TokenDecoder> decoder(const ModelConfig& c, const ModelWeights& w, Backend& be) const = 0;

  // How the kind learns: graph kinds by gradient descent on build()'s graphs; counting kinds
  // with a CountingModel.
  virtual bool counts() const { return false; }
  // Recurrent kinds carry their hidden state across consecutive batches (truncated BPTT).
  virtual bool carries_state() const { return false; }
  // LoRA adapters and fine-tuning of a pretrained checkpoint (loom finetune).
  virtual bool supports_lora() const { return false; }
  // Attention kept inside documents (ModelConfig::document_mask).
  virtual bool masks_documents() const { return false; }
  // Sequence-to-sequence kinds learn from pair folders (engine/data/pairs.h) with teacher
  // forcing; their graphs read ModelGraph's source side, and they decode with
  // seq2seq_decoder().
  virtual bool learns_pairs() const { return false; }
  // learns_pairs() kinds: a decoder that encodes a source once and then decodes its target.
  virtual std::unique_ptr<Seq2SeqDecoder> seq2seq_decoder(const ModelConfig& c, const ModelWeights& w,
                                                          Backend& be) const;

  // Graph kinds. Pair kinds: T is the target length and S (1 to c.src_len) the source length of
  // the Train and Eval graphs (Encode and Decode graphs read c.src_len); the parameters are the
  // same at every S and T, so graphs of several shapes can share one flat buffer. Other kinds
  // ignore S.
  virtual ModelGraph build(const ModelConfig& c, GraphMode mode, int B, int T, DType dt, bool keep_logits, int S) const;
  // Activation recomputation (train.recompute, engine/graph/recompute.h): the segment that a
  // forward node recorded under `scope` belongs to at setting `r`, "" for none. Kinds with
  // segments list "train.recompute" in keys(); the others keep this default.
  virtual std::string recompute_segment(const std::string& scope, Recompute r) const { return {}; }
  // True for kinds with segments to recompute: those whose keys() list "train.recompute".
  bool has_recompute_segments() const;
  // FLOPs a trained token costs (forward + backward): 6 N for the N parameters that take part
  // in matrix products (tables that are only looked up excluded), plus what the kind adds
  // (attention's score and value products).
  virtual double flops_per_token(const ModelConfig& c) const;
  // What flops_per_token adds to 6 N, for reports ("attention's 12 L T C"); "" for nothing.
  virtual std::string flops_beyond_6n() const { return {}; }
  // Folds LoRA adapters into the base weights: the parameters of the same model without
  // LoRA (lora_rank 0), in that model's layout (supports_lora() kinds).
  virtual std::vector<float> merge_lora(const ModelConfig& c, const std::vector<float>& params,
                                        ModelConfig* merged) const;

  // Warm start (train.init_from; kinds that list it in keys()): `params`, this kind's model
  // `c` freshly initialised, takes what a trained model `from` (a checkpoint's model and flat
  // parameters, loaded from `origin`) can give it. Returns one line saying what it took and
  // what it left as initialised; a model it cannot take weights from is a UserError naming
  // `origin` and the mismatch.
  virtual std::string warm_start(const ModelConfig& c, std::vector<float>& params, const ModelConfig& from,
                                 const std::vector<float>& from_params, const std::string& origin) const;

  // Counting kinds.
  virtual std::unique_ptr<CountingModel> new_counts(const ModelConfig& c) const;
  // From a checkpoint's tensors; every problem is a UserError naming `origin`.
  virtual std::unique_ptr<CountingModel> load_counts(const StFile& f, const std::string& origin) const;
};

// The registry (models/kinds.def). model_kind: UserError naming model.kind when unknown.
const std::vector<const ModelKind*>& model_kinds();
const ModelKind* find_model_kind(const std::string& name);
const ModelKind& model_kind(const std::string& name);
std::string model_kind_names();  // "gpt, lstm, gru, rnn, ffnn, ngram"

// Every check of a model config, common and the kind's own; errors name `where`.
void validate_model(const ModelConfig& c, const std::string& where);

// Conveniences over the kind: its graph, the parameter layout shared by all its graphs
// (names, shapes, offsets; empty for counting kinds), the parameter count, and the
// initialisation from a seed.
// A Train graph with `recompute` other than None re-runs the kind's segments in backward.
// Pair kinds: S is the source length (0: cfg.src_len; ModelKind::build).
ModelGraph build_model(const ModelConfig& cfg, GraphMode mode, int B, int T, DType dtype, bool keep_logits = false,
                       Recompute recompute = Recompute::None, int S = 0);
std::vector<ParamInfo> param_layout(const ModelConfig& cfg);
int64_t count_params(const ModelConfig& cfg);
std::vector<float> init_params(const ModelConfig& cfg, uint64_t seed);

// The loss and, in training graphs, the backward pass: shared by the graph kinds' builders.
void finish_lm(ModelGraph& m, int logits, GraphMode mode, bool keep_logits);
// The parameters of `cfg` whose name `keep` accepts.
int64_t count_params_where(const ModelConfig& cfg, const std::function<bool(const std::string& name)>& keep);
// 6 x the parameters of `cfg`'s graph that take part in matrix products (all but `lookups`).
double six_n_flops(const ModelConfig& cfg, std::initializer_list<const char*> lookups);

}  // namespace loom
