// bench_train.cpp: the training-step benchmark. FLOPs per token are the kind's count
// (ModelKind::flops_per_token: 6N for the parameters of the matrix products, plus attention's
// 12·L·T·C for GPT, PaLM appendix B).
// The matrix-product ceiling is measured in the same run (a square sgemm), so the report can
// say what fraction of the floor the whole step reaches.
#include "launch/bench/bench_train.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <vector>

#include "engine/backend/device.h"
#include "engine/backend/peak.h"
#include "core/rng.h"
#include "engine/graph/executor.h"
#include "engine/optim/weights.h"

namespace loom {

namespace {
double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
}  // namespace

BenchTrainResult bench_train(const BenchTrainOptions& o) {
  auto be = make_backend(o.device);
  const int T = o.model.seq_len;
  ModelGraph tg = build_model(o.model, GraphMode::Train, o.batch, T, be->float_dtype(), false, o.recompute);
  const int64_t n = tg.g.param_count;
  BenchTrainResult r;
  r.params = n;
  r.flops_per_token = model_kind(o.model.kind).flops_per_token(o.model);

  DeviceWeights weights(*be, n);
  weights.upload(init_params(o.model, 1));
  DeviceBuffer grads(*be, n * 4), m(*be, n * 4), v(*be, n * 4);
  be->zero(m.data(), n * 4);
  be->zero(v.data(), n * 4);
  Executor ex(tg.g, *be);
  ex.bind_params(weights.graph_params(), grads.data());
  r.arena_bytes = ex.plan().arena_bytes;
  Rng rng(7);
  std::vector<int32_t> x(static_cast<size_t>(o.batch) * tg.T), y(x.size());  // tg.T: S + T on one sequence
  for (auto& t : x) t = static_cast<int32_t>(rng.below(o.model.vocab));
  for (auto& t : y) t = static_cast<int32_t>(rng.below(o.model.vocab));
  ex.set_input(tg.tokens, x.data(), x.size() * 4);
  ex.set_input(tg.targets, y.data(), y.size() * 4);
  if (tg.source >= 0) {  // pair kinds: full-length random sources
    std::vector<int32_t> src(static_cast<size_t>(o.batch) * tg.S), len(o.batch, tg.S);
    for (auto& t : src) t = static_cast<int32_t>(rng.below(o.model.vocab));
    ex.set_input(tg.source, src.data(), src.size() * 4);
    ex.set_input(tg.source_len, len.data(), len.size() * 4);
  }
  const float one = 1.0f;
  ex.set_input(tg.dloss, &one, 4);
  for (int v : tg.state_in) be->zero(ex.view(v).data, tg.g.values[v].bytes());
  int captured = -1;

  std::map<std::string, double> op_s;
  double op_t0 = 0;
  bool timing = false;
  if (o.op_profile)
    ex.on_node = [&](const Node& n, bool begin) {
      if (!timing) return;
      if (begin) {
        be->synchronize();
        op_t0 = now_s();
      } else {
        be->synchronize();
        op_s[op_info(n.op).name] += now_s() - op_t0;
      }
    };
  // The optimizer's passes, timed as rows beside the ops under --op-profile.
  auto timed = [&](const char* name, auto&& pass) {
    if (!(o.op_profile && timing)) return pass();
    be->synchronize();
    const double t0 = now_s();
    auto result = pass();
    be->synchronize();
    op_s[name] += now_s() - t0;
    return result;
  };
  std::vector<double> ms;
  for (int s = 0; s < o.warmup + o.steps; ++s) {
    timing = s >= o.warmup;
    const double t0 = now_s();
    timed("optimizer: zero", [&] { be->zero(grads.data(), n * 4); return 0; });
    // Timed as training runs it: captured into a CUDA graph after two eager steps (when the
    // backend can), eager otherwise; --op-profile keeps it eager so ops can be timed.
    if (captured >= 0) {
      be->replay(captured);
    } else if (be->can_capture() && !o.op_profile && s >= 2) {
      captured = be->capture([&] { ex.run(); });
      be->replay(captured);
    } else {
      ex.run();
    }
    const double norm = timed("optimizer: norm", [&] { return be->norm(static_cast<const float*>(grads.data()), n); });
    timed("optimizer: adamw", [&] {
      be->adamw({weights.master(), static_cast<const float*>(grads.data()), static_cast<float*>(m.data()),
                 static_cast<float*>(v.data()), nullptr, n, 1e-4f, 0.9f, 0.95f, 1e-8f, 0.1f,
                 norm > 1 ? static_cast<float>(1 / norm) : 1.0f, s + 1},
                weights.working(), static_cast<uint64_t>(s));
      return 0;
    });
    be->synchronize();
    if (s >= o.warmup) ms.push_back((now_s() - t0) * 1000);
  }
  for (const auto& [name, t] : op_s) r.op_ms.emplace_back(name, t * 1000 / o.steps);
  std::sort(r.op_ms.begin(), r.op_ms.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  std::sort(ms.begin(), ms.end());
  r.median_ms = ms[ms.size() / 2];
  const double tokens = static_cast<double>(o.batch) * T;
  r.tokens_per_s = tokens / (r.median_ms / 1000);
  r.gflops = r.tokens_per_s * r.flops_per_token / 1e9;
  Peak peak = device_peak(*be);
  remeasure_if_beaten(peak, r.gflops * 1e9);  // r.peak then says it was measured again
  if (be->name() == "cpu") {
    r.gemm_gflops = peak.flops / 1e9;
    r.stream_gbs = measure_cpu_stream_bytes_per_s() / 1e9;
    // Gradients zeroed (4 bytes a parameter written), their norm (4 read), AdamW (parameter,
    // gradient and both moments read, parameter and moments written: 28).
    r.optimizer_bytes = 36.0 * static_cast<double>(n);
  }
  r.peak = peak.what;
  r.mfu = mfu(r.flops_per_token, r.tokens_per_s, peak);
  return r;
}

double BenchTrainResult::bound_share() const {
  if (!(gemm_gflops > 0 && stream_gbs > 0 && tokens_per_s > 0)) return 0;
  const double step_flops = gflops * 1e9 * (median_ms / 1000);
  const double compute_s = step_flops / (gemm_gflops * 1e9), memory_s = optimizer_bytes / (stream_gbs * 1e9);
  return compute_s / (compute_s + memory_s);
}

}  // namespace loom
