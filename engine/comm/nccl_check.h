// nccl_check.h: NCCL_CHECK, the NCCL member of loom's check family (core/check.h,
// kernels/common/cuda_check.h), for nccl_comm.cpp.
//
// It throws rather than aborts: an NCCL call fails when another rank of the job was lost or the
// network broke, not because of a bug here, and the job must end with CommError (exit 3) so
// that `loom launch` can tell the rank that failed first from those that only noticed. what()
// is the call's name and NCCL's own text, "ncclAllReduce: remote process exited or there was
// a network error [<ncclGetLastError>]". ncclInProgress passes: a non-blocking communicator
// returns it for work it has accepted. nccl_comm.cpp turns a failed collective into its fuller
// report (the communicator aborted, the lost rank named) by catching this CommError.
#pragma once
#include <nccl.h>

#include "engine/comm/comm.h"
#include "kernels/common/cuda_check.h"

namespace loom {

// `result` of the NCCL call `name`: returns if it succeeded or is in progress, else throws.
inline void nccl_check(ncclResult_t result, const std::string& name) {
  if (result == ncclSuccess || result == ncclInProgress) return;
  // NCCL's last error message says more than the code (which call, which peer); its
  // communicator argument is unused, and a failed init has none.
  detail::library_fail<CommError>(name, ncclGetErrorString(result), ncclGetLastError(nullptr));
}

}  // namespace loom

#define NCCL_CHECK(expr) ::loom::nccl_check((expr), ::loom::detail::call_name(#expr))
