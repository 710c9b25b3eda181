// dist_env.cpp: rank discovery (comm.h's DistEnv) and the communicator factory.
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <charconv>
#include <string>

#include "engine/comm/comm.h"
#include "engine/comm/nccl.h"
#include "core/check.h"

namespace loom {

namespace {

const char* env_or(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

int env_int(const char* name, int fallback) {
  const char* v = env_or(name);
  if (!v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  LOOM_USER_CHECK(end && *end == '\0' && x >= 0 && x < (1L << 30), name, ": expected a non-negative integer, got '",
                  v, "'");
  return static_cast<int>(x);
}

// The first host of a Slurm node list: "gpu[012-015,020],cpu7" -> "gpu012".
std::string first_slurm_host(const std::string& list) {
  std::string host;
  for (size_t i = 0; i < list.size(); ++i) {
    const char c = list[i];
    if (c == ',') break;
    if (c == '[') {
      for (++i; i < list.size() && list[i] != '-' && list[i] != ',' && list[i] != ']'; ++i) host += list[i];
      break;
    }
    host += c;
  }
  return host;
}

}  // namespace

DistEnv discover_dist_env() {
  DistEnv e;
  if (env_or("RANK") && env_or("WORLD_SIZE")) {
    e.source = "torchrun";
    e.rank = env_int("RANK", 0);
    e.world = env_int("WORLD_SIZE", 1);
    e.local_rank = env_int("LOCAL_RANK", e.rank);
    e.local_world = env_int("LOCAL_WORLD_SIZE", e.world);
  } else if (env_or("SLURM_PROCID") && env_or("SLURM_NTASKS")) {
    e.source = "slurm";
    e.rank = env_int("SLURM_PROCID", 0);
    e.world = env_int("SLURM_NTASKS", 1);
    e.local_rank = env_int("SLURM_LOCALID", 0);
    e.local_world = env_int("SLURM_NTASKS_PER_NODE", env_int("SLURM_TASKS_PER_NODE", e.world));
    // Without MASTER_ADDR the store lives on the first node of the step, at a port derived
    // from the job id so that two jobs sharing a node do not collide.
    if (const char* nodes = env_or("SLURM_STEP_NODELIST") ? env_or("SLURM_STEP_NODELIST") : env_or("SLURM_JOB_NODELIST"))
      e.master_addr = first_slurm_host(nodes);
    e.master_port = 29500 + env_int("SLURM_JOB_ID", 0) % 10000;
  } else if (env_or("OMPI_COMM_WORLD_RANK") && env_or("OMPI_COMM_WORLD_SIZE")) {
    e.source = "openmpi";
    e.rank = env_int("OMPI_COMM_WORLD_RANK", 0);
    e.world = env_int("OMPI_COMM_WORLD_SIZE", 1);
    e.local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", 0);
    e.local_world = env_int("OMPI_COMM_WORLD_LOCAL_SIZE", e.world);
  }
  // MASTER_ADDR / MASTER_PORT win whenever they are set (mpirun -x MASTER_ADDR=..., sbatch export).
  if (const char* a = env_or("MASTER_ADDR")) e.master_addr = a;
  e.master_port = env_int("MASTER_PORT", e.master_port);
  LOOM_USER_CHECK(e.world >= 1 && e.world <= kMaxWorld, e.source, ": a world of ", e.world, " ranks is outside 1..",
                  kMaxWorld);
  LOOM_USER_CHECK(e.rank < e.world, e.source, ": rank ", e.rank, " is outside the world of ", e.world, " ranks");
  LOOM_USER_CHECK(e.local_rank < std::max(e.local_world, 1), e.source, ": local rank ", e.local_rank,
                  " is outside the ", e.local_world, " local ranks");
  LOOM_USER_CHECK(e.world == 1 || (e.master_port > 0 && e.master_port < 65536), "MASTER_PORT: ", e.master_port,
                  " is not a TCP port");
  if (e.world > 1) job_secret();
  return e;
}

std::string job_secret() {
  // Refusing is the default because every alternative is worse: a secret derived from the job
  // (SLURM_JOB_ID, the port) can be guessed, and an opt-out is one forgotten variable away
  // from a store that anyone on the network can read and write.
  const char* v = env_or("LOOM_JOB_SECRET");
  LOOM_USER_CHECK(v, "LOOM_JOB_SECRET: a job of several ranks needs a shared secret for its rendezvous store; "
                     "loom launch sets one, with srun or mpirun export the same value to every rank, e.g. "
                     "LOOM_JOB_SECRET=$(openssl rand -hex 16) (docs/distributed.md)");
  const std::string s = v;
  LOOM_USER_CHECK(s.size() >= 16 && s.size() <= 256, "LOOM_JOB_SECRET: expected 16 to 256 characters, got ", s.size(),
                  " (e.g. openssl rand -hex 16)");
  for (char c : s)
    LOOM_USER_CHECK(c > ' ' && c < 127, "LOOM_JOB_SECRET: only printable characters without spaces");
  return s;
}

// A timeout in seconds from the environment: a whole finite number in (0, one week], so that
// every conversion to milliseconds downstream is defined.
double env_seconds(const char* name, double fallback) {
  const char* v = env_or(name);
  if (!v) return fallback;
  double t = 0;
  const char* end = v + std::strlen(v);
  const auto r = std::from_chars(v, end, t);
  LOOM_USER_CHECK(r.ec == std::errc() && r.ptr == end && std::isfinite(t) && t > 0 && t <= 7 * 24 * 3600.0, name,
                  ": expected seconds in (0, 604800], got '", v, "'");
  return t;
}

double comm_timeout_s() { return env_seconds("LOOM_COMM_TIMEOUT", 45.0); }

double rendezvous_timeout_s() { return env_seconds("LOOM_RENDEZVOUS_TIMEOUT", 120.0); }

std::unique_ptr<Comm> make_comm(const DistEnv& env, const std::string& device) {
  if (env.world == 1) return std::make_unique<SingleComm>();
  if (device == "cuda") {
    LOOM_USER_CHECK(make_nccl_comm, "device = cuda with ", env.world,
                    " ranks needs NCCL, and this build of loom has none (configure with LOOM_CUDA=ON)");
    return make_nccl_comm(env);
  }
  return make_gloo_comm(env.rank, env.world, env.master_addr, env.master_port);
}

}  // namespace loom
