// run_comm.h: the communicator of a run, from the environment (rank discovery order in
// engine/comm/comm.h).
#pragma once
#include <memory>

#include "engine/comm/comm.h"
#include "launch/run/config.h"

namespace loom {

// With several ranks, device = "auto" is resolved here (cuda when NCCL and a GPU are present),
// since every rank must agree before the backend is made. A counting kind has no data-parallel
// mode: UserError with several ranks.
std::unique_ptr<Comm> comm_for_run(Config& cfg);

}  // namespace loom
