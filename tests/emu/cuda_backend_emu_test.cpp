// cuda_backend_emu_test.cpp: the CUDA backend end to end under the SIMT emulator: one whole
// training step of a tiny model of every graph kind (bf16 activations, f32 gradients,
// kernels + CPU-fallback products) against the CPU backend in f32, within bf16 tolerance;
// then AdamW on both.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "engine/backend/backend.h"
#include "core/rng.h"
#include "engine/graph/executor.h"
#include "launch/run/checkpoint.h"
#include "engine/optim/weights.h"
#include "models/model.h"

namespace loom {
std::unique_ptr<Backend> make_cuda_backend(std::string* why);

namespace {

struct StepResult {
  float loss;
  std::vector<float> grads, params_after, state;
};

StepResult train_step(Backend& be, const ModelConfig& c, int B, const std::vector<int32_t>& x,
                      const std::vector<int32_t>& y, const std::vector<float>& params, Recompute rc) {
  ModelGraph m = build_model(c, GraphMode::Train, B, c.seq_len, be.float_dtype(), false, rc);
  const int64_t n = m.g.param_count;
  DeviceWeights w(be, n);
  w.upload(params);
  DeviceBuffer grads(be, n * 4), mom(be, n * 4), vel(be, n * 4);
  be.zero(grads.data(), n * 4);
  be.zero(mom.data(), n * 4);
  be.zero(vel.data(), n * 4);
  Executor ex(m.g, be);
  ex.bind_params(w.graph_params(), grads.data());
  ex.set_input(m.tokens, x.data(), x.size() * 4);
  ex.set_input(m.targets, y.data(), y.size() * 4);
  if (m.source >= 0) {  // pair kinds: a full source and a padded one (key padding)
    std::vector<int32_t> src(static_cast<size_t>(B) * m.S), len(B, m.S);
    for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<int32_t>((i * 7 + 3) % c.vocab);
    len.back() = m.S / 2;
    ex.set_input(m.source, src.data(), src.size() * 4);
    ex.set_input(m.source_len, len.data(), len.size() * 4);
  }
  const float one = 1.0f;
  ex.set_input(m.dloss, &one, 4);
  // Recurrent kinds: a non-zero carried state (f32 on both backends), the same on both.
  Rng srng(77);
  for (int v : m.state_in) {
    std::vector<float> st(numel(m.g.values[v].shape));
    for (auto& e : st) e = 0.5f * srng.normal();
    ex.set_input(v, st.data(), st.size() * 4);
  }
  ex.run();
  StepResult r;
  r.loss = ex.fetch_f32(m.loss)[0];
  for (int v : m.state_out) {
    const auto st = ex.fetch_f32(v);
    r.state.insert(r.state.end(), st.begin(), st.end());
  }
  r.grads.resize(n);
  be.to_host(r.grads.data(), grads.data(), n * 4);
  be.adamw({w.master(), static_cast<const float*>(grads.data()), static_cast<float*>(mom.data()),
            static_cast<float*>(vel.data()), nullptr, n, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f, 1},
           w.working(), 5);
  be.synchronize();
  w.download(r.params_after);
  return r;
}

// One training step of model `c` on both backends; compares loss, final state, every
// gradient tensor and the weights after AdamW. `rc` applies to the CUDA backend's graph; the
// CPU runs without recomputation, the reference for every setting.
void expect_step_matches_cpu(const ModelConfig& c, int B, float init_scale, Recompute rc = Recompute::None,
                             bool deterministic = false) {
  std::string why;
  auto cuda = make_cuda_backend(&why);
  ASSERT_TRUE(cuda) << why;
  cuda->set_deterministic(deterministic);
  EXPECT_EQ(cuda->float_dtype(), DType::BF16);
  Rng rng(21);
  std::vector<int32_t> x(B * c.seq_len), y(x.size());
  for (auto& t : x) t = static_cast<int32_t>(rng.below(c.vocab));
  for (auto& t : y) t = static_cast<int32_t>(rng.below(c.vocab));
  if (model_kind(c.kind).learns_pairs()) y[y.size() - 1] = y[y.size() - 2] = kIgnoreTarget;  // padding
  // Larger-than-default init so that gradients are not dominated by rounding noise.
  std::vector<float> params = init_params(c, 3);
  for (auto& p : params) p *= init_scale;
  auto cpu = make_cpu_backend();
  const StepResult a = train_step(*cpu, c, B, x, y, params, Recompute::None);
  const StepResult b = train_step(*cuda, c, B, x, y, params, rc);

  ASSERT_TRUE(std::isfinite(b.loss));
  EXPECT_NEAR(b.loss, a.loss, 2e-2 * std::fabs(a.loss)) << "loss cpu " << a.loss << " cuda " << b.loss;
  ASSERT_EQ(a.state.size(), b.state.size());
  for (size_t i = 0; i < a.state.size(); ++i) ASSERT_NEAR(b.state[i], a.state[i], 3e-2) << "final state " << i;
  // Gradients: bf16 activations carry ~3 significant digits; compare per parameter tensor
  // relative to that tensor's largest gradient.
  const auto layout = param_layout(c);
  for (const auto& p : layout) {
    double gmax = 0, worst = 0;
    for (int64_t i = 0; i < p.count(); ++i) gmax = std::max(gmax, static_cast<double>(std::fabs(a.grads[p.offset + i])));
    for (int64_t i = 0; i < p.count(); ++i) {
      const float g = b.grads[p.offset + i];
      ASSERT_FALSE(std::isnan(g)) << p.name << "[" << i << "]";
      worst = std::max(worst, static_cast<double>(std::fabs(g - a.grads[p.offset + i])));
    }
    EXPECT_LE(worst, 0.06 * gmax + 1e-6) << p.name << ": worst |cuda - cpu| " << worst << " vs max |g| " << gmax;
  }
  // After AdamW the master weights agree closely (the update is sign-like, ~lr per element).
  double worst = 0;
  for (size_t i = 0; i < params.size(); ++i)
    worst = std::max(worst, static_cast<double>(std::fabs(a.params_after[i] - b.params_after[i])));
  EXPECT_LT(worst, 2.5e-2) << "updated weights differ";
  double moved = 0;
  for (size_t i = 0; i < params.size(); ++i) moved = std::max(moved, static_cast<double>(std::fabs(b.params_after[i] - params[i])));
  EXPECT_GT(moved, 1e-3) << "the cuda step did not update the weights";
}

TEST(CudaBackendEmu, TinyGptStepMatchesCpu) {
  // Head dim 16.
  expect_step_matches_cpu({.n_layer = 2, .n_head = 2, .d_model = 32, .seq_len = 16, .vocab = 48}, 2, 3.0f);
}

// Head dim 64 (and a window that is not a multiple of the tiles): the emulated device is an
// sm_90 one, so this step runs the sm_90a attention forward and backward; then again with
// train.deterministic's ordered dQ.
TEST(CudaBackendEmu, TinyGptWithHeadDim64StepMatchesCpu) {
  const ModelConfig c{.n_layer = 1, .n_head = 2, .d_model = 128, .seq_len = 70, .vocab = 48};
  expect_step_matches_cpu(c, 2, 3.0f);
  expect_step_matches_cpu(c, 2, 3.0f, Recompute::None, true);
}

// LoRA adapters on every projection (frozen base: layer norms without dg/db, products without
// dW, the scale op).
TEST(CudaBackendEmu, TinyLoraGptStepMatchesCpu) {
  expect_step_matches_cpu(
      {.n_layer = 2, .n_head = 2, .d_model = 32, .seq_len = 16, .vocab = 48, .lora_rank = 4, .lora_alpha = 8}, 2, 3.0f);
}

// The document mask (data.document_mask): document_starts and the masked attention kernels in a
// whole step. A vocabulary of 6 with end-of-text 0 cuts each window into several documents.
TEST(CudaBackendEmu, TinyDocumentMaskedGptStepMatchesCpu) {
  ModelConfig c{.n_layer = 2, .n_head = 2, .d_model = 32, .seq_len = 16, .vocab = 6};
  c.document_mask = true;
  c.eot_id = 0;
  expect_step_matches_cpu(c, 2, 3.0f);
}

// Activation recomputation (train.recompute = block): the clones of every block's forward
// nodes run in backward on the CUDA kernels; with LoRA and the document mask too.
TEST(CudaBackendEmu, TinyGptStepWithRecomputedBlocksMatchesCpu) {
  ModelConfig c{.n_layer = 2, .n_head = 2, .d_model = 32, .seq_len = 16, .vocab = 48};
  expect_step_matches_cpu(c, 2, 3.0f, Recompute::Block);
  c.lora_rank = 4;
  c.lora_alpha = 8;
  c.vocab = 6;
  c.document_mask = true;
  c.eot_id = 0;
  expect_step_matches_cpu(c, 2, 3.0f, Recompute::Block);
}

// The recurrent kinds (per-step products through the backend's gemm, fused cell kernels) and
// the feed-forward kind (context embedding, tanh).
TEST(CudaBackendEmu, TinyRecurrentAndFeedForwardStepsMatchCpu) {
  for (const char* kind : {"lstm", "gru", "rnn", "ffnn"}) {
    SCOPED_TRACE(kind);
    expect_step_matches_cpu(
        {.kind = kind, .n_layer = 2, .d_model = 16, .d_hidden = 32, .context = 3, .seq_len = 6, .vocab = 40}, 2, 3.0f);
  }
}

// The encoder-decoder kind: bidirectional attention with key padding, cross-attention, the
// frozen sinusoidal table (and learned positions, untied embeddings), padded targets ignored.
TEST(CudaBackendEmu, TinyEncDecStepMatchesCpu) {
  for (const bool tie : {true, false}) {
    ModelConfig c{.kind = "encdec", .n_head = 2, .d_model = 32, .seq_len = 12, .vocab = 40};
    c.src_len = 10;
    c.n_enc_layer = 2;
    c.n_dec_layer = 2;
    c.tie_embeddings = tie;
    c.positions = tie ? "sinusoidal" : "learned";
    SCOPED_TRACE(c.positions);
    expect_step_matches_cpu(c, 2, 3.0f);
  }
}

// The recurrent encoder-decoder: per-row lengths in both encoder directions (seq_reverse), the
// bridge's casts between the f32 state and bf16 activations, the decoder's gradient into its
// initial state and the encoder's out of its final one, each attention score.
// Weights x2 rather than x3: at x3 the LSTM's gates and the bridge's tanh saturate, and the
// bf16 rounding noise of the long chain (encoder, bridge, decoder, attention) reaches ~7% of
// the largest bias gradient.
TEST(CudaBackendEmu, TinyRnnSeqStepMatchesCpu) {
  for (const char* attention : {"general", "additive", "dot"}) {
    ModelConfig c{.kind = "rnn-seq2seq", .d_model = 32, .seq_len = 12, .vocab = 40};
    c.src_len = 10;
    c.n_enc_layer = 2;
    c.n_dec_layer = 2;
    c.attention = attention;
    c.cell = std::string(attention) == "additive" ? "gru" : "lstm";
    c.bidirectional = std::string(attention) != "dot";
    c.tie_embeddings = std::string(attention) == "dot";
    SCOPED_TRACE(attention);
    expect_step_matches_cpu(c, 2, 2.0f);
  }
}

TEST(CudaBackendEmu, CapturedStepEqualsEagerStep) {
  // On a real device the training step is replayed from a CUDA graph: it must give the same
  // bits as running the nodes eagerly. (The emulator has no graphs: nothing to compare.)
  std::string why;
  auto be = make_cuda_backend(&why);
  ASSERT_TRUE(be) << why;
  if (!be->can_capture()) GTEST_SKIP() << "backend " << be->name() << " runs eagerly only";
  const ModelConfig c{.n_layer = 2, .n_head = 2, .d_model = 128, .seq_len = 64, .vocab = 96};
  const int B = 2;
  ModelGraph m = build_model(c, GraphMode::Train, B, c.seq_len, be->float_dtype());
  const int64_t n = m.g.param_count;
  DeviceWeights w(*be, n);
  w.upload(init_params(c, 4));
  DeviceBuffer grads(*be, n * 4);
  Executor ex(m.g, *be);
  ex.bind_params(w.graph_params(), grads.data());
  Rng rng(8);
  std::vector<int32_t> x(B * c.seq_len);
  for (auto& t : x) t = static_cast<int32_t>(rng.below(c.vocab));
  ex.set_input(m.tokens, x.data(), x.size() * 4);
  ex.set_input(m.targets, x.data(), x.size() * 4);
  const float one = 1.0f;
  ex.set_input(m.dloss, &one, 4);
  auto step = [&] {
    be->zero(grads.data(), n * 4);
    ex.run();
  };
  std::vector<float> eager(n), graph(n);
  step();
  be->to_host(eager.data(), grads.data(), n * 4);
  const float eager_loss = ex.fetch_f32(m.loss)[0];
  const int gid = be->capture(step);
  be->replay(gid);
  be->to_host(graph.data(), grads.data(), n * 4);
  EXPECT_EQ(ex.fetch_f32(m.loss)[0], eager_loss);
  EXPECT_EQ(std::memcmp(eager.data(), graph.data(), n * 4), 0) << "graph replay differs from the eager step";
}

}  // namespace
}  // namespace loom
