// model.cpp: dispatch from model.kind to the builder of that kind.
#include "models/model.h"

#include "engine/core/check.h"

namespace loom {

ModelGraph build_gpt(const ModelConfig& c, GraphMode mode, int B, int T, DType dt, bool keep_logits);
ModelGraph build_recurrent_lm(const ModelConfig& c, GraphMode mode, int B, int T, DType dt, bool keep_logits);
ModelGraph build_ffnn(const ModelConfig& c, GraphMode mode, int B, int T, DType dt, bool keep_logits);

bool is_graph_kind(const std::string& k) { return k == "gpt" || is_recurrent_kind(k) || k == "ffnn"; }
bool is_recurrent_kind(const std::string& k) { return k == "lstm" || k == "gru" || k == "rnn"; }

ModelGraph build_model(const ModelConfig& cfg, GraphMode mode, int B, int T, DType dtype, bool keep_logits) {
  if (cfg.kind == "gpt") return build_gpt(cfg, mode, B, T, dtype, keep_logits);
  LOOM_CHECK(mode != GraphMode::Decode, "model kind ", cfg.kind, " has no decode graph (it decodes with Eval)");
  if (is_recurrent_kind(cfg.kind)) return build_recurrent_lm(cfg, mode, B, T, dtype, keep_logits);
  if (cfg.kind == "ffnn") return build_ffnn(cfg, mode, B, T, dtype, keep_logits);
  user_error("model.kind: '", cfg.kind, "' is not a graph model (graph kinds: gpt, lstm, gru, rnn, ffnn)");
}

int64_t count_params(const ModelConfig& cfg) {
  if (!is_graph_kind(cfg.kind)) return 0;
  return build_model(cfg, GraphMode::Eval, 1, 1, DType::F32).g.param_count;
}

// The loss and, in training graphs, the backward pass: shared by the graph kinds.
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

}  // namespace loom
