// plan.h: `loom plan`'s report -- what a config's run needs before it is launched: its
// parameters, the FLOPs a token costs, its memory by category on a device (memory_report.h,
// the functions `loom train` checks itself with), the largest micro-batch that fits at each
// recompute setting, the compute-optimal token count (about 20 tokens per parameter: Hoffmann
// et al. 2022, "Training Compute-Optimal Large Language Models") against the planned run's,
// and the time the run takes at a stated rate.
#pragma once
#include <string>

#include "launch/run/config.h"
#include "launch/run/memory_report.h"

namespace loom {

// Tokens per parameter of a compute-optimal run (Hoffmann et al. 2022, Table 3 and section 3.4).
inline constexpr double kChinchillaTokensPerParam = 20;
// Where kChinchillaTokensPerParam comes from, for reports and docs.
inline constexpr const char* kChinchillaSource =
    "Hoffmann et al. 2022, \"Training Compute-Optimal Large Language Models\"";
// The model FLOPs utilisation a GPU plan assumes unless told (printed with every estimate).
inline constexpr double kDefaultPlanMfu = 0.40;
// The largest micro-batch a plan searches up to.
inline constexpr int kPlanBatchCap = 1 << 16;

struct PlanInput {
  std::string config_path;
  Config cfg;              // model.vocab resolved
  std::string vocab_note;  // where model.vocab comes from, when not from prepared data
  MemoryTarget target;     // the device and the ranks
  double tokens = 0;       // --tokens (0: train.steps x tokens a step)
  double hours = 0;        // --hours (0: the time for the tokens)
  double device_flops = 0;  // sustained FLOP/s of one device (peak x MFU, or the CPU's measured rate)
  std::string rate_what;    // how device_flops was found, for the report
  bool rate_per_device = true;  // false: the ranks share one device's rate (CPU ranks on one host)
};

// Parameters outside the token and position embeddings (Kaplan et al. 2020's N).
int64_t non_embedding_params(const ModelConfig& model);
// The whole report, one line per fact.
std::string plan_report(const PlanInput& in);

}  // namespace loom
