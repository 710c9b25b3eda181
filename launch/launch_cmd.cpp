// launch_cmd.cpp: `loom launch` starts this node's ranks as child processes of the same
// binary with torchrun's variables and the job's secret, prefixes their output lines with
// "[rank R] ", forwards SIGINT/SIGTERM/SIGHUP (a second signal kills every rank), and when a
// rank fails stops the others and exits with that rank's code. No rank outlives the launcher:
// each has a parent-death signal. docs/reliability.md, "loom launch", lists the promises.
// `loom bench comm` times all-reduces of several sizes on the ranks it finds (or starts).
#include <CLI/CLI.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <thread>

#include "core/check.h"
#include "engine/backend/device.h"
#include "engine/comm/comm.h"
#include "engine/comm/rendezvous.h"
#include "launch/command.h"

namespace loom {

namespace {

// Signals the launcher received: the first is passed on, a second one kills every rank.
volatile std::sig_atomic_t g_launch_signal = 0, g_launch_signals = 0;
void on_launch_signal(int s) {
  g_launch_signal = s;
  g_launch_signals = g_launch_signals + 1;
}

// The most ranks one launcher starts: far above any node's GPUs or cores, low enough that a
// typo is an error instead of a fork bomb. The job as a whole has comm.h's kMaxWorld.
constexpr int kMaxLocalRanks = 1024;

// A fresh secret for this job's rendezvous store (256 bits from the kernel, as hex).
std::string new_job_secret() {
  unsigned char bytes[32];
  size_t got = 0;
  while (got < sizeof bytes) {
    const ssize_t r = ::getrandom(bytes + got, sizeof bytes - got, 0);
    if (r < 0 && errno == EINTR) continue;
    LOOM_USER_CHECK(r > 0, "launch: no random bytes for the job's secret (getrandom: ", std::strerror(errno), ")");
    got += static_cast<size_t>(r);
  }
  std::string hex;
  for (unsigned char b : bytes) hex += "0123456789abcdef"[b >> 4], hex += "0123456789abcdef"[b & 15];
  return hex;
}

std::string describe_status(int st) {
  if (WIFEXITED(st)) return "exited with code " + std::to_string(WEXITSTATUS(st));
  if (WIFSIGNALED(st)) return "was killed by signal " + std::to_string(WTERMSIG(st)) + " (" + strsignal(WTERMSIG(st)) + ")";
  return "ended";
}
int exit_code(int st) { return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0); }

struct Child {
  int rank = 0;
  pid_t pid = -1;
  int fd[2] = {-1, -1};        // stdout, stderr pipes (read ends)
  std::string partial[2];      // an unfinished line of each
  bool running = true;
  int status = 0;
};

// Writes the complete lines of `data` with the rank prefix; keeps the rest for later.
void forward_lines(Child& c, int which, const char* data, size_t n, bool flush_all) {
  std::string& buf = c.partial[which];
  buf.append(data, n);
  FILE* out = which == 0 ? stdout : stderr;
  size_t start = 0;
  for (size_t nl; (nl = buf.find('\n', start)) != std::string::npos; start = nl + 1)
    std::fprintf(out, "[rank %d] %.*s\n", c.rank, static_cast<int>(nl - start), buf.data() + start);
  buf.erase(0, start);
  if (flush_all && !buf.empty()) {
    std::fprintf(out, "[rank %d] %s\n", c.rank, buf.c_str());
    buf.clear();
  }
  std::fflush(out);
}

// Reads whatever the children printed, waiting at most `ms`.
void pump(std::vector<Child>& kids, int ms) {
  std::vector<pollfd> fds;
  std::vector<std::pair<size_t, int>> who;
  for (size_t i = 0; i < kids.size(); ++i)
    for (int w = 0; w < 2; ++w)
      if (kids[i].fd[w] >= 0) {
        fds.push_back({kids[i].fd[w], POLLIN, 0});
        who.emplace_back(i, w);
      }
  if (fds.empty()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return;
  }
  if (::poll(fds.data(), fds.size(), ms) <= 0) return;
  char buf[65536];
  for (size_t k = 0; k < fds.size(); ++k) {
    if (!(fds[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
    auto [i, w] = who[k];
    const ssize_t r = ::read(fds[k].fd, buf, sizeof buf);
    if (r > 0) {
      forward_lines(kids[i], w, buf, static_cast<size_t>(r), false);
    } else if (r == 0 || errno != EINTR) {
      forward_lines(kids[i], w, "", 0, true);
      ::close(kids[i].fd[w]);
      kids[i].fd[w] = -1;
    }
  }
}

// Starts the ranks of this node and supervises them; returns the job's exit code.
int launch_ranks(int nproc, int nnodes, int node_rank, const std::string& addr, int port,
                 const std::vector<std::string>& cmd) {
  LOOM_USER_CHECK(nproc >= 1 && nproc <= kMaxLocalRanks, "--nproc-per-node: ", nproc, " is outside 1..",
                  kMaxLocalRanks);
  LOOM_USER_CHECK(nnodes >= 1 && nnodes <= kMaxWorld, "--nnodes: ", nnodes, " is outside 1..", kMaxWorld);
  LOOM_USER_CHECK(int64_t{nproc} * nnodes <= kMaxWorld, "--nproc-per-node x --nnodes: ", int64_t{nproc} * nnodes,
                  " ranks, more than ", kMaxWorld);
  LOOM_USER_CHECK(node_rank >= 0 && node_rank < nnodes, "--node-rank: ", node_rank, " is outside 0..", nnodes - 1);
  LOOM_USER_CHECK(!cmd.empty(), "launch: no command (usage: loom launch --nproc-per-node N -- train --config ...)");
  LOOM_USER_CHECK(cmd[0] != "launch", "launch: the command cannot be another launch");
  LOOM_USER_CHECK(port >= 0 && port < 65536, "--master-port: ", port, " is not a TCP port");
  LOOM_USER_CHECK(port != 0 || nnodes == 1,
                  "--master-port: required with --nnodes > 1 (every node must use the same port)");
  const int world = nproc * nnodes;
  // One node: a fresh secret for this job. Several: every node's launcher must hand its ranks
  // the same one, so it comes from the environment (job_secret() says how when it is missing).
  const std::string secret = world == 1 ? "" : nnodes == 1 ? new_job_secret() : job_secret();
  // The node of rank 0 binds the store's port now and hands the socket to rank 0: no other
  // process can take the port in between, and a port in use is an error before any rank runs.
  int store_fd = -1;
  if (node_rank == 0 && world > 1) {
    try {
      store_fd = listen_socket(addr, port, &port);
    } catch (const CommError& e) {
      user_error("--master-addr/--master-port: ", e.what());
    }
  }
  char exe[4096] = {};
  const ssize_t len = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  LOOM_CHECK(len > 0, "launch: cannot find this program's path");
  // CPU ranks share the cores: unless told otherwise, each gets its share of OpenMP threads.
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const std::string omp = std::to_string(std::max(1u, cores / static_cast<unsigned>(nproc)));

  struct sigaction sa {};
  sa.sa_handler = on_launch_signal;
  sigemptyset(&sa.sa_mask);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&sa.sa_mask, s);
  struct sigaction old_int {}, old_term {}, old_hup {};
  g_launch_signal = 0;
  g_launch_signals = 0;
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  // A hangup (the terminal or ssh session closed) stops the job like SIGTERM, unless the user
  // asked for it to be ignored (nohup), which the ranks then inherit.
  sigaction(SIGHUP, nullptr, &old_hup);
  const bool hup = old_hup.sa_handler != SIG_IGN;
  if (hup) sigaction(SIGHUP, &sa, nullptr);

  std::fprintf(stderr, "[launch] %d rank(s) on this node (node %d of %d, world %d), rendezvous at %s:%d\n", nproc,
               node_rank, nnodes, world, addr.c_str(), port);
  const pid_t launcher = ::getpid();
  std::vector<Child> kids(static_cast<size_t>(nproc));
  // A rank that cannot be started ends the job before it begins: the ranks already started
  // are killed and reaped, and the launcher leaves as it came.
  auto abandon = [&](int rank, const char* what, int err) {
    for (auto& c : kids) {
      if (c.pid <= 0) continue;
      ::kill(c.pid, SIGKILL);
      ::waitpid(c.pid, nullptr, 0);
      for (int fd : c.fd) ::close(fd);
    }
    if (store_fd >= 0) ::close(store_fd);
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGTERM, &old_term, nullptr);
    sigaction(SIGHUP, &old_hup, nullptr);
    user_error("launch: cannot start rank ", rank, ": ", what, ": ", std::strerror(err),
               " (the ranks already started were stopped)");
  };
  for (int i = 0; i < nproc; ++i) {
    Child& c = kids[static_cast<size_t>(i)];
    c.rank = node_rank * nproc + i;
    int out[2], err[2];
    if (::pipe2(out, O_CLOEXEC) != 0) abandon(c.rank, "pipe", errno);
    if (::pipe2(err, O_CLOEXEC) != 0) {
      const int e = errno;
      ::close(out[0]);
      ::close(out[1]);
      abandon(c.rank, "pipe", e);
    }
    c.pid = ::fork();
    if (c.pid < 0) {
      const int e = errno;
      for (int fd : {out[0], out[1], err[0], err[1]}) ::close(fd);
      abandon(c.rank, "fork", e);
    }
    if (c.pid == 0) {
      // Die with the launcher, whatever kills it; if it died before this line, go now.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != launcher) ::_exit(128 + SIGKILL);
      ::setpgid(0, 0);  // the launcher alone receives a terminal's Ctrl-C, and passes it on
      ::signal(SIGINT, SIG_DFL);
      ::signal(SIGTERM, SIG_DFL);
      if (hup) ::signal(SIGHUP, SIG_DFL);
      ::dup2(out[1], 1);
      ::dup2(err[1], 2);
      if (c.rank == 0 && store_fd >= 0) {
        ::fcntl(store_fd, F_SETFD, 0);  // rank 0 alone inherits the store's socket
        ::setenv("LOOM_STORE_FD", std::to_string(store_fd).c_str(), 1);
      }
      ::setenv("RANK", std::to_string(c.rank).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(i).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      ::setenv("GROUP_RANK", std::to_string(node_rank).c_str(), 1);
      ::setenv("MASTER_ADDR", addr.c_str(), 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      // In the environment, not the command line: /proc/PID/cmdline is readable by every
      // user, /proc/PID/environ by this one only.
      if (!secret.empty()) ::setenv("LOOM_JOB_SECRET", secret.c_str(), 1);
      ::setenv("OMP_NUM_THREADS", omp.c_str(), 0);
      std::vector<char*> argv{exe};
      for (const auto& a : cmd) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(exe, argv.data());
      std::fprintf(stderr, "loom launch: cannot run %s: %s\n", exe, std::strerror(errno));
      ::_exit(127);
    }
    ::close(out[1]);
    ::close(err[1]);
    c.fd[0] = out[0];
    c.fd[1] = err[0];
    std::fprintf(stderr, "[launch] rank %d: pid %d\n", c.rank, static_cast<int>(c.pid));
  }
  if (store_fd >= 0) ::close(store_fd);  // rank 0 has it now

  int failed = -1, code = 0, handled = 0;
  auto stop_all = [&](int sig) {
    for (auto& c : kids)
      if (c.running) ::kill(c.pid, sig);
  };
  std::chrono::steady_clock::time_point kill_at{};
  bool stopping = false;
  for (;;) {
    pump(kids, 100);
    int st = 0;
    for (pid_t p; (p = ::waitpid(-1, &st, WNOHANG)) > 0;) {
      for (auto& c : kids) {
        if (c.pid != p) continue;
        c.running = false;
        c.status = st;
        const bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
        // A rank that exits with kCommLostExit only reports another's failure: the job's
        // cause (and exit code) is the first rank that failed otherwise, when there is one.
        const bool secondary = WIFEXITED(st) && WEXITSTATUS(st) == kCommLostExit;
        if (!ok && failed >= 0 && code == kCommLostExit && !secondary) {
          failed = c.rank;
          code = exit_code(st);
          std::fprintf(stderr, "[launch] rank %d (pid %d) %s\n", c.rank, static_cast<int>(p), describe_status(st).c_str());
        }
        if (!ok && failed < 0) {
          failed = c.rank;
          code = exit_code(st);
          std::fprintf(stderr, "[launch] rank %d (pid %d) %s; stopping the other ranks\n", c.rank, static_cast<int>(p),
                       describe_status(st).c_str());
          // The survivors notice the lost rank themselves (and say so); give them a moment.
          if (stopping) continue;
          stopping = true;
          kill_at = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        }
      }
    }
    // First signal: pass it on (the ranks agree on a step, checkpoint and stop; a hangup
    // becomes SIGTERM, which they handle). Any further one: a rank may be hung, kill them all.
    const int received = g_launch_signals;
    if (received > handled) {
      const int sig = received >= 2 ? SIGKILL : g_launch_signal == SIGHUP ? SIGTERM : g_launch_signal;
      std::fprintf(stderr, "[launch] %s: %s\n", strsignal(g_launch_signal),
                   sig == SIGKILL ? "signalled again, killing the ranks" : ("forwarding " + std::string(strsignal(sig)) +
                                                                           " to the ranks (again to kill them)").c_str());
      stop_all(sig);
      handled = received;
    }
    if (stopping && std::chrono::steady_clock::now() > kill_at) {
      stop_all(SIGKILL);
      kill_at = std::chrono::steady_clock::time_point::max();
    }
    bool any = false;
    for (auto& c : kids) any = any || c.running || c.fd[0] >= 0 || c.fd[1] >= 0;
    if (!any) break;
    // A finished rank's pipes close; keep going until every rank has ended.
    bool running = false;
    for (auto& c : kids) running = running || c.running;
    if (!running) pump(kids, 0);
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  sigaction(SIGHUP, &old_hup, nullptr);
  if (failed >= 0) {
    std::fprintf(stderr, "[launch] job failed: rank %d %s\n", failed,
                 describe_status(kids[static_cast<size_t>(failed - node_rank * nproc)].status).c_str());
    return code;
  }
  return 0;
}

// `loom bench comm`: all-reduce algorithm and bus bandwidth (nccl-tests' definitions:
// algbw = bytes / time, busbw = algbw * 2 (n - 1) / n, the per-link traffic of a ring).
int bench_comm(const std::string& device, const std::vector<double>& mib, int iters) {
  const DistEnv env = discover_dist_env();
  auto comm = make_comm(env, device);
  auto be = make_backend(device);
  const int n = comm->world();
  if (comm->rank() == 0)
    std::printf("bench comm | %s | %d ranks | device %s | %d timed iterations after 2 warm-up\n%12s %12s %12s %12s\n",
                comm->name().c_str(), n, be->name().c_str(), iters, "bytes", "time (us)", "algbw GB/s", "busbw GB/s");
  for (double m : mib) {
    const int64_t count = std::max<int64_t>(1, static_cast<int64_t>(m * 1048576.0 / 4));
    const size_t bytes = static_cast<size_t>(count) * 4;
    std::vector<float> host(static_cast<size_t>(count), 1.0f);
    void* buf = be->alloc(bytes);
    be->to_device(buf, host.data(), bytes);
    for (int i = 0; i < 2; ++i) comm->allreduce_sum(static_cast<float*>(buf), count);
    be->synchronize();
    comm->barrier(0);
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) comm->allreduce_sum(static_cast<float*>(buf), count);
    be->synchronize();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
    s = comm->allreduce_scalar(s) / n;  // mean over ranks
    be->release(buf);
    const double algbw = static_cast<double>(bytes) / s / 1e9;
    if (comm->rank() == 0)
      std::printf("%12zu %12.1f %12.3f %12.3f\n", bytes, s * 1e6, algbw, algbw * 2.0 * (n - 1) / n);
    std::fflush(stdout);
  }
  comm->barrier(0);
  return 0;
}

class LaunchCommand final : public Command {
 public:
  explicit LaunchCommand(CLI::App& app)
      : Command(app.add_subcommand("launch", "start this node's ranks of a data-parallel job (torchrun-style): "
                                             "loom launch --nproc-per-node N -- train --config ...")) {
    cmd_->add_option("--nproc-per-node", nproc_, "ranks on this node (one GPU each with device = cuda)")->required();
    cmd_->add_option("--nnodes", nnodes_, "nodes in the job")->capture_default_str();
    cmd_->add_option("--node-rank", node_rank_, "this node's index, 0..nnodes-1")->capture_default_str();
    cmd_->add_option("--master-addr", addr_, "host of rank 0 (the rendezvous store)")->capture_default_str();
    cmd_->add_option("--master-port", port_, "rendezvous port (0: a free port; single node only)")
        ->capture_default_str();
    cmd_->add_option("command", cmd_args_, "the loom command every rank runs, after --");
  }
  int run() override { return launch_ranks(nproc_, nnodes_, node_rank_, addr_, port_, cmd_args_); }

 private:
  int nproc_ = 1, nnodes_ = 1, node_rank_ = 0, port_ = 0;
  std::string addr_ = "127.0.0.1";
  std::vector<std::string> cmd_args_;
};

class BenchCommCommand final : public Command {
 public:
  explicit BenchCommCommand(CLI::App& app)
      : Command(bench_group(app).add_subcommand("comm", "all-reduce bus bandwidth over the ranks (started with loom "
                                                        "launch, srun, mpirun, or by itself with --nproc-per-node)")) {
    cmd_->add_option("--device", device_, "cpu (Gloo) | cuda (NCCL)")->capture_default_str();
    cmd_->add_option("--sizes-mib", mib_, "message sizes in MiB")->capture_default_str();
    cmd_->add_option("--iters", iters_, "timed all-reduces per size")->capture_default_str();
    cmd_->add_option("--nproc-per-node", nproc_, "ranks to start when not already inside a launched job")
        ->capture_default_str();
  }
  int run() override {
    LOOM_USER_CHECK(iters_ >= 1, "--iters: must be >= 1");
    LOOM_USER_CHECK(!mib_.empty(), "--sizes-mib: give at least one size");
    for (double m : mib_) LOOM_USER_CHECK(m > 0, "--sizes-mib: sizes must be > 0");
    if (discover_dist_env().world == 1 && nproc_ > 1) {
      // Not inside a job: start one on this node with the same options.
      std::vector<std::string> cmd{"bench", "comm", "--device", device_, "--iters", std::to_string(iters_),
                                   "--nproc-per-node", "1", "--sizes-mib"};
      for (double m : mib_) cmd.push_back(std::to_string(m));
      return launch_ranks(nproc_, 1, 0, "127.0.0.1", 0, cmd);
    }
    return bench_comm(device_, mib_, iters_);
  }

 private:
  std::string device_ = "cpu";
  std::vector<double> mib_{0.0625, 1, 4, 16, 64};
  int iters_ = 10, nproc_ = 2;
};

}  // namespace

std::unique_ptr<Command> add_launch_command(CLI::App& app) { return std::make_unique<LaunchCommand>(app); }
std::unique_ptr<Command> add_bench_comm_command(CLI::App& app) { return std::make_unique<BenchCommCommand>(app); }

}  // namespace loom
