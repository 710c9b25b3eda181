// plan.cpp: see plan.h. The memory lines are memory_report.h's, at the config's per-rank
// micro-batch; the rest is arithmetic on the kind's parameter layout and FLOP count.
#include "launch/run/plan.h"

#include <cstdio>

namespace loom {

namespace {

std::string with_commas(int64_t v) {
  std::string s = std::to_string(v);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<size_t>(i), ",");
  return s;
}

std::string num(const char* format, double v) {
  char b[64];
  std::snprintf(b, sizeof b, format, v);
  return b;
}

std::string duration_str(double s) {
  if (s < 120) return num("%.1f s", s);
  if (s < 2 * 3600) return num("%.1f min", s / 60);
  if (s < 3 * 86400) return num("%.1f h", s / 3600);
  if (s < 3 * 365 * 86400) return num("%.1f days", s / 86400);
  return num("%.3g years", s / (365.25 * 86400));
}

}  // namespace

int64_t non_embedding_params(const ModelConfig& model) {
  int64_t n = 0;
  for (const ParamInfo& p : param_layout(model))
    if (p.name != "wte" && p.name != "wpe") n += p.count();
  return n;
}

std::string plan_report(const PlanInput& in) {
  const Config& cfg = in.cfg;
  const ModelConfig& m = cfg.model;
  const MemoryTarget& t = in.target;
  const ModelKind& kind = model_kind(m.kind);
  const std::string per = t.host ? "rank" : "GPU";
  std::string s = "loom plan | " + in.config_path + " | model " + m.kind + " " + kind.describe(m) +
                  " T=" + std::to_string(m.seq_len) + " V=" + std::to_string(m.vocab) + " | " + t.device +
                  (t.world > 1 ? " x " + std::to_string(t.world) : "") + "\n";
  if (!in.vocab_note.empty()) s += "note: " + in.vocab_note + "\n";
  if (kind.counts()) {
    s += "model.kind = " + m.kind +
         " counts n-grams in one pass: no parameters, gradients or activations to plan; its table grows with the "
         "distinct contexts of the data\n";
    return s;
  }

  const int64_t n = count_params(m), n_body = non_embedding_params(m);
  const double fpt = kind.flops_per_token(m);
  s += "parameters: " + with_commas(n) + " (" + with_commas(n_body) + " without the token and position embeddings)\n";
  const std::string beyond = kind.flops_beyond_6n();
  s += std::string(kind.learns_pairs() ? "FLOPs per target token: " : "FLOPs per token: ") + num("%.3g", fpt) +
       " to train (forward + backward: 6N over the matrix products" + (beyond.empty() ? "" : ", plus " + beyond) + ")\n";

  // Memory at the config's micro-batch, then the largest that fits at each recompute setting.
  const int B = per_rank_batch(cfg, t.world);
  const MemoryUse use = memory_use(m, B, train_recompute(cfg), t);
  s += memory_report(cfg, use, t);
  if (const std::string fixes = fit_fixes(cfg, use, t); !fixes.empty()) s += "does not fit; to fit: " + fixes + "\n";
  s += "largest micro-batch per " + per + " that fits (x " + std::to_string(m.seq_len) + " tokens):";
  const bool segments = kind.has_recompute_segments();
  for (Recompute r : kRecomputeSettings) {
    if (!segments && r != Recompute::None) continue;
    const int b = largest_micro_batch(m, r, t, kPlanBatchCap);
    s += std::string(r == Recompute::None ? " " : " | ") + "recompute " + recompute_name(r) + " " +
         (b == 0 ? "none fits" : b >= kPlanBatchCap ? ">= " + std::to_string(b) : std::to_string(b));
  }
  s += "\n";

  // Tokens: compute-optimal, planned, and the time the plan takes at the stated rate.
  const double optimal = kChinchillaTokensPerParam * static_cast<double>(n);
  s += "compute-optimal: " + num("%.3g", optimal) + " tokens (" + num("%.0f", kChinchillaTokensPerParam) +
       " per parameter: " + kChinchillaSource + ")\n";
  const double rate = in.device_flops * (in.rate_per_device ? t.world : 1);  // FLOP/s of the whole run
  const double tokens_per_step =
      static_cast<double>(cfg.train.batch_size) * static_cast<double>(cfg.train.grad_accum) * m.seq_len;
  double tokens = 0;
  std::string what;
  if (in.hours > 0) {
    tokens = in.hours * 3600 * rate / fpt;
    what = "--hours " + num("%g", in.hours) + " at the rate below";
  } else if (in.tokens > 0) {
    tokens = in.tokens;
    what = "--tokens";
  } else {
    tokens = tokens_per_step * static_cast<double>(cfg.train.steps);
    what = "train.steps " + std::to_string(cfg.train.steps) + " x train.batch_size " +
           std::to_string(cfg.train.batch_size) + " x train.grad_accum " + std::to_string(cfg.train.grad_accum) +
           " x model.seq_len " + std::to_string(m.seq_len);
  }
  s += "planned: " + num("%.3g", tokens) + " tokens (" + what + "): " + num("%.3g", tokens / optimal) +
       "x the compute-optimal count, " + num("%.3g", tokens / static_cast<double>(n)) + " tokens per parameter";
  if (tokens_per_step > 0) s += ", " + num("%.0f", tokens / tokens_per_step) + " steps";
  s += "\n";
  const double flops = fpt * tokens;
  s += "time: " + num("%.3g", flops) + " FLOPs at " + num("%.4g", rate / 1e12) + " TFLOP/s (" + in.rate_what + ") = " +
       duration_str(flops / rate) + "; the compute-optimal count: " + duration_str(fpt * optimal / rate) + "\n";
  return s;
}

}  // namespace loom
