// graph.h: the recorded graph. Building only records values and nodes; the planner places
// them, the executor runs them on a backend. The node list holds forward nodes first, then
// (after autodiff) backward nodes; `forward_end` is the boundary.
#pragma once
#include <array>
#include <map>
#include <string>
#include <vector>

#include "engine/ops/ops.h"

namespace loom {

enum class ValueKind : uint8_t {
  Activation,  // placed in the arena by the planner
  Param,       // a slice of the flat parameter buffer
  ParamGrad,   // a slice of the flat gradient buffer
  Input,       // bound by the caller before each run (tokens, targets, seeds, caches)
};

struct Value {
  std::string name;
  Shape shape;
  DType dtype = DType::F32;
  ValueKind kind = ValueKind::Activation;
  int param = -1;     // index into Graph::params for Param / ParamGrad
  bool keep = false;  // live until the end of the run (graph outputs, requested gradients)
  size_t bytes() const { return static_cast<size_t>(numel(shape)) * dtype_size(dtype); }
};

struct Node {
  OpId op;
  std::vector<int> in, out;  // value ids; -1 for an absent optional slot
  Attrs attrs;
  std::string scope;         // e.g. "h.3.attn": profiling ranges and error messages
};

// ForgetGate: zeros except ones on the second quarter (an LSTM bias: the forget gate's rows).
// Sinusoidal: a position table [T, C], row t = init_std x (sin(t w_0), cos(t w_0), sin(t w_1),
// ...), w_i = 10000^(-2i / C) (the Transformer's fixed positions).
enum class Init : uint8_t { Normal, Zeros, Ones, ForgetGate, Sinusoidal };

struct ParamInfo {
  std::string name;
  Shape shape;
  int64_t offset = 0;  // elements into the flat buffers
  Init init = Init::Normal;
  float init_std = 0.02f;
  bool decay = false;      // weight decay applies (weight matrices only)
  bool trainable = true;   // frozen parameters get no gradient
  int value = -1;          // the Param value
  int grad_value = -1;     // the ParamGrad value (after autodiff), -1 if frozen
  int64_t count() const { return numel(shape); }
};

// Self-attention's masks: causal or bidirectional, with an optional document mask (causal
// only, doc_start i32 [B, T]) or key padding (key_len i32 [B]: keys >= key_len[b] masked).
struct AttentionMask {
  bool causal = true;
  int doc_start = -1;
  int key_len = -1;
};

class Graph {
 public:
  explicit Graph(DType float_dtype = DType::F32) : fdt_(float_dtype) {}
  // Activations and working weights.
  DType float_dtype() const { return fdt_; }
  // Per-row statistics (mean, rstd, lse), losses and parameter gradients: f32 when the
  // activations are bf16 (mixed precision), else the float type itself.
  DType stat_dtype() const { return fdt_ == DType::BF16 ? DType::F32 : fdt_; }
  DType grad_dtype() const { return stat_dtype(); }

  // --- values ---
  int input(const std::string& name, Shape shape, DType dtype);
  int param(const std::string& name, Shape shape, Init init, float init_std, bool decay);
  int new_value(const std::string& name, Shape shape, DType dtype, ValueKind kind = ValueKind::Activation);
  void mark_output(int v) { values[v].keep = true; outputs.push_back(v); }
  int find_param(const std::string& name) const;
  // Elements of the flat buffer the optimizer works on: every trainable parameter lies in
  // [0, trainable_prefix()) and every frozen one after it (models register trainable
  // parameters first when they freeze some, e.g. LoRA). param_count when nothing is frozen.
  int64_t trainable_prefix() const;

  // --- ops (record only) ---
  void set_scope(std::string s) { scope_ = std::move(s); }
  const std::string& scope() const { return scope_; }
  void add_node(OpId op, std::vector<int> in, std::vector<int> out, Attrs attrs = {});
  int embedding(int tokens, int wte, int wpe, int pos = -1);
  int layernorm(int x, int g, int b, float eps = 1e-5f);
  // The residual stream's add fused with the layer norm that reads it: {a + b, layernorm(a + b)}.
  std::pair<int, int> residual_layernorm(int a, int b, int g, int beta, float eps = 1e-5f);
  int linear(int x, int w, int b = -1);
  int gelu(int x);
  int add(int a, int b);
  // doc_start (optional, i32 [B, T]): the document mask, query i sees keys doc_start[i]..i.
  int attention(int qkv, int n_head, int doc_start = -1);
  // Self-attention with its masks chosen (kernels/attention/attention.h defines them).
  int attention(int qkv, int n_head, const AttentionMask& mask);
  // Queries q [B, Tq, C] over keys/values packed in kv [B, Tk, 2C] (an encoder's output
  // through one projection); key_len (optional, i32 [B]): key padding.
  int cross_attention(int q, int kv, int n_head, int key_len = -1);
  // Decoding: new queries q [Bq, Tn, C] over a cached kv [Bk, Tk, 2C], Bk dividing Bq.
  int cross_attention_decode(int q, int kv, int n_head, int key_len = -1);
  // The doc_start of the document mask from tokens [B, T], where token `eot` starts a document.
  int document_starts(int tokens, int eot);
  int attention_decode(int qkv, int kcache, int vcache, int pos, int n_head);
  int softmax_xent(int logits, int targets);  // returns the loss value [1]
  // gelu(x w^T + b) in one op (cuBLASLt's bias+GELU epilogue on CUDA); the pre-activation is
  // saved for backward.
  int linear_gelu(int x, int w, int b = -1);
  int tanh(int x);
  int scale(int x, float s);
  // For every position t, the embeddings of tokens t-n+1..t concatenated ([B,T,n*E]); positions
  // before the window, and tokens equal to `pad`, read row `pad` of wte (which then has pad+1 rows).
  int context_embedding(int tokens, int wte, int n, int pad);
  // A recurrent decoder's attention step (kernels/rnn_attention/rnn_attention.h): queries q
  // [B, Tq, A] over keys [B, Tk, A] and values [B, Tk, C], scored by q . k (v < 0) or
  // v . tanh(q + k) (v: a parameter [A]); key_len (optional, i32 [B]): key padding. Returns ctx
  // [B, Tq, C].
  int rnn_attention(int q, int keys, int values, int v = -1, int key_len = -1);
  // One recurrent layer over the sequence (kernels/rnn/rnn.h): returns {y, stateT}.
  // `cell` is loom::Cell as int; state0 is [NS,B,H] in the statistics dtype (an Input carried
  // between batches, or a computed state that then gets a gradient); len (optional, i32 [B]):
  // steps t >= len[b] leave row b's state unchanged, so stateT is its state at its length.
  std::pair<int, int> recurrent(int cell, int x, int w_ih, int w_hh, int b_ih, int b_hh, int state0, int len = -1);
  // x [B, S, C] with each row's first len[b] positions reversed (a backward-direction layer's
  // input, and the way back to source order for its output).
  int seq_reverse(int x, int len);
  // x in `dtype` (a computed recurrent state to the activations' dtype, and back).
  int cast(int x, DType dtype);

  std::vector<Value> values;
  std::vector<Node> nodes;
  std::vector<ParamInfo> params;
  std::vector<int> outputs;
  int64_t param_count = 0;   // elements in the flat parameter buffer
  size_t forward_end = 0;    // nodes [0, forward_end) are the forward pass

 private:
  DType fdt_;
  std::string scope_;
};

// Names slot `slot` of node `node` for error messages, by its ops.def name:
// "input g of layernorm (node 4, scope h.0.ln_1, value h.0.ln_1.g)".
std::string describe_slot(const Graph& g, size_t node, bool input, int slot);

// Graph::trainable_prefix of a parameter layout (e.g. a checkpoint's), param_count elements.
int64_t trainable_prefix(const std::vector<ParamInfo>& params, int64_t param_count);

// Reverse-mode autodiff. Appends backward nodes for d(seed outputs)/d(everything that needs
// it). Each seed pairs a forward value with an Input value holding its incoming gradient
// (for a loss: a [1] tensor of ones scaled by the caller). Trainable parameters get
// ParamGrad values (accumulated in the flat gradient buffer); the values in `wrt` get kept
// activation gradients. Returns value -> gradient value for `wrt`.
std::map<int, int> build_backward(Graph& g, const std::vector<std::pair<int, int>>& seeds,
                                  const std::vector<int>& wrt = {});

}  // namespace loom
