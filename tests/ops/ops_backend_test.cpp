// ops_backend_test.cpp: every op of ops.def on every backend against the CPU reference in f64,
// after ggml's test-backend-ops. For each op, a few cases (sizes drawn from a seeded RNG) build
// a tiny graph around the op, backward included when the op has a backward rule, so the
// backward ops autodiff emits run too. Each case runs on the CPU backend in f64 (the
// reference) and on the backend under test, from the same inputs: random, never zero, and
// rounded to bf16 so that every float type holds them exactly. Every output of the op, every
// input gradient, every parameter gradient and every input the op writes is compared with the
// tolerance of the backend's float type (kTolerances); NaN never passes; the worst element is
// named on failure.
//
// Poison: the executor fills its arena (activations, written gradients) with NaN bytes;
// parameter gradients accumulate (+=), so they start from random values instead (a kernel that
// overwrites, or skips an element, shows); the part of a KV cache the op must neither read nor
// write is NaN on input and must still be NaN after the run.
//
// Sizes drive the CUDA kernels' loops more than once under the emulator's 4 SMs: more rows
// than one wave of blocks covers, widths beyond one 256-column tile and not multiples of the
// 16-byte pack (and ones that are, for the vector paths), attention with partial query and
// key tiles, several batch items. The emulator runs about 10 ms a block, so the cases are as
// small as that allows.
//
// Built twice: with the emulated CUDA backend (label ops: CPU f32 and emulated bf16), and,
// with LOOM_CUDA_RUNTIME_HOST, against the real device (label gpu, exit 77 without one).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/rng.h"
#include "engine/backend/backend.h"
#include "engine/graph/executor.h"
#include "engine/graph/graph.h"
#include "kernels/rnn/rnn.h"

namespace loom {
std::unique_ptr<Backend> make_cuda_backend(std::string* why);

namespace test {
namespace {

// ---- tolerances: |got - ref| <= atol * max(1, max |ref| of the tensor) + rtol * |ref| ---------
// The f64 reference is exact enough to be the truth. f32: accumulation order only. bf16: every
// activation the op writes is rounded to 8 significant bits (2^-9 relative), statistics and
// parameter gradients are f32; the atol term scales with the tensor so that a gradient summed
// over many rows (whose elements may cancel to near zero) is held to the tensor's own scale.
struct Tolerance {
  DType dtype;
  double atol, rtol;
};
constexpr Tolerance kTolerances[] = {
    {DType::F32, 1e-5, 1e-5},
    {DType::BF16, 1e-2, 1e-2},
};
Tolerance tolerance_for(DType dt) {
  for (const auto& t : kTolerances)
    if (t.dtype == dt) return t;
  LOOM_CHECK(false, "no tolerance for ", dtype_name(dt));
  return {};
}

double round_bf16(double v) { return from_bf16(to_bf16(static_cast<float>(v))); }

// ---- a case: the graph around one op, the same in every float type ---------------------------

// Records the graph's inputs and parameters with their contents. Contents come from one RNG
// in declaration order, so every float type's build of a case gets the same numbers.
class CaseBuilder {
 public:
  CaseBuilder(Graph& g, uint64_t seed) : g(g), rng_(seed) {}

  // A float input of the activation type; its gradient is compared.
  int input(const std::string& name, const Shape& s, double scale = 1.0) {
    return input_in(g.float_dtype(), name, s, scale);
  }
  // A float input of dtype dt whose gradient is compared (a computed recurrent state).
  int input_in(DType dt, const std::string& name, const Shape& s, double scale = 1.0) {
    const int v = constant(name, s, dt, scale);
    wrt.push_back(v);
    return v;
  }
  // A float input without gradient (a recurrent state, a KV cache).
  int constant(const std::string& name, const Shape& s, DType dt, double scale = 1.0) {
    const int v = g.input(name, s, dt);
    floats[v] = draw(numel(s), 0.0, scale);
    return v;
  }
  int ints(const std::string& name, const Shape& s, std::vector<int32_t> data) {
    LOOM_CHECK(static_cast<int64_t>(data.size()) == numel(s), name, ": ", data.size(), " values for ", shape_str(s));
    const int v = g.input(name, s, DType::I32);
    int_data[v] = std::move(data);
    return v;
  }
  // Integers uniform in [0, hi).
  int tokens(const std::string& name, const Shape& s, int64_t hi) {
    std::vector<int32_t> d(numel(s));
    for (auto& t : d) t = static_cast<int32_t>(rng_.below(hi));
    return ints(name, s, std::move(d));
  }
  // A parameter drawn around `center` (1 for gains); frozen ones get no gradient.
  int param(const std::string& name, const Shape& s, double center = 0.0, double scale = 1.0, bool trainable = true) {
    const int v = g.param(name, s, Init::Normal, 1.0f, false);
    ParamInfo& p = g.params.back();
    p.trainable = trainable;
    param_data.push_back(draw(p.count(), center, scale));
    return v;
  }
  // An input the op writes into; compared after the run.
  void written(int v) { mutated.push_back(v); }

  Graph& g;
  std::vector<int> wrt, mutated;
  std::map<int, std::vector<double>> floats;     // float inputs' contents
  std::map<int, std::vector<int32_t>> int_data;  // integer inputs' contents
  std::vector<std::vector<double>> param_data;   // per parameter, in Graph::params order

 private:
  // N(center, scale^2) rounded to bf16, never zero.
  std::vector<double> draw(int64_t n, double center, double scale) {
    std::vector<double> d(n);
    for (auto& x : d) {
      x = round_bf16(center + scale * rng_.normal());
      if (x == 0) x = round_bf16(0.5 * scale);
    }
    return d;
  }
  Rng rng_;
};

struct OpCase {
  std::string sizes;  // for failure messages
  uint64_t seed = 0;  // contents of inputs and parameters
  std::function<void(CaseBuilder&)> build;  // the op under test is the last forward node
};
// The k-th case of an op, its sizes drawn from r.
using CaseMaker = OpCase (*)(Rng& r, int k);

int64_t between(Rng& r, int64_t lo, int64_t hi) { return lo + static_cast<int64_t>(r.below(hi - lo + 1)); }
// A width in [lo, hi] that is not a multiple of the 8-element (16-byte) bf16 pack.
int64_t unpacked(Rng& r, int64_t lo, int64_t hi) {
  int64_t w = between(r, lo, hi);
  return w % 8 ? w : w + 1 + static_cast<int64_t>(r.below(7));
}
// A multiple of 8 in [lo, hi] (the vector paths).
int64_t packed(Rng& r, int64_t lo, int64_t hi) { return between(r, lo / 8, hi / 8) * 8; }

std::string dims(std::initializer_list<std::pair<const char*, int64_t>> d) {
  std::ostringstream s;
  for (const auto& [k, v] : d) s << (s.tellp() ? " " : "") << k << "=" << v;
  return s.str();
}

// ---- the cases, one maker per op with a forward graph; backward ops run inside them --------

// Row loop: B*T > 256 rows (32 blocks x 8 warps). Columns past one 256-wide tile. Backward:
// few tokens (runs longer than 32: the block-per-run path) or many (the warp path), and
// B*T > 2048 once (the sort's multi-tile merge).
OpCase make_embedding(Rng& r, int k) {
  const int64_t B = k == 2 ? 5 : between(r, 2, 3), T = k == 0 ? between(r, 86, 100) : k == 1 ? between(r, 20, 40)
                                                                                             : between(r, 420, 440);
  const int64_t C = k == 0 ? unpacked(r, 257, 300) : k == 1 ? packed(r, 264, 300) : unpacked(r, 9, 20);
  const int64_t V = k == 0 ? between(r, 5, 8) : k == 1 ? between(r, 200, 300) : between(r, 40, 80);
  const int64_t maxT = T + between(r, 0, 12);
  const bool with_pos = k == 1;  // decode-style start position
  const int32_t pos0 = with_pos ? static_cast<int32_t>(between(r, 0, maxT - T)) : 0;
  return {dims({{"B", B}, {"T", T}, {"C", C}, {"V", V}, {"maxT", maxT}, {"pos", pos0}}), r.next_u64(),
          [=](CaseBuilder& b) {
            const int tok = b.tokens("tokens", {B, T}, V);
            const int wte = b.param("wte", {V, C}), wpe = b.param("wpe", {maxT, C});
            const int pos = with_pos ? b.ints("pos", {1}, {pos0}) : -1;
            b.g.embedding(tok, wte, wpe, pos);
          }};
}

// Rows past one block of 8 (forward) and past 16 backward blocks x 4 warps; one row wider
// than the register path (the looped kernels). Frozen gain and bias once (dx only).
OpCase make_layernorm(Rng& r, int k) {
  const int64_t N = k == 2 ? between(r, 36, 44) : between(r, 65, 90);
  const int64_t C = k == 0 ? unpacked(r, 257, 300) : k == 1 ? packed(r, 264, 320) : unpacked(r, 2049, 2080);
  const bool frozen = k == 1;
  return {dims({{"N", N}, {"C", C}, {"frozen", frozen}}), r.next_u64(), [=](CaseBuilder& b) {
            const int x = b.input("x", {N, C}, 2.0);
            const int g = b.param("g", {C}, 1.0, 0.5, !frozen), bias = b.param("b", {C}, 0.0, 1.0, !frozen);
            b.g.layernorm(x, g, bias);
          }};
}

OpCase make_residual_layernorm(Rng& r, int k) {
  const int64_t B = between(r, 2, 3), T = between(r, 30, 45);
  const int64_t C = k == 0 ? packed(r, 264, 320) : unpacked(r, 40, 300);
  const bool frozen = k == 1;
  return {dims({{"B", B}, {"T", T}, {"C", C}, {"frozen", frozen}}), r.next_u64(), [=](CaseBuilder& b) {
            const int x = b.input("a", {B, T, C}), res = b.input("b", {B, T, C});
            const int g = b.param("g", {C}, 1.0, 0.5, !frozen), beta = b.param("beta", {C}, 0.0, 1.0, !frozen);
            b.g.residual_layernorm(x, res, g, beta);
          }};
}

// The product itself is cuBLASLt (the CPU reference under the emulator); the bias gradient
// is a kernel: more than 32 rows a chunk, two column tiles. Optional slots vary: no bias, no
// dx (x constant), no dw (w frozen).
OpCase make_linear(Rng& r, int k) {
  const int64_t B = between(r, 2, 3), T = between(r, 30, 45), K = between(r, 9, 40);
  const int64_t M = k == 0 ? unpacked(r, 257, 300) : k == 1 ? packed(r, 40, 80) : unpacked(r, 9, 30);
  const bool bias = k != 1, x_grad = k != 1, w_trainable = k != 2;
  return {dims({{"B", B}, {"T", T}, {"K", K}, {"M", M}, {"bias", bias}, {"dx", x_grad}, {"dw", w_trainable}}),
          r.next_u64(), [=](CaseBuilder& b) {
            const int x = x_grad ? b.input("x", {B, T, K}) : b.constant("x", {B, T, K}, b.g.float_dtype());
            const int w = b.param("w", {M, K}, 0.0, 0.3, w_trainable);
            b.g.linear(x, w, bias ? b.param("b", {M}) : -1);
          }};
}

OpCase make_linear_gelu(Rng& r, int k) {
  const int64_t N = between(r, 65, 90), K = between(r, 9, 40);
  const int64_t M = k == 0 ? packed(r, 96, 136) : unpacked(r, 100, 140);  // cuBLASLt's GELU epilogue wants M % 8 == 0
  const bool bias = k == 0;
  return {dims({{"N", N}, {"K", K}, {"M", M}, {"bias", bias}}), r.next_u64(), [=](CaseBuilder& b) {
            const int x = b.input("x", {N, K});
            b.g.linear_gelu(x, b.param("w", {M, K}, 0.0, 0.3), bias ? b.param("b", {M}) : -1);
          }};
}

// Elementwise kernels: a grid-stride loop over 16-byte packs (the arena keeps every tensor
// aligned), capped at 32 blocks of 256 threads, then a scalar tail. More than 8192 packs with
// a tail; whole packs only; a small odd shape.
Shape elementwise_shape(Rng& r, int k) {
  if (k == 0) return {4, between(r, 64, 70), unpacked(r, 260, 272)};
  if (k == 1) return {2, between(r, 30, 40), packed(r, 128, 160)};
  return {between(r, 2, 4), between(r, 3, 9), unpacked(r, 5, 30)};
}
OpCase make_gelu(Rng& r, int k) {
  const Shape s = elementwise_shape(r, k);
  return {shape_str(s), r.next_u64(), [=](CaseBuilder& b) { b.g.gelu(b.input("x", s, 2.0)); }};
}
OpCase make_tanh(Rng& r, int k) {
  const Shape s = elementwise_shape(r, k);
  return {shape_str(s), r.next_u64(), [=](CaseBuilder& b) { b.g.tanh(b.input("x", s, 1.5)); }};
}
OpCase make_add(Rng& r, int k) {
  const Shape s = elementwise_shape(r, k);
  return {shape_str(s), r.next_u64(), [=](CaseBuilder& b) { b.g.add(b.input("a", s), b.input("b", s)); }};
}
OpCase make_scale(Rng& r, int k) {
  const Shape s = elementwise_shape(r, k);
  const float f = static_cast<float>(round_bf16(0.25 + 2.0 * r.uniform()));
  return {shape_str(s) + " s=" + std::to_string(f), r.next_u64(),
          [=](CaseBuilder& b) { b.g.scale(b.input("x", s), f); }};
}

// Key lengths [B] in [1, T]: one row unpadded, the others random (a length 1 among them when
// B > 2), so whole key tiles lie past some lengths.
std::vector<int32_t> key_lengths(Rng& r, int64_t B, int64_t T) {
  std::vector<int32_t> len(static_cast<size_t>(B));
  for (auto& l : len) l = static_cast<int32_t>(1 + r.below(T));
  len[0] = static_cast<int32_t>(T);
  if (B > 2) len[2] = 1;
  return len;
}

// Bidirectional self-attention, and key padding with either mask (partial query and key
// tiles, several heads and batch rows).
OpCase make_attention_modes(Rng& r, int k) {
  const int64_t B = 3, H = between(r, 1, 2), D = k == 1 ? 32 : 16, T = between(r, 65, 140);
  const bool causal = k == 2, padded = k != 0;
  const std::vector<int32_t> len = padded ? key_lengths(r, B, T) : std::vector<int32_t>{};
  return {dims({{"B", B}, {"T", T}, {"H", H}, {"D", D}, {"causal", causal}, {"padded", padded}}), r.next_u64(),
          [=](CaseBuilder& b) {
            const int kl = padded ? b.ints("key_len", {B}, len) : -1;
            b.g.attention(b.input("qkv", {B, T, 3 * H * D}), static_cast<int>(H),
                          AttentionMask{.causal = causal, .key_len = kl});
          }};
}

// Query tiles of 128 rows (D <= 64) and key tiles of 64: T past both and not a multiple of
// either; one case of whole tiles; several heads and batch items. Case 3 has the document
// mask, its doc_start from tokens through document_starts: documents of random lengths (1
// among them) that cross tile edges, and a batch item that is one whole document. Cases 4-6:
// make_attention_modes (bidirectional, key padding).
OpCase make_attention(Rng& r, int k) {
  if (k >= 4) return make_attention_modes(r, k - 4);
  const int64_t B = between(r, 2, 3), H = k == 1 ? 3 : between(r, 1, 2), D = k == 1 ? 32 : 16;
  const int64_t T = k == 0 || k == 3 ? between(r, 129, 190) : k == 1 ? between(r, 20, 60) : 128;
  const bool docs = k == 3;
  constexpr int32_t kEot = 0;
  std::vector<int32_t> tokens(docs ? B * T : 0);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const bool whole = static_cast<int64_t>(i) < T;  // batch item 0: no end-of-text
    tokens[i] = !whole && (r.below(25) == 0 || i % T == 3 || i % T == 4) ? kEot : static_cast<int32_t>(1 + r.below(9));
  }
  return {dims({{"B", B}, {"T", T}, {"H", H}, {"D", D}, {"documents", docs}}), r.next_u64(), [=](CaseBuilder& b) {
            const int doc = docs ? b.g.document_starts(b.ints("tokens", {B, T}, tokens), kEot) : -1;
            b.g.attention(b.input("qkv", {B, T, 3 * H * D}), static_cast<int>(H), doc);
          }};
}

// Queries over keys of another length (fewer and more), with and without key padding.
OpCase make_cross_attention(Rng& r, int k) {
  const int64_t B = 3, H = between(r, 1, 2), D = k == 1 ? 32 : 16;
  const int64_t Tq = k == 0 ? between(r, 5, 20) : between(r, 65, 140), Tk = k == 1 ? between(r, 10, 30) : between(r, 65, 140);
  const bool padded = k != 2;
  const std::vector<int32_t> len = padded ? key_lengths(r, B, Tk) : std::vector<int32_t>{};
  return {dims({{"B", B}, {"Tq", Tq}, {"Tk", Tk}, {"H", H}, {"D", D}, {"padded", padded}}), r.next_u64(),
          [=](CaseBuilder& b) {
            const int kl = padded ? b.ints("key_len", {B}, len) : -1;
            b.g.cross_attention(b.input("q", {B, Tq, H * D}), b.input("kv", {B, Tk, 2 * H * D}), static_cast<int>(H), kl);
          }};
}

// New queries over cached encoder keys/values: two beams a source row, a query at a time and
// several, more keys than the kernel's 128-thread chunk once.
OpCase make_cross_attention_decode(Rng& r, int k) {
  const int64_t Bk = 2, beams = k == 0 ? 2 : 1, H = 2, D = k == 0 ? 16 : 32, Tn = k == 0 ? 1 : between(r, 3, 5);
  const int64_t Tk = k == 0 ? between(r, 130, 160) : between(r, 20, 40);
  const std::vector<int32_t> len = key_lengths(r, Bk, Tk);
  return {dims({{"Bq", Bk * beams}, {"Bk", Bk}, {"Tn", Tn}, {"Tk", Tk}, {"H", H}, {"D", D}}), r.next_u64(),
          [=](CaseBuilder& b) {
            const int q = b.constant("q", {Bk * beams, Tn, H * D}, b.g.float_dtype());
            const int kv = b.constant("kv", {Bk, Tk, 2 * H * D}, b.g.float_dtype());
            b.g.cross_attention_decode(q, kv, static_cast<int>(H), b.ints("key_len", {Bk}, len));
          }};
}

// The recurrent decoder's attention step: dot with separate keys and values, unpadded; dot
// with the encoder states as keys and values (as Luong's decoder reads them) over more keys
// than a block's 128 threads; additive with a scoring vector and features beyond 128.
OpCase make_rnn_attention(Rng& r, int k) {
  const int64_t B = 3, Tq = between(r, 5, 20), Tk = k == 1 ? between(r, 130, 150) : between(r, 6, 30);
  const int64_t A = k == 2 ? between(r, 130, 140) : between(r, 9, 24), C = k == 0 ? between(r, 5, 12) : A;
  const bool padded = k != 0;
  const std::vector<int32_t> len = padded ? key_lengths(r, B, Tk) : std::vector<int32_t>{};
  const char* form = k == 2 ? "additive" : "dot";
  return {std::string(form) + " " + dims({{"B", B}, {"Tq", Tq}, {"Tk", Tk}, {"A", A}, {"C", C}, {"padded", padded}}),
          r.next_u64(), [=](CaseBuilder& b) {
            const int kl = padded ? b.ints("key_len", {B}, len) : -1;
            const int q = b.input("q", {B, Tq, A}, 0.4);
            const int keys = b.input("keys", {B, Tk, A}, 0.4);
            const int values = k == 0 ? b.input("values", {B, Tk, C}) : keys;
            const int v = k == 2 ? b.param("v", {A}, 0.0, 0.5) : -1;
            b.g.rnn_attention(q, keys, values, v, kl);
          }};
}

// Warp-per-row path (V <= 4096): more than 256 rows (the loss mean's loop), rows of more than
// 256 columns, unaligned widths; block-per-row path (V > 4096). Once the logits come from an
// op, so that dlogits is written in place over them.
OpCase make_softmax_xent(Rng& r, int k) {
  const int64_t N = k == 0 ? between(r, 260, 300) : k == 1 ? between(r, 5, 8) : between(r, 7, 20);
  const int64_t V = k == 0 ? unpacked(r, 257, 300) : k == 1 ? between(r, 4097, 4200) : packed(r, 24, 72);
  const bool in_place = k == 0;
  return {dims({{"N", N}, {"V", V}, {"in_place", in_place}}), r.next_u64(), [=](CaseBuilder& b) {
            int z = b.input("logits", {N, V}, 2.0);
            if (in_place) z = b.g.scale(z, 1.5f);
            b.g.softmax_xent(z, b.tokens("targets", {N}, V));
          }};
}

// A window of n tokens, padding row V; few distinct tokens (long runs in backward) and more
// than 256 expanded rows once.
OpCase make_context_embedding(Rng& r, int k) {
  const int64_t B = between(r, 2, 3), T = k == 0 ? between(r, 45, 60) : between(r, 10, 20), n = k == 0 ? 3 : 2;
  const int64_t E = k == 0 ? unpacked(r, 9, 15) : packed(r, 16, 32), V = k == 0 ? between(r, 5, 9) : between(r, 40, 60);
  return {dims({{"B", B}, {"T", T}, {"n", n}, {"E", E}, {"V", V}}), r.next_u64(), [=](CaseBuilder& b) {
            // Tokens in [0, V]: V itself is the padding row, so a real token may be padding too.
            const int tok = b.tokens("tokens", {B, T}, V + 1);
            b.g.context_embedding(tok, b.param("wte", {V + 1, E}), static_cast<int>(n), static_cast<int>(V));
          }};
}

// Each cell; w_hh in shared memory (the persistent kernel, B = 7 rows over 4 SMs: 2 a block)
// and too large for it (the per-step path); dx absent once (x constant). Both outputs get a
// cotangent (y and stateT). Cases 4 and 5 (GRU persistent, LSTM per-step) add per-row lengths
// (a full row, an empty one, one of a single step) and the gradient into state0.
OpCase make_recurrent(Rng& r, int k) {
  const Cell cells[] = {Cell::LSTM, Cell::GRU, Cell::RNN, Cell::LSTM, Cell::GRU, Cell::LSTM};
  const Cell cell = cells[k];
  const int64_t B = 7, S = between(r, 4, 6), I = between(r, 5, 20);
  const int64_t H = k == 0 || k == 5 ? between(r, 112, 120) : between(r, 17, 40);  // LSTM w_hh > 96 KiB at H >= 111
  const bool x_grad = k != 3, lengths = k >= 4;
  std::vector<int32_t> len = {static_cast<int32_t>(S), 0, 1};
  while (static_cast<int64_t>(len.size()) < B) len.push_back(static_cast<int32_t>(between(r, 1, S)));
  return {std::string(cell_name(cell)) + " " +
              dims({{"B", B}, {"S", S}, {"I", I}, {"H", H}, {"dx", x_grad}, {"len", lengths}}),
          r.next_u64(), [=](CaseBuilder& b) {
            const int64_t G = cell_gates(cell) * H;
            const int x = x_grad ? b.input("x", {B, S, I}) : b.constant("x", {B, S, I}, b.g.float_dtype());
            const int w_ih = b.param("w_ih", {G, I}, 0.0, 0.4), w_hh = b.param("w_hh", {G, H}, 0.0, 0.2);
            const int b_ih = b.param("b_ih", {G}, 0.0, 0.5), b_hh = b.param("b_hh", {G}, 0.0, 0.5);
            const Shape ss{cell_states(cell), B, H};
            const int s0 = lengths ? b.input_in(b.g.stat_dtype(), "state0", ss, 0.5)
                                   : b.constant("state0", ss, b.g.stat_dtype(), 0.5);
            b.g.recurrent(static_cast<int>(cell), x, w_ih, w_hh, b_ih, b_hh, s0, lengths ? b.ints("len", {B}, len) : -1);
          }};
}

// Rows reversed within lengths 0, 1, S and between; widths off and on the bf16 pack.
OpCase make_seq_reverse(Rng& r, int k) {
  const int64_t B = 4, S = between(r, 3, 9), C = k == 0 ? unpacked(r, 3, 20) : packed(r, 8, 40);
  const std::vector<int32_t> len = {0, 1, static_cast<int32_t>(S), static_cast<int32_t>(between(r, 2, S))};
  return {dims({{"B", B}, {"S", S}, {"C", C}}), r.next_u64(), [=](CaseBuilder& b) {
            b.g.seq_reverse(b.input("x", {B, S, C}), b.ints("len", {B}, len));
          }};
}

// The activations' dtype to the statistics' and back (bf16 <-> f32 on the CUDA backend).
OpCase make_cast(Rng& r, int k) {
  const int64_t R = between(r, 2, 5), C = unpacked(r, 3, 300);
  return {dims({{"R", R}, {"C", C}, {"to_stat", k == 0}}), r.next_u64(), [=](CaseBuilder& b) {
            if (k == 0)
              b.g.cast(b.input("x", {R, C}), b.g.stat_dtype());
            else
              b.g.cast(b.input_in(b.g.stat_dtype(), "x", {R, C}), b.g.float_dtype());
          }};
}

// One block per (b, h) walks the cache in chunks of 128 keys: past one chunk, and Tn new
// positions at once (prefill) past 128 elements of the cache write loop. Cache positions at
// and after pos + Tn are NaN: neither read nor written.
OpCase make_attention_decode(Rng& r, int k) {
  const int64_t B = 2, H = k == 0 ? 2 : 3, D = k == 0 ? 16 : 32, Tn = k == 0 ? 1 : between(r, 5, 8);
  const int64_t maxT = between(r, 140, 180), pos0 = k == 0 ? maxT - Tn - between(r, 0, 4) : between(r, 130, maxT - Tn);
  return {dims({{"B", B}, {"H", H}, {"D", D}, {"Tn", Tn}, {"maxT", maxT}, {"pos", pos0}}), r.next_u64(),
          [=](CaseBuilder& b) {
            const int qkv = b.constant("qkv", {B, Tn, 3 * H * D}, b.g.float_dtype());
            const int kc = b.constant("kcache", {B, H, maxT, D}, b.g.float_dtype());
            const int vc = b.constant("vcache", {B, H, maxT, D}, b.g.float_dtype());
            for (int c : {kc, vc}) {
              auto& d = b.floats[c];
              for (size_t i = 0; i < d.size(); ++i)
                if (static_cast<int64_t>(i / D) % maxT >= pos0 + Tn) d[i] = std::nan("");
              b.written(c);
            }
            b.g.attention_decode(qkv, kc, vc, b.ints("pos", {1}, {static_cast<int32_t>(pos0)}), static_cast<int>(H));
          }};
}

// The ops that get cases of their own: every op with a forward graph. Backward-only ops run in
// the backward part of these graphs (OpsCoverage checks that every op of ops.def runs).
struct OpCases {
  OpId op;
  int count;
  CaseMaker make;
};
const OpCases kOpCases[] = {
    {OpId::embedding, 3, make_embedding},
    {OpId::layernorm, 3, make_layernorm},
    {OpId::residual_layernorm, 2, make_residual_layernorm},
    {OpId::linear, 3, make_linear},
    {OpId::gelu, 3, make_gelu},
    {OpId::add, 3, make_add},
    {OpId::attention, 7, make_attention},
    {OpId::softmax_xent, 3, make_softmax_xent},
    {OpId::linear_gelu, 2, make_linear_gelu},
    {OpId::tanh, 3, make_tanh},
    {OpId::scale, 3, make_scale},
    {OpId::context_embedding, 2, make_context_embedding},
    {OpId::recurrent, 6, make_recurrent},
    {OpId::seq_reverse, 2, make_seq_reverse},
    {OpId::cast, 2, make_cast},
    {OpId::attention_decode, 2, make_attention_decode},
    {OpId::cross_attention, 3, make_cross_attention},
    {OpId::cross_attention_decode, 2, make_cross_attention_decode},
    {OpId::rnn_attention, 3, make_rnn_attention},
};

OpCase op_case(const OpCases& e, int k) {
  Rng r(0x6f7073ULL * 1000003u + static_cast<uint64_t>(e.op) * 131 + static_cast<uint64_t>(k));
  return e.make(r, k);
}

// ---- running a case -------------------------------------------------------------------------

// A tensor read back after the run, widened to double.
struct Result {
  std::string what;            // "output y", "gradient of input x", "gradient of parameter w", ...
  Shape shape;
  std::vector<double> values;
  std::vector<char> poisoned;  // elements NaN on input (written inputs only): must stay NaN
};

// The graph of a case in one float type, with the backward part when the op has a backward
// rule: the op's gradient-carrying outputs are seeded with random cotangents.
struct CaseGraph {
  explicit CaseGraph(DType dt) : g(dt) {}
  Graph g;
  std::unique_ptr<CaseBuilder> b;
  size_t node = 0;  // the op under test (backward may run the same op again: scale, add)
  std::vector<int> seeds;
  std::map<int, int> grads;  // input value -> its gradient value
};

std::unique_ptr<CaseGraph> build_case(const OpCase& c, OpId op, DType dt) {
  auto cg = std::make_unique<CaseGraph>(dt);
  Graph& g = cg->g;
  cg->b = std::make_unique<CaseBuilder>(g, c.seed);
  c.build(*cg->b);
  LOOM_CHECK(!g.nodes.empty() && g.nodes.back().op == op, "case of ", op_info(op).name, " ends with another op");
  cg->node = g.nodes.size() - 1;
  const Node last = g.nodes.back();
  const OpInfo& info = op_info(op);
  for (int v : last.out)
    if (v >= 0) g.mark_output(v);
  std::vector<std::pair<int, int>> seeds;
  for (int i = 0; i < info.n_diff_out; ++i) {
    const Value val = g.values[last.out[i]];  // a copy: g.input grows the value list
    const int s = g.input("seed." + std::string(info.out.name[i]), val.shape, val.dtype);
    seeds.push_back({last.out[i], s});
    cg->seeds.push_back(s);
  }
  if (!seeds.empty()) cg->grads = build_backward(g, seeds, cg->b->wrt);
  return cg;
}

// Host values in a dtype's bytes.
std::vector<unsigned char> encode(const std::vector<double>& d, DType dt) {
  std::vector<unsigned char> out(d.size() * dtype_size(dt));
  for (size_t i = 0; i < d.size(); ++i) {
    switch (dt) {
      case DType::F64: std::memcpy(&out[i * 8], &d[i], 8); break;
      case DType::F32: {
        const float f = static_cast<float>(d[i]);
        std::memcpy(&out[i * 4], &f, 4);
        break;
      }
      case DType::BF16: {
        const bf16 h = to_bf16(static_cast<float>(d[i]));
        std::memcpy(&out[i * 2], &h, 2);
        break;
      }
      case DType::I32: LOOM_CHECK(false, "encode: integer dtype");
    }
  }
  return out;
}
std::vector<double> decode(const unsigned char* p, size_t n, DType dt) {
  std::vector<double> d(n);
  for (size_t i = 0; i < n; ++i) {
    switch (dt) {
      case DType::F64: std::memcpy(&d[i], p + i * 8, 8); break;
      case DType::F32: {
        float f;
        std::memcpy(&f, p + i * 4, 4);
        d[i] = f;
        break;
      }
      case DType::BF16: {
        bf16 h;
        std::memcpy(&h, p + i * 2, 2);
        d[i] = from_bf16(h);
        break;
      }
      case DType::I32: LOOM_CHECK(false, "decode: integer dtype");
    }
  }
  return d;
}
std::vector<double> fetch(const Executor& ex, int v) {
  const Value& val = ex.graph().values[v];
  std::vector<unsigned char> bytes(val.bytes());
  ex.get(v, bytes.data(), bytes.size());
  return decode(bytes.data(), static_cast<size_t>(numel(val.shape)), val.dtype);
}

// Runs one case on `be` and reads back everything the comparison looks at. `ops` collects the
// ops the graph ran.
std::vector<Result> run_case(Backend& be, const OpCase& c, OpId op, std::set<OpId>* ops = nullptr) {
  auto cg = build_case(c, op, be.float_dtype());
  Graph& g = cg->g;
  const CaseBuilder& b = *cg->b;
  if (ops)
    for (const Node& n : g.nodes) ops->insert(n.op);
  Executor ex(g, be);

  // Parameters, and parameter gradients starting from random values (they accumulate).
  const DType pdt = g.float_dtype(), gdt = g.grad_dtype();
  std::vector<double> params(g.param_count), grads0(g.param_count);
  for (size_t p = 0; p < g.params.size(); ++p)
    std::copy(b.param_data[p].begin(), b.param_data[p].end(), params.begin() + g.params[p].offset);
  Rng grng(c.seed ^ 0x9a3dULL);
  for (auto& x : grads0) x = round_bf16(grng.normal());
  DeviceBuffer pbuf(be, params.size() * dtype_size(pdt)), gbuf(be, grads0.size() * dtype_size(gdt));
  if (!params.empty()) {
    be.to_device(pbuf.data(), encode(params, pdt).data(), pbuf.bytes());
    be.to_device(gbuf.data(), encode(grads0, gdt).data(), gbuf.bytes());
  }
  ex.bind_params(pbuf.data(), gbuf.data());

  // Every input is set: the executor zeroes input buffers, and zeros would hide a kernel
  // that reads the wrong input.
  for (size_t v = 0; v < g.values.size(); ++v)
    LOOM_CHECK(g.values[v].kind != ValueKind::Input || b.floats.count(v) || b.int_data.count(v) ||
                   std::count(cg->seeds.begin(), cg->seeds.end(), static_cast<int>(v)),
               "case input ", g.values[v].name, " is never set");
  for (const auto& [v, d] : b.floats) ex.set_input(v, encode(d, g.values[v].dtype).data(), g.values[v].bytes());
  for (const auto& [v, d] : b.int_data) ex.set_input(v, d.data(), d.size() * 4);
  Rng srng(c.seed ^ 0x5eedULL);
  for (int s : cg->seeds) {
    std::vector<double> d(numel(g.values[s].shape));
    for (auto& x : d) x = round_bf16(srng.normal());
    ex.set_input(s, encode(d, g.values[s].dtype).data(), g.values[s].bytes());
  }
  ex.run();
  be.synchronize();

  std::vector<Result> r;
  const Node& last = g.nodes[cg->node];
  const OpInfo& info = op_info(op);
  for (int i = 0; i < info.n_out; ++i)
    if (last.out[i] >= 0)
      r.push_back({"output " + std::string(info.out.name[i]), g.values[last.out[i]].shape, fetch(ex, last.out[i]), {}});
  for (int v : b.wrt) {
    const auto it = cg->grads.find(v);
    if (info.n_diff_out > 0) LOOM_CHECK(it != cg->grads.end(), "no gradient for input ", g.values[v].name);
    if (it != cg->grads.end())
      r.push_back({"gradient of input " + g.values[v].name, g.values[v].shape, fetch(ex, it->second), {}});
  }
  if (g.param_count) {
    std::vector<unsigned char> bytes(gbuf.bytes());
    be.to_host(bytes.data(), gbuf.data(), bytes.size());
    const auto all = decode(bytes.data(), grads0.size(), gdt);
    for (const auto& p : g.params)
      if (p.grad_value >= 0)
        r.push_back({"gradient of parameter " + p.name, p.shape,
                     std::vector<double>(all.begin() + p.offset, all.begin() + p.offset + p.count()), {}});
  }
  for (int v : b.mutated) {
    Result m{"input " + g.values[v].name + " after the run", g.values[v].shape, fetch(ex, v), {}};
    for (double x : b.floats.at(v)) m.poisoned.push_back(std::isnan(x));
    r.push_back(std::move(m));
  }
  return r;
}

std::string index_str(int64_t i, const Shape& s) {
  std::vector<int64_t> idx(s.size());
  for (size_t d = s.size(); d-- > 0;) idx[d] = i % s[d], i /= s[d];
  return shape_str(idx);
}

// Empty when `got` matches `ref` within `tol`; else the failure, naming the worst element.
std::string compare(const Result& ref, const Result& got, const Tolerance& tol) {
  if (got.values.size() != ref.values.size())
    return ref.what + ": " + std::to_string(got.values.size()) + " elements, reference " +
           std::to_string(ref.values.size());
  double scale = 1;
  for (size_t i = 0; i < ref.values.size(); ++i)
    if (!ref.poisoned.size() || !ref.poisoned[i]) scale = std::max(scale, std::fabs(ref.values[i]));
  int64_t worst = -1;
  double worst_excess = 0;
  for (size_t i = 0; i < ref.values.size(); ++i) {
    const double a = got.values[i], e = ref.values[i];
    if (!ref.poisoned.empty() && ref.poisoned[i]) {
      // Neither read nor written: the poison must survive (in the reference too).
      if (!std::isnan(a) || !std::isnan(e)) {
        std::ostringstream m;
        m << ref.what << ": element " << index_str(i, ref.shape) << " outside the op's range was written (got " << a
          << ", reference " << e << ")";
        return m.str();
      }
      continue;
    }
    const double bound = tol.atol * scale + tol.rtol * std::fabs(e);
    // NaN never passes: a NaN difference counts as the worst possible.
    const double excess = std::isnan(a) || std::isnan(e) ? INFINITY : std::fabs(a - e) / bound;
    if (worst < 0 || excess > worst_excess) worst = static_cast<int64_t>(i), worst_excess = excess;
  }
  if (worst < 0 || worst_excess <= 1) return {};
  std::ostringstream m;
  m.precision(8);
  m << ref.what << " " << shape_str(ref.shape) << ": worst element " << index_str(worst, ref.shape) << " got "
    << got.values[worst] << ", reference " << ref.values[worst] << ", |difference| "
    << std::fabs(got.values[worst] - ref.values[worst]) << " > " << tol.atol << " * " << scale << " + " << tol.rtol
    << " * |reference|";
  return m.str();
}

// Every case of one op on `be` against the f64 CPU reference. Returns the failures.
std::vector<std::string> check_op_on(const OpCases& e, Backend& be) {
  auto ref_be = make_cpu_backend(DType::F64);
  const Tolerance tol = tolerance_for(be.float_dtype());
  std::vector<std::string> failures;
  for (int k = 0; k < e.count; ++k) {
    const OpCase c = op_case(e, k);
    const auto ref = run_case(*ref_be, c, e.op), got = run_case(be, c, e.op);
    LOOM_CHECK(ref.size() == got.size(), "case ", k, ": different result lists");
    for (size_t i = 0; i < ref.size(); ++i) {
      const std::string f = compare(ref[i], got[i], tol);
      if (!f.empty())
        failures.push_back(std::string(op_info(e.op).name) + " case " + std::to_string(k) + " (" + c.sizes + ") on " +
                           be.name() + " (" + dtype_name(be.float_dtype()) + "): " + f);
    }
  }
  return failures;
}

std::unique_ptr<Backend> cuda_backend_or_skip() {
  std::string why;
  auto be = make_cuda_backend(&why);
  if (!be) ADD_FAILURE() << "no CUDA backend: " << why;
  return be;
}

// One test per (backend, op), registered from kOpCases: OpsCpuF32.<op> and OpsCudaEmu.<op>,
// or OpsCudaGpu.<op> in the real-device build.
class OpBackendTest : public ::testing::Test {
 public:
  OpBackendTest(const OpCases& e, bool cuda) : e_(e), cuda_(cuda) {}
  void TestBody() override {
    auto be = cuda_ ? cuda_backend_or_skip() : make_cpu_backend(DType::F32);
    if (!be) return;
    for (const auto& f : check_op_on(e_, *be)) ADD_FAILURE() << f;
  }

 private:
  const OpCases& e_;
  bool cuda_;
};

[[maybe_unused]] const bool kRegistered = [] {
  for (const auto& e : kOpCases) {
    const auto make = [&e](bool cuda) { return [&e, cuda]() -> ::testing::Test* { return new OpBackendTest(e, cuda); }; };
#if LOOM_CUDA_RUNTIME_HOST
    ::testing::RegisterTest("OpsCudaGpu", op_info(e.op).name, nullptr, nullptr, __FILE__, __LINE__, make(true));
#else
    ::testing::RegisterTest("OpsCpuF32", op_info(e.op).name, nullptr, nullptr, __FILE__, __LINE__, make(false));
    ::testing::RegisterTest("OpsCudaEmu", op_info(e.op).name, nullptr, nullptr, __FILE__, __LINE__, make(true));
#endif
  }
  return true;
}();

// The checks of the op list and of this harness run once, in the emulated build.
#if !LOOM_CUDA_RUNTIME_HOST

// Adding an op to ops.def without a case here fails this test, naming the op: every op must
// run in some case's graph (forward ops as the op under test, backward ops in its backward).
TEST(OpsCoverage, EveryOpOfOpsDefRunsInSomeCase) {
  std::set<OpId> ran;
  for (const auto& e : kOpCases)
    for (int k = 0; k < e.count; ++k) {
      const auto cg = build_case(op_case(e, k), e.op, DType::F32);
      for (const Node& n : cg->g.nodes) ran.insert(n.op);
    }
  for (int i = 0; i < kNumOps; ++i)
    EXPECT_TRUE(ran.count(static_cast<OpId>(i)))
        << "op " << kOpInfo[i].name << " (ops.def) runs in no case of tests/ops/ops_backend_test.cpp: add a maker to "
        << "kOpCases, or a case whose backward emits it";
}

// ---- the harness must be able to fail -------------------------------------------------------

// The CPU backend in f32 with a hook that may alter each call before it runs: the bugs the
// comparison exists to catch.
class TamperedBackend final : public Backend {
 public:
  explicit TamperedBackend(std::function<bool(OpCall&)> tamper) : tamper_(std::move(tamper)) {}
  std::string name() const override { return "cpu (tampered)"; }
  DType float_dtype() const override { return be_->float_dtype(); }
  void* alloc(size_t n) override { return be_->alloc(n); }
  void release(void* p) override { be_->release(p); }
  void to_device(void* d, const void* h, size_t n) override { be_->to_device(d, h, n); }
  void to_host(void* h, const void* s, size_t n) override { be_->to_host(h, s, n); }
  void zero(void* p, size_t n) override { be_->zero(p, n); }
  void copy(void* d, const void* s, size_t n) override { be_->copy(d, s, n); }
  void adamw(const ref::AdamWArgs& a, void* w, uint64_t seed) override { be_->adamw(a, w, seed); }
  double norm(const float* g, int64_t n) override { return be_->norm(g, n); }
#define LOOM_OP(name, in, out, n_diff) \
  void op_##name(const OpCall& c) override { forward(c); }
#include "engine/ops/ops.def"
#undef LOOM_OP

 private:
  // The hook returns false to skip the call (its outputs stay as they were: poison).
  void forward(OpCall c) {
    if (tamper_(c)) be_->run(c);
  }
  std::unique_ptr<Backend> be_ = make_cpu_backend(DType::F32);
  std::function<bool(OpCall&)> tamper_;
};

const OpCases& cases_of(OpId op) {
  for (const auto& e : kOpCases)
    if (e.op == op) return e;
  LOOM_CHECK(false, "no cases for ", op_info(op).name);
  return kOpCases[0];
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += x + "\n";
  return s;
}

// Layer norm's mean and rstd have the same shape: swapped, nothing crashes, the numbers lie.
TEST(OpsHarness, CatchesSwappedOutputs) {
  TamperedBackend be([](OpCall& c) {
    if (c.op == OpId::layernorm) std::swap(c.out[1], c.out[2]);
    return true;
  });
  const auto failures = check_op_on(cases_of(OpId::layernorm), be);
  ASSERT_FALSE(failures.empty()) << "swapped layer norm statistics passed";
  EXPECT_NE(joined(failures).find("output mean"), std::string::npos) << joined(failures);
}

// A backward kernel that never runs leaves its output poisoned (NaN): that never passes.
TEST(OpsHarness, CatchesAnOutputLeftPoisoned) {
  TamperedBackend be([](OpCall& c) { return c.op != OpId::gelu_bwd; });
  const auto failures = check_op_on(cases_of(OpId::gelu), be);
  ASSERT_FALSE(failures.empty()) << "a skipped gelu_bwd passed";
  EXPECT_NE(joined(failures).find("gradient of input x"), std::string::npos) << joined(failures);
}

TEST(OpsHarness, NanNeverPasses) {
  const Tolerance loose{DType::F32, 1e9, 1e9};
  Result ref{"output y", {3}, {1.0, 2.0, 3.0}, {}}, got = ref;
  EXPECT_EQ(compare(ref, got, loose), "");
  got.values[1] = std::nan("");
  EXPECT_NE(compare(ref, got, loose).find("[1]"), std::string::npos);
  ref.values[1] = std::nan("");  // a NaN reference is no excuse either
  EXPECT_NE(compare(ref, got, loose), "");
  // Poisoned on input: must stay NaN on both sides.
  ref.poisoned = {0, 1, 0};
  EXPECT_EQ(compare(ref, got, loose), "");
  got.values[1] = 0.5;
  EXPECT_NE(compare(ref, got, loose).find("outside the op's range"), std::string::npos);
}

#endif  // !LOOM_CUDA_RUNTIME_HOST

}  // namespace
}  // namespace test
}  // namespace loom
