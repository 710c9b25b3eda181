// run_comm.cpp: see run_comm.h.
#include "launch/run/run_comm.h"

#include "core/check.h"
#include "engine/comm/nccl.h"

namespace loom {

std::unique_ptr<Comm> comm_for_run(Config& cfg) {
  const DistEnv env = discover_dist_env();
  LOOM_USER_CHECK(env.world == 1 || !model_kind(cfg.model.kind).counts(), "model.kind = ", cfg.model.kind,
                  ": a counted model counts in one process and has no data-parallel mode; run it without loom "
                  "launch / srun / mpirun (got ", env.world, " ranks)");
  if (env.world > 1 && cfg.device == "auto")
    cfg.device = make_nccl_comm && nccl_device_count && nccl_device_count() > 0 ? "cuda" : "cpu";
  return make_comm(env, cfg.device);
}

}  // namespace loom
