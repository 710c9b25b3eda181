// recompute_test.cpp: activation recomputation (engine/graph/recompute.h) on the CPU backend.
// Every setting must give the losses, gradients and weights of the graph without it, bit for
// bit (the clones read the same inputs as their originals and the CPU kernels are
// deterministic), through two AdamW steps of two accumulated micro-batches each, with LoRA
// adapters and with the document mask; the planner's peak must fall; and the rewritten graph
// must have the structure that makes that true, checked by a rule stated independently of the
// rewrite and shown to reject broken rewrites.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "core/rng.h"
#include "engine/graph/executor.h"
#include "engine/graph/planner.h"
#include "engine/graph/recompute.h"
#include "models/model.h"

namespace loom {
namespace {

ModelConfig tiny_gpt() { return {.n_layer = 2, .n_head = 2, .d_model = 16, .seq_len = 8, .vocab = 40}; }

ModelConfig tiny_lora_gpt() {
  ModelConfig c = tiny_gpt();
  c.lora_rank = 2;
  c.lora_alpha = 4;
  c.lora_targets = "attn,mlp";  // both: the MLP then has a separate gelu after the adapter's add
  return c;
}

// A vocabulary of 6 with end-of-text 0 cuts every window into several documents.
ModelConfig tiny_masked_gpt() {
  ModelConfig c = tiny_gpt();
  c.vocab = 6;
  c.document_mask = true;
  c.eot_id = 0;
  return c;
}

// What two optimizer steps leave behind, as raw floats.
struct Trace {
  std::vector<float> losses;               // per micro-batch
  std::vector<std::vector<float>> grads;   // the flat gradient buffer after each step's backward
  std::vector<float> params;               // after the second AdamW step
};

// Two training steps of `c` at setting `r`, each two micro-batches of random tokens whose
// gradients accumulate in the flat buffer (dloss = 1/2, as train.grad_accum = 2 runs them),
// then AdamW. The weights start from init_params plus noise, so LoRA's zero-initialised B
// matrices (and every gradient through them) are not zero.
Trace train_two_steps(const ModelConfig& c, Recompute r) {
  const int B = 2;
  auto be = make_cpu_backend();
  ModelGraph m = build_model(c, GraphMode::Train, B, c.seq_len, DType::F32, false, r);
  const int64_t n = m.g.param_count, trainable = m.g.trainable_prefix();
  std::vector<float> params = init_params(c, 5);
  Rng noise(9);
  for (auto& p : params) p += 0.05f * noise.normal();
  std::vector<float> grads(n), mom(n, 0.0f), vel(n, 0.0f);
  Executor ex(m.g, *be);
  ex.bind_params(params.data(), grads.data());
  const float dloss = 0.5f;
  ex.set_input(m.dloss, &dloss, 4);
  Rng tokens(31);
  std::vector<int32_t> x(static_cast<size_t>(B) * c.seq_len), y(x.size());
  Trace t;
  for (int step = 1; step <= 2; ++step) {
    std::fill(grads.begin(), grads.end(), 0.0f);
    for (int micro = 0; micro < 2; ++micro) {
      for (auto& v : x) v = static_cast<int32_t>(tokens.below(c.vocab));
      for (auto& v : y) v = static_cast<int32_t>(tokens.below(c.vocab));
      ex.set_input(m.tokens, x.data(), x.size() * 4);
      ex.set_input(m.targets, y.data(), y.size() * 4);
      ex.run();
      t.losses.push_back(ex.fetch<float>(m.loss)[0]);
    }
    t.grads.push_back(grads);
    be->adamw({params.data(), grads.data(), mom.data(), vel.data(), nullptr, trainable, 1e-2f, 0.9f, 0.95f, 1e-8f,
               0.1f, 1.0f, step},
              nullptr, static_cast<uint64_t>(step));
  }
  t.params = params;
  return t;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Bit-identical to `none` at every setting, naming the first parameter tensor that differs.
void expect_bit_identical(const ModelConfig& c) {
  const Trace base = train_two_steps(c, Recompute::None);
  const auto layout = param_layout(c);
  for (Recompute r : {Recompute::Attention, Recompute::Mlp, Recompute::Block}) {
    SCOPED_TRACE(recompute_name(r));
    const Trace t = train_two_steps(c, r);
    EXPECT_TRUE(same_bits(t.losses, base.losses)) << "loss " << t.losses[0] << " vs " << base.losses[0];
    ASSERT_EQ(t.grads.size(), base.grads.size());
    for (size_t s = 0; s < t.grads.size(); ++s)
      for (const auto& p : layout)
        EXPECT_EQ(std::memcmp(t.grads[s].data() + p.offset, base.grads[s].data() + p.offset, p.count() * 4), 0)
            << "gradient of " << p.name << " at step " << s + 1;
    EXPECT_TRUE(same_bits(t.params, base.params)) << "weights after two AdamW steps";
  }
  // A comparison that cannot fail proves nothing: the gradients must be real numbers, not all
  // zero, and the second step must see other gradients than the first.
  bool nonzero = false, finite = true;
  for (float g : base.grads[0]) nonzero |= g != 0, finite &= std::isfinite(g);
  EXPECT_TRUE(nonzero && finite);
  EXPECT_FALSE(same_bits(base.grads[0], base.grads[1]));
}

TEST(Recompute, GptBitIdenticalToNone) { expect_bit_identical(tiny_gpt()); }
TEST(Recompute, LoraGptBitIdenticalToNone) { expect_bit_identical(tiny_lora_gpt()); }
TEST(Recompute, DocumentMaskedGptBitIdenticalToNone) { expect_bit_identical(tiny_masked_gpt()); }

TEST(Recompute, SettingNamesRoundTrip) {
  for (Recompute r : kRecomputeSettings) EXPECT_EQ(parse_recompute(recompute_name(r)), r);
  EXPECT_FALSE(parse_recompute("sometimes"));
  EXPECT_FALSE(parse_recompute("Block"));
}

// ---- structure ---------------------------------------------------------------------------

using SegmentOf = std::function<std::string(const std::string&)>;

SegmentOf gpt_segments(Recompute r) {
  return [r](const std::string& scope) { return model_kind("gpt").recompute_segment(scope, r); };
}

// The rule restated without the rewrite's code: after it, (1) every activation a node reads
// was written by an earlier node, and (2) a backward node reads an original forward value of
// a segment only if the forward node that wrote it hands some output to a forward node outside
// that segment or to the caller (it runs once and its outputs are the checkpoints). Everything
// else of a segment that backward needs comes from clones. Returns the first violation, or "".
std::string recompute_violation(const Graph& g, const SegmentOf& segment_of) {
  const size_t fe = g.forward_end, nv = g.values.size();
  std::vector<int> producer(nv, -1);
  std::vector<char> written(nv, 0);
  for (size_t k = 0; k < g.nodes.size(); ++k) {
    for (size_t i = 0; i < g.nodes[k].in.size(); ++i) {
      const int v = g.nodes[k].in[i];
      if (v >= 0 && g.values[v].kind == ValueKind::Activation && !written[v])
        return describe_slot(g, k, true, static_cast<int>(i)) + " is read before any node writes it";
    }
    for (int v : g.nodes[k].out)
      if (v >= 0) {
        written[v] = 1;
        if (k < fe) producer[v] = static_cast<int>(k);
      }
  }
  // Forward nodes whose outputs may stay alive for backward.
  std::vector<char> boundary(fe, 0);
  for (size_t k = 0; k < fe; ++k) {
    const std::string seg = segment_of(g.nodes[k].scope);
    for (int v : g.nodes[k].in)
      if (v >= 0 && producer[v] >= 0 && segment_of(g.nodes[producer[v]].scope) != seg) boundary[producer[v]] = 1;
  }
  for (size_t v = 0; v < nv; ++v)
    if (g.values[v].keep && producer[v] >= 0) boundary[producer[v]] = 1;
  for (size_t k = fe; k < g.nodes.size(); ++k)
    for (size_t i = 0; i < g.nodes[k].in.size(); ++i) {
      const int v = g.nodes[k].in[i];
      if (v < 0 || producer[v] < 0) continue;
      const int p = producer[v];
      if (!segment_of(g.nodes[p].scope).empty() && !boundary[p])
        return describe_slot(g, k, true, static_cast<int>(i)) + " reads an original value of segment " +
               segment_of(g.nodes[p].scope) + " that is not a checkpoint";
    }
  return "";
}

// Nodes of the backward pass that are clones (their scope says so).
int clones(const Graph& g) {
  int n = 0;
  for (size_t k = g.forward_end; k < g.nodes.size(); ++k)
    n += g.nodes[k].scope.ends_with(".recompute");
  return n;
}

TEST(Recompute, RewriteKeepsOnlyCheckpointsForBackward) {
  for (const ModelConfig& c : {tiny_gpt(), tiny_lora_gpt(), tiny_masked_gpt()})
    for (Recompute r : kRecomputeSettings) {
      SCOPED_TRACE(std::string(recompute_name(r)) + (c.lora_rank ? " lora" : "") + (c.document_mask ? " mask" : ""));
      const ModelGraph m = build_model(c, GraphMode::Train, 2, c.seq_len, DType::F32, false, r);
      EXPECT_EQ(recompute_violation(m.g, gpt_segments(r)), "");
      // The forward pass itself is untouched.
      const ModelGraph base = build_model(c, GraphMode::Train, 2, c.seq_len, DType::F32, false, Recompute::None);
      ASSERT_EQ(m.g.forward_end, base.g.forward_end);
      for (size_t k = 0; k < m.g.forward_end; ++k) EXPECT_EQ(m.g.nodes[k].op, base.g.nodes[k].op);
      EXPECT_EQ(m.g.nodes.size(), base.g.nodes.size() + clones(m.g));
    }
  // `none` leaves the graph without recomputation as it was: the checker then must flag
  // backward reading a block's inside, or it could not catch anything below.
  const ModelGraph plain = build_model(tiny_gpt(), GraphMode::Train, 2, 8, DType::F32);
  EXPECT_NE(recompute_violation(plain.g, gpt_segments(Recompute::Block)), "");
}

TEST(Recompute, ClonesWhatEachSettingNeedsPerLayer) {
  // Per layer, what backward reads inside the segment and so re-runs: attention: the qkv
  // product and attention (the output projection's result is read only by the residual add);
  // mlp: c_fc + GELU (c_proj's result likewise); block: both, plus the output projection
  // and the residual add + ln_2 between them, which are no longer checkpoints.
  const ModelConfig c = tiny_gpt();
  const std::pair<Recompute, int> expected[] = {
      {Recompute::None, 0}, {Recompute::Attention, 2}, {Recompute::Mlp, 1}, {Recompute::Block, 5}};
  for (const auto& [r, per_layer] : expected) {
    SCOPED_TRACE(recompute_name(r));
    const ModelGraph m = build_model(c, GraphMode::Train, 2, c.seq_len, DType::F32, false, r);
    EXPECT_EQ(clones(m.g), per_layer * c.n_layer);
  }
  // Other kinds name no segments: their graphs are left alone at every setting.
  const ModelConfig lstm{.kind = "lstm", .n_layer = 2, .d_model = 16, .seq_len = 6, .vocab = 40};
  const ModelGraph a = build_model(lstm, GraphMode::Train, 2, 6, DType::F32, false, Recompute::Block);
  const ModelGraph b = build_model(lstm, GraphMode::Train, 2, 6, DType::F32);
  EXPECT_EQ(a.g.nodes.size(), b.g.nodes.size());
}

TEST(Recompute, CheckerRejectsBrokenRewrites) {
  const ModelGraph m = build_model(tiny_gpt(), GraphMode::Train, 2, 8, DType::F32, false, Recompute::Block);
  const SegmentOf seg = gpt_segments(Recompute::Block);
  ASSERT_EQ(recompute_violation(m.g, seg), "");
  // The first backward node that reads a clone's value, and that clone.
  auto original_of = [&](int v) {
    const std::string name = m.g.values[v].name.substr(std::string("recompute.").size());
    for (size_t o = 0; o < m.g.values.size(); ++o)
      if (m.g.values[o].name == name) return static_cast<int>(o);
    return -1;
  };
  size_t reader = 0, slot = 0, clone_node = 0;
  for (size_t k = m.g.forward_end; k < m.g.nodes.size() && !reader; ++k) {
    if (m.g.nodes[k].scope.ends_with(".recompute")) continue;
    for (size_t i = 0; i < m.g.nodes[k].in.size(); ++i) {
      const int v = m.g.nodes[k].in[i];
      if (v >= 0 && m.g.values[v].name.starts_with("recompute.")) {
        reader = k, slot = i;
        break;
      }
    }
  }
  ASSERT_GT(reader, 0u);
  for (size_t k = m.g.forward_end; k < reader; ++k)
    for (int v : m.g.nodes[k].out)
      if (v == m.g.nodes[reader].in[slot]) clone_node = k;
  ASSERT_GT(clone_node, 0u);
  {
    // Backward reading the original instead of the clone: it would keep it alive all along.
    Graph g = m.g;
    g.nodes[reader].in[slot] = original_of(g.nodes[reader].in[slot]);
    ASSERT_GE(g.nodes[reader].in[slot], 0);
    EXPECT_NE(recompute_violation(g, seg).find("not a checkpoint"), std::string::npos);
  }
  {
    // A clone placed after its reader.
    Graph g = m.g;
    const Node moved = g.nodes[clone_node];
    g.nodes.erase(g.nodes.begin() + static_cast<long>(clone_node));
    g.nodes.insert(g.nodes.begin() + static_cast<long>(reader), moved);
    EXPECT_NE(recompute_violation(g, seg).find("read before any node writes it"), std::string::npos);
  }
}

TEST(RecomputeDeathTest, RefusesToRerunANodeThatWritesACallersBuffer) {
  // A segment whose node writes an Input (as a decoder writes its KV cache): re-running it in
  // backward would write the caller's buffer a second time, so the rewrite must stop.
  Graph g;
  const int x = g.input("x", {4, 3}, DType::F32);
  const int w = g.param("w", {3, 3}, Init::Normal, 1, true);
  const int buf = g.input("buf", {4, 3}, DType::F32);
  g.set_scope("seg");
  g.add_node(OpId::linear, {x, w, -1}, {buf});
  const int y = g.gelu(buf);  // gelu's backward reads buf: the linear must be re-run
  const int seed = g.input("seed", {4, 3}, DType::F32);
  build_backward(g, {{y, seed}});
  EXPECT_DEATH(recompute_segments(g, [](const std::string& s) { return s; }), "output y of linear .* not an activation");
}

// ---- memory ------------------------------------------------------------------------------

TEST(Recompute, LowersThePlannersPeak) {
  // A shape where activations, not the logits, dominate (L=4, C=64, T=64, V=64, B=4). Measured
  // when written: none 4.3 MiB, attention 3.3 (0.77 of none), mlp 2.8 (0.65), block 1.7 (0.39).
  const ModelConfig c{.n_layer = 4, .n_head = 2, .d_model = 64, .seq_len = 64, .vocab = 64};
  std::vector<size_t> peak;
  for (Recompute r : kRecomputeSettings)
    peak.push_back(plan_memory(build_model(c, GraphMode::Train, 4, c.seq_len, DType::F32, false, r).g).arena_bytes);
  const size_t none = peak[0], attention = peak[1], mlp = peak[2], block = peak[3];
  EXPECT_LT(attention, none * 0.9);
  EXPECT_LT(mlp, none * 0.75);
  EXPECT_LT(block, none * 0.45);
  EXPECT_LT(block, mlp);
  EXPECT_LT(block, attention);
}

}  // namespace
}  // namespace loom
