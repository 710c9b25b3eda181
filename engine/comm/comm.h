// comm.h: the communicator seam of the trainer. Data parallelism plugs in here: NCCL for GPU
// ranks (nccl_comm.cpp, real CUDA builds only), Gloo for CPU ranks (gloo_comm.cpp), and
// SingleComm for one process, whose collectives are identities. docs/distributed.md has the
// why of each choice.
//
// Every pointer handed to a collective is backend memory (host memory for CPU ranks, device
// memory for NCCL ranks). Collectives fail with CommError (naming the lost or late rank when
// it is known) instead of hanging: every implementation has a timeout.
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace loom {

// A collective failed: a rank died, hung past the timeout, or the rendezvous did not complete.
struct CommError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int world() const = 0;
  virtual std::string name() const = 0;  // "single", "gloo", "nccl"
  // In-place sum over ranks of n floats.
  virtual void allreduce_sum(float* data, int64_t n) = 0;
  // In place over data[0, sum(counts)): rank r's slice (offset = counts[0] + ... + counts[r-1])
  // receives the sum over ranks of that slice; the other slices are left undefined.
  virtual void reduce_scatter_sum(float* data, const std::vector<int64_t>& counts) = 0;
  // In place over data[0, sum(counts)): every rank receives every rank's slice.
  virtual void allgather(float* data, const std::vector<int64_t>& counts) = 0;
  // Sum of a host scalar over ranks (losses, metrics, agreement on stopping).
  virtual double allreduce_scalar(double v) = 0;
  // timeout_s > 0 replaces the collective timeout for this barrier (e.g. while rank 0 writes
  // a large checkpoint).
  virtual void barrier(double timeout_s = 0) = 0;

  // Gradient buckets (data parallelism), issued in backward order while backward runs:
  // bucket_ready starts the sum of one bucket (asynchronously where the implementation can,
  // on its own stream behind an event); finish_buckets waits for all of them. The defaults
  // reduce synchronously.
  virtual void bucket_ready(float* data, int64_t n) { allreduce_sum(data, n); }
  virtual void finish_buckets() {}
  // The device stream the backend queues compute on (Backend::compute_stream), so that GPU
  // collectives are ordered after it with events instead of a device-wide synchronisation.
  virtual void attach_compute_stream(void* stream) {}
};

class SingleComm final : public Comm {
 public:
  int rank() const override { return 0; }
  int world() const override { return 1; }
  std::string name() const override { return "single"; }
  void allreduce_sum(float*, int64_t) override {}
  void reduce_scatter_sum(float*, const std::vector<int64_t>&) override {}
  void allgather(float*, const std::vector<int64_t>&) override {}
  double allreduce_scalar(double v) override { return v; }
  void barrier(double) override {}
  void bucket_ready(float*, int64_t) override {}
};

// Where this process sits in the job, from the environment (dist_env.cpp), in this order:
// torchrun / `loom launch` (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT), Slurm (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID), OpenMPI
// (OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK), else one process. A job of several ranks also
// needs job_secret(); discover_dist_env checks it, so that a missing one is the first error.
// The most ranks a job may have: far beyond any job loom has run, and small enough that the
// rendezvous store's per-rank tables and connection cap stay modest.
inline constexpr int kMaxWorld = 65536;

struct DistEnv {
  int rank = 0, world = 1, local_rank = 0, local_world = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string source = "single";  // torchrun | slurm | openmpi | single
};
DistEnv discover_dist_env();

// The job's shared secret, LOOM_JOB_SECRET: every connection to the rendezvous store must
// present it (docs/distributed.md, "Security"). `loom launch` generates one per job; srun and
// mpirun users export one. UserError, naming the variable, when it is unset or shorter than
// 16 characters: a job of several ranks never runs with an open store.
std::string job_secret();

// Collective timeout in seconds: LOOM_COMM_TIMEOUT, default 45 (a dead or hung rank is
// reported within a minute). The rendezvous uses LOOM_RENDEZVOUS_TIMEOUT, default 120.
double comm_timeout_s();
double rendezvous_timeout_s();

// The communicator for `device` ("cpu" or "cuda") in this environment: SingleComm for one
// rank, NCCL for cuda ranks (when this binary was built with it), Gloo otherwise.
std::unique_ptr<Comm> make_comm(const DistEnv& env, const std::string& device);
// Gloo over TCP, rendezvous at addr:port (rank 0 hosts the key-value store there).
std::unique_ptr<Comm> make_gloo_comm(int rank, int world, const std::string& addr, int port);

}  // namespace loom
