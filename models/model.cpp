// model.cpp: the model-kind registry (models/kinds.def), the checks every kind shares, the
// parameter layout and initialisation, and the defaults of ModelKind's optional parts.
#include "models/model.h"

#include <algorithm>
#include <cmath>
#include <string_view>

#include "core/check.h"
#include "core/rng.h"

namespace loom {

#define LOOM_MODEL_KIND(fn) const ModelKind& fn();
#include "models/kinds.def"
#undef LOOM_MODEL_KIND

const std::vector<const ModelKind*>& model_kinds() {
  static const std::vector<const ModelKind*> kinds = {
#define LOOM_MODEL_KIND(fn) &fn(),
#include "models/kinds.def"
#undef LOOM_MODEL_KIND
  };
  return kinds;
}

const ModelKind* find_model_kind(const std::string& name) {
  for (const ModelKind* k : model_kinds())
    if (name == k->name()) return k;
  return nullptr;
}

std::string model_kind_names() {
  std::string s;
  for (const ModelKind* k : model_kinds()) s += (s.empty() ? "" : ", ") + std::string(k->name());
  return s;
}

const ModelKind& model_kind(const std::string& name) {
  const ModelKind* k = find_model_kind(name);
  LOOM_USER_CHECK(k, "model.kind: '", name, "' is not one of ", model_kind_names());
  return *k;
}

void require_in(const Require& req, int64_t v, int64_t lo, int64_t hi, const char* key) {
  req(v >= lo && v <= hi, key, "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                                   std::to_string(v));
}

void validate_model(const ModelConfig& c, const std::string& where) {
  const Require req = [&](bool ok, const char* key, const std::string& what) {
    LOOM_USER_CHECK(ok, where, ": ", key, ": ", what);
  };
  const ModelKind* kind = find_model_kind(c.kind);
  req(kind, "model.kind", "'" + c.kind + "' is not one of " + model_kind_names());
  kind->validate(c, req);
  require_in(req, c.d_hidden, 0, 4 * kMaxWidth, "model.d_hidden");
  require_in(req, c.lora_rank, 0, kMaxLoraRank, "lora.rank");
  req(c.lora_rank == 0 || kind->supports_lora(), "lora.rank",
      std::string("LoRA adapters are not supported by model.kind = ") + kind->name());
  req(std::isfinite(c.lora_alpha) && c.lora_alpha > 0, "lora.alpha", "must be > 0 and finite");
  req(c.lora_targets == "attn" || c.lora_targets == "mlp" || c.lora_targets == "attn,mlp" ||
          c.lora_targets == "mlp,attn",
      "lora.targets", "'" + c.lora_targets + "' is not one of attn, mlp, attn,mlp");
  require_in(req, c.seq_len, 1, kMaxSeqLen, "model.seq_len");
  req(!c.document_mask || kind->masks_documents(), "data.document_mask",
      std::string("no attention to mask in model.kind = ") + kind->name());
  require_in(req, c.eot_id, -1, INT32_MAX, "data.eot_id");
  // Keys only some kinds read: set away from their default, the kind must read them.
  auto reads = [&](const char* key) {
    for (const char* k : kind->keys())
      if (std::string(k) == key) return true;
    return false;
  };
  const ModelConfig defaults;
  for (const auto& [key, set] : {std::pair{"model.cell", c.cell != defaults.cell},
                                 std::pair{"model.bidirectional", c.bidirectional != defaults.bidirectional},
                                 std::pair{"model.attention", c.attention != defaults.attention}})
    req(!set || reads(key), key, std::string("not read by model.kind = ") + kind->name());
  if (kind->learns_pairs()) {
    require_in(req, c.src_len, 1, kMaxSeqLen, "model.src_len");
    req(c.positions == "sinusoidal" || c.positions == "learned", "model.positions",
        "'" + c.positions + "' is not one of sinusoidal, learned");
  }
}

ModelGraph build_model(const ModelConfig& cfg, GraphMode mode, int B, int T, DType dtype, bool keep_logits,
                       Recompute recompute, int S) {
  const ModelKind& kind = model_kind(cfg.kind);
  LOOM_CHECK(S >= 0 && S <= cfg.src_len, "source length ", S, " outside [0, model.src_len = ", cfg.src_len, "]");
  ModelGraph m = kind.build(cfg, mode, B, T, dtype, keep_logits, S > 0 ? S : cfg.src_len);
  if (mode == GraphMode::Train && recompute != Recompute::None)
    recompute_segments(m.g, [&](const std::string& scope) { return kind.recompute_segment(scope, recompute); });
  return m;
}

std::vector<ParamInfo> param_layout(const ModelConfig& cfg) {
  if (model_kind(cfg.kind).counts()) return {};
  return build_model(cfg, GraphMode::Eval, 1, 1, DType::F32).g.params;
}

int64_t count_params(const ModelConfig& cfg) {
  int64_t n = 0;
  for (const auto& p : param_layout(cfg)) n = std::max(n, p.offset + p.count());
  return n;
}

std::vector<float> init_params(const ModelConfig& cfg, uint64_t seed) {
  const auto layout = param_layout(cfg);
  std::vector<float> w(count_params(cfg));
  Rng rng(seed);
  for (const auto& p : layout) {
    float* d = w.data() + p.offset;
    const int64_t n = p.count();
    if (p.init == Init::Sinusoidal) {
      const int64_t C = p.shape.back();
      for (int64_t i = 0; i < n; ++i) {
        const int64_t t = i / C, c = i % C;
        const double w = std::pow(10000.0, -static_cast<double>(c / 2 * 2) / static_cast<double>(C));
        d[i] = static_cast<float>(p.init_std * (c % 2 ? std::cos(t * w) : std::sin(t * w)));
      }
      continue;
    }
    for (int64_t i = 0; i < n; ++i)
      d[i] = p.init == Init::Ones         ? 1.0f
             : p.init == Init::Zeros      ? 0.0f
             : p.init == Init::ForgetGate ? (i >= n / 4 && i < n / 2 ? 1.0f : 0.0f)
                                          : p.init_std * rng.normal();
  }
  return w;
}

void finish_lm(ModelGraph& m, int logits, GraphMode mode, bool keep_logits) {
  Graph& g = m.g;
  g.set_scope("head");
  m.logits = logits;
  m.targets = g.input("targets", {m.B, m.T}, DType::I32);
  m.loss = g.softmax_xent(m.logits, m.targets);
  g.mark_output(m.loss);
  if (mode == GraphMode::Eval && keep_logits) g.mark_output(m.logits);
  if (mode == GraphMode::Train) {
    m.dloss = g.input("dloss", {1}, g.stat_dtype());
    build_backward(g, {{m.loss, m.dloss}});
  } else {
    g.forward_end = g.nodes.size();
  }
}

int64_t count_params_where(const ModelConfig& cfg, const std::function<bool(const std::string& name)>& keep) {
  int64_t n = 0;
  for (const auto& p : param_layout(cfg))
    if (keep(p.name)) n += p.count();
  return n;
}

double six_n_flops(const ModelConfig& cfg, std::initializer_list<const char*> lookups) {
  return 6.0 * static_cast<double>(count_params_where(cfg, [&](const std::string& name) {
           return std::none_of(lookups.begin(), lookups.end(), [&](const char* l) { return name == l; });
         }));
}

// ---- defaults of the optional parts --------------------------------------------------------

ModelGraph ModelKind::build(const ModelConfig&, GraphMode, int, int, DType, bool, int) const {
  LOOM_CHECK(false, "model kind ", name(), " builds no graph (it counts)");
}
double ModelKind::flops_per_token(const ModelConfig& c) const { return six_n_flops(c, {}); }
bool ModelKind::has_recompute_segments() const {
  const std::vector<const char*> k = keys();
  return std::any_of(k.begin(), k.end(), [](const char* key) { return std::string_view(key) == "train.recompute"; });
}
std::vector<float> ModelKind::merge_lora(const ModelConfig&, const std::vector<float>&, ModelConfig*) const {
  LOOM_CHECK(false, "model kind ", name(), " has no LoRA adapters");
}
std::unique_ptr<Seq2SeqDecoder> ModelKind::seq2seq_decoder(const ModelConfig&, const ModelWeights&, Backend&) const {
  LOOM_CHECK(false, "model kind ", name(), " does not learn from pairs");
}
std::string ModelKind::warm_start(const ModelConfig&, std::vector<float>&, const ModelConfig&, const std::vector<float>&,
                                  const std::string&) const {
  LOOM_CHECK(false, "model kind ", name(), " does not warm-start");
}
std::unique_ptr<CountingModel> ModelKind::new_counts(const ModelConfig&) const {
  LOOM_CHECK(false, "model kind ", name(), " does not count");
}
std::unique_ptr<CountingModel> ModelKind::load_counts(const StFile&, const std::string&) const {
  LOOM_CHECK(false, "model kind ", name(), " does not count");
}

}  // namespace loom
