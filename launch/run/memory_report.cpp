// memory_report.cpp: see memory_report.h. Every number comes from the graphs the run would
// build (the planner's arena) and the buffer sizes the learner allocates; the suggestions of a
// run that does not fit are the same computation repeated with the change applied.
#include "launch/run/memory_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "engine/backend/device.h"
#include "engine/backend/peak.h"
#include "engine/graph/planner.h"

namespace loom {

namespace {

double input_bytes(const Graph& g) {
  double b = 0;
  for (const Value& v : g.values)
    if (v.kind == ValueKind::Input) b += static_cast<double>(v.bytes());
  return b;
}

bool mixed_precision(DType d) { return d != DType::F32 && d != DType::F64; }

bool fits(const MemoryUse& u, const MemoryTarget& t) { return u.total() <= t.free_bytes; }

}  // namespace

MemoryTarget memory_target(Backend& be, int world, bool zero) {
  MemoryTarget t;
  t.device = be.device_name();
  t.float_dtype = be.float_dtype();
  t.host = be.name() != "cuda";  // the CPU and the emulator allocate from the host
  t.library_workspace = be.name() == "cuda" ? static_cast<double>(kGpuLibraryWorkspaceBytes) : 0;
  t.world = world;
  t.zero = zero;
  t.free_bytes = static_cast<double>(be.free_memory());
  if (t.host) {
    t.free_bytes /= world;
    t.free_what = world > 1 ? "MemAvailable / " + std::to_string(world) + " ranks" : "MemAvailable";
  } else {
    t.free_what = "cudaMemGetInfo";
  }
  return t;
}

MemoryTarget memory_target(const std::string& key, int world, bool zero) {
  MemoryTarget t;
  t.world = world;
  t.zero = zero;
  if (key == "cpu") {
    t.device = "cpu";
    t.free_bytes = static_cast<double>(host_available_bytes()) / world;
    t.free_what = world > 1 ? "this host's MemAvailable / " + std::to_string(world) + " ranks" : "this host's MemAvailable";
    return t;
  }
  const GpuSpec* g = find_gpu(key);
  if (!g) {
    std::string known = "cpu";
    for (const std::string& k : gpu_keys()) known += ", " + k;
    user_error("--device: unknown device '", key, "' (known: ", known, ")");
  }
  t.device = g->name;
  t.float_dtype = DType::BF16;
  t.host = false;
  t.library_workspace = static_cast<double>(kGpuLibraryWorkspaceBytes);
  t.free_bytes = static_cast<double>(g->memory_bytes - kCudaContextBytes);
  t.free_what = bytes_str(static_cast<double>(g->memory_bytes)) + " less " + bytes_str(kCudaContextBytes) +
                " for the CUDA context";
  return t;
}

MemoryUse memory_use(const Graph& train, const Graph& eval, const MemoryTarget& t) {
  const double n = static_cast<double>(train.param_count), n_opt = static_cast<double>(train.trainable_prefix());
  const bool mixed = mixed_precision(t.float_dtype), zero = t.zero && t.world > 1;
  MemoryUse u;
  u.weights = n * static_cast<double>(dtype_size(t.float_dtype));
  u.master = mixed ? n * 4 : 0;
  u.gradients = n_opt * 4;
  // AdamWState's shards: rank r holds n_opt (r+1)/world - n_opt r/world; the largest is the ceiling.
  u.moments = 8 * (zero ? std::ceil(n_opt / t.world) : n_opt);
  const Plan tp = plan_memory(train);
  u.activations = static_cast<double>(tp.arena_bytes);
  u.activations_no_reuse = static_cast<double>(tp.total_bytes);
  u.eval_arena = static_cast<double>(plan_memory(eval).arena_bytes);
  u.inputs = input_bytes(train) + input_bytes(eval);
  u.decay_mask = n;
  u.gather = zero ? n_opt * 4 : 0;
  u.library = t.library_workspace;
  // A checkpoint downloads the weights and gathers both moments into host vectors.
  u.snapshot = t.host ? n * 4 + 8 * n_opt : 0;
  return u;
}

MemoryUse memory_use(const ModelConfig& model, int batch, Recompute recompute, const MemoryTarget& t) {
  const ModelGraph tg = build_model(model, GraphMode::Train, batch, model.seq_len, t.float_dtype, false, recompute);
  const ModelGraph eg = build_model(model, GraphMode::Eval, batch, model.seq_len, t.float_dtype);
  return memory_use(tg.g, eg.g, t);
}

double activation_bytes(const ModelConfig& model, int batch, Recompute recompute, DType float_dtype) {
  return static_cast<double>(
      plan_memory(build_model(model, GraphMode::Train, batch, model.seq_len, float_dtype, false, recompute).g).arena_bytes);
}

int largest_micro_batch(const ModelConfig& model, Recompute recompute, const MemoryTarget& t, int cap) {
  auto ok = [&](int b) { return fits(memory_use(model, b, recompute, t), t); };
  if (cap < 1 || !ok(1)) return 0;
  // Memory grows with the micro-batch: double until it does not fit (or passes cap), then bisect
  // between the last that fits and the first that does not (cap + 1 counts as not fitting).
  int lo = 1, hi = 2;
  while (hi <= cap && ok(hi)) lo = hi, hi = hi > cap / 2 ? cap + 1 : hi * 2;
  hi = std::min(hi, cap + 1);
  while (hi - lo > 1) {
    const int mid = lo + (hi - lo) / 2;
    (ok(mid) ? lo : hi) = mid;
  }
  return lo;
}

int per_rank_batch(const Config& cfg, int world) {
  LOOM_USER_CHECK(cfg.train.batch_size % world == 0, "train.batch_size: ", cfg.train.batch_size,
                  " is not divisible by the ", world, " ranks");
  return static_cast<int>(cfg.train.batch_size / world);
}

std::string bytes_str(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int u = 0;
  while (std::fabs(b) >= 1024 && u < 5) b /= 1024, ++u;
  char s[32];
  std::snprintf(s, sizeof s, u == 0 ? "%.0f %s" : "%.1f %s", b, units[u]);
  return s;
}

std::string memory_report(const Config& cfg, const MemoryUse& u, const MemoryTarget& t) {
  const Recompute r = train_recompute(cfg);
  const int B = per_rank_batch(cfg, t.world);
  const bool mixed = mixed_precision(t.float_dtype), zero = t.zero && t.world > 1;
  const std::string fd = dtype_name(t.float_dtype);
  std::string s = "memory per rank on " + t.device + " (micro-batch " + std::to_string(B) + " x " +
                  std::to_string(cfg.model.seq_len) + " tokens, recompute " + recompute_name(r) + ", " +
                  std::to_string(t.world) + (t.world == 1 ? " rank" : " ranks") + "):\n";
  auto line = [&](const char* what, double bytes, const std::string& note) {
    char b[96];
    std::snprintf(b, sizeof b, "  %-18s %10s", what, bytes_str(bytes).c_str());
    s += b + (note.empty() ? "" : "  " + note) + "\n";
  };
  line("weights", u.weights, mixed ? fd + " working copy" : fd);
  line("master weights", u.master, mixed ? "f32" : "none: the weights are the master copy");
  line("gradients", u.gradients, "f32");
  line("optimizer moments", u.moments,
       zero ? "AdamW m, v (f32), ZeRO-1: this rank's 1/" + std::to_string(t.world) : "AdamW m, v (f32)");
  std::string acts = "at peak";
  if (model_kind(cfg.model.kind).has_recompute_segments()) {
    const Recompute other = r == Recompute::None ? Recompute::Block : Recompute::None;
    acts += " (" + std::string(recompute_name(other)) + ": " +
            bytes_str(activation_bytes(cfg.model, B, other, t.float_dtype)) + ")";
  }
  line("activations", u.activations, acts + ", " + bytes_str(u.activations_no_reuse) + " without reuse");
  std::string ws = "validation arena " + bytes_str(u.eval_arena) + ", inputs " + bytes_str(u.inputs) +
                   ", decay mask " + bytes_str(u.decay_mask);
  if (u.gather > 0) ws += ", ZeRO-1 gather " + bytes_str(u.gather);
  if (u.library > 0) ws += ", cuBLASLt " + bytes_str(u.library);
  if (u.snapshot > 0) ws += ", checkpoint copies " + bytes_str(u.snapshot);
  line("workspace", u.workspace(), ws);
  const double left = t.free_bytes - u.total();
  line("total", u.total(),
       "of " + bytes_str(t.free_bytes) + " free (" + t.free_what + "): " +
           (left >= 0 ? "leaves " + bytes_str(left) : "DOES NOT FIT by " + bytes_str(-left)));
  return s;
}

std::string fit_fixes(const Config& cfg, const MemoryUse& use, const MemoryTarget& t) {
  if (fits(use, t)) return {};
  const ModelConfig& m = cfg.model;
  const Recompute r = train_recompute(cfg);
  const int B = per_rank_batch(cfg, t.world);
  const bool segments = model_kind(m.kind).has_recompute_segments();
  std::vector<std::string> fixes;
  // A smaller micro-batch; grad_accum keeps about the tokens a step.
  auto smaller_batch = [&](int b) {
    const int64_t accum = cfg.train.grad_accum * ((B + b - 1) / b);
    return "train.batch_size = " + std::to_string(static_cast<int64_t>(b) * t.world) + " with train.grad_accum = " +
           std::to_string(accum);
  };
  if (const int b = largest_micro_batch(m, r, t, B - 1); b > 0) fixes.push_back(smaller_batch(b));
  if (segments && r != Recompute::Block) {
    if (fits(memory_use(m, B, Recompute::Block, t), t))
      fixes.emplace_back("train.recompute = block");
    else if (const int b = largest_micro_batch(m, Recompute::Block, t, B - 1); b > 0)
      fixes.push_back("train.recompute = block and " + smaller_batch(b));
  }
  if (t.world > 1 && !t.zero) {
    MemoryTarget z = t;
    z.zero = true;
    if (fits(memory_use(m, B, r, z), z)) fixes.emplace_back("dist.zero = 1");
  }
  if (!t.host) {
    // The fewest GPUs (dividing train.batch_size) on which this run fits, as it is or with ZeRO-1.
    for (int w = t.world + 1; w <= 4096 && w <= cfg.train.batch_size; ++w) {
      if (cfg.train.batch_size % w != 0) continue;
      MemoryTarget more = t;
      more.world = w;
      const int b = static_cast<int>(cfg.train.batch_size / w);
      if (fits(memory_use(m, b, r, more), more)) {
        fixes.push_back(std::to_string(w) + " GPUs");
        break;
      }
      more.zero = true;
      if (!t.zero && fits(memory_use(m, b, r, more), more)) {
        fixes.push_back(std::to_string(w) + " GPUs with dist.zero = 1");
        break;
      }
    }
  }
  std::string what;
  for (size_t i = 0; i < fixes.size(); ++i) what += (i ? (i + 1 == fixes.size() ? ", or " : ", ") : "") + fixes[i];
  if (what.empty()) what = "a smaller model (model.n_layer, model.d_model) or model.seq_len: no micro-batch fits";
  return what;
}

void require_fits(const Config& cfg, const MemoryUse& use, const MemoryTarget& t) {
  const std::string what = fit_fixes(cfg, use, t);
  if (what.empty()) return;
  user_error("train.batch_size: this run needs ", bytes_str(use.total()), " per rank on ", t.device, " (weights ",
             bytes_str(use.weights + use.master), ", gradients ", bytes_str(use.gradients), ", optimizer moments ",
             bytes_str(use.moments), ", activations ", bytes_str(use.activations), ", workspace ",
             bytes_str(use.workspace()), ") but ", bytes_str(t.free_bytes), " are free (", t.free_what, "); to fit: ",
             what);
}

}  // namespace loom
