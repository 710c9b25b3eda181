// launch_test.cpp: `loom launch` when things go wrong around it. A killed launcher leaves no
// rank behind; a second Ctrl-C ends a hung rank; a hangup stops the job with a checkpoint; a
// rank that cannot be started stops the ones already started; absurd rank counts and a
// missing secret are one-line errors; and a 2-rank job trains to the end while an intruder
// hammers its rendezvous port, which the launcher holds from the moment it names it.
// docs/reliability.md maps each promise to its test here.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <regex>
#include <set>
#include <thread>

#include "core/rng.h"
#include "tests/support/helpers.h"

namespace loom::test {
namespace {

using Clock = std::chrono::steady_clock;

bool wait_until(const std::function<bool()>& done, double seconds) {
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  while (!done()) {
    if (Clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

// Dead: no such process, or a zombie waiting for whoever adopted it.
bool gone(int pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(f, stat)) return true;
  const auto paren = stat.rfind(')');
  return paren == std::string::npos || stat.size() < paren + 3 || stat[paren + 2] == 'Z' || stat[paren + 2] == 'X';
}

// A launcher started as this test's child, its output in a log file; whatever is still
// running at the end of the test (the launcher, the ranks it reported) is killed.
class Job {
 public:
  Job(const std::vector<std::string>& args, const std::string& log, int nofile = 0) : log_(log) {
    pid_ = ::fork();
    if (pid_ == 0) {
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      const int null = ::open("/dev/null", O_RDONLY);
      ::dup2(null, 0);
      for (int i = 3; i < 1024; ++i) ::close(i);
      if (nofile > 0) {
        rlimit lim{static_cast<rlim_t>(nofile), static_cast<rlim_t>(nofile)};
        ::setrlimit(RLIMIT_NOFILE, &lim);
      }
      std::vector<char*> argv{const_cast<char*>("loom")};
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(loom_binary().c_str(), argv.data());
      ::_exit(127);
    }
  }
  ~Job() {
    for (int p : ranks())
      if (!gone(p)) ::kill(p, SIGKILL);
    if (running()) ::kill(pid_, SIGKILL);
    wait(5);
  }
  pid_t pid() const { return pid_; }
  std::string log() const { return read_bytes(log_); }
  // The ranks' pids, as the launcher reported them.
  std::vector<int> ranks() const {
    std::vector<int> pids;
    const std::string text = log();
    static const std::regex line(R"(\[launch\] rank \d+: pid (\d+))");
    for (std::sregex_iterator it(text.begin(), text.end(), line), end; it != end; ++it) pids.push_back(std::stoi((*it)[1]));
    return pids;
  }
  bool running() {
    if (exited_) return false;
    int st = 0;
    if (::waitpid(pid_, &st, WNOHANG) != pid_) return true;
    exited_ = true;
    status_ = st;
    return false;
  }
  // Waits for the launcher to end; false if it is still running after `seconds`.
  bool wait(double seconds) {
    return wait_until([&] { return !running(); }, seconds);
  }
  int status() const { return status_; }

 private:
  std::string log_;
  pid_t pid_ = -1;
  bool exited_ = false;
  int status_ = 0;
};

class Launch : public ::testing::Test {
 protected:
  void SetUp() override { unsetenv("LOOM_JOB_SECRET"); }  // every job here gets its secret from loom launch
  // A config in d training for `steps` steps into d/run, on data prepared once for all tests.
  std::string config(const TempDir& d, int steps) {
    static TempDir shared;
    static const std::string data = prepare_tiny_data(shared.str());
    std::ofstream(d / "tiny.toml") << tiny_config(data, d / "run", steps);
    return d / "tiny.toml";
  }
  // Starts a 2-rank job and waits until it has trained a step. The ranks print nothing after
  // the first step: a rank that prints into the pipe of a dead launcher dies of SIGPIPE,
  // which would hide whether anything else stops it.
  void start_training(std::unique_ptr<Job>& job, const TempDir& d, const std::string& cfg) {
    job = std::make_unique<Job>(std::vector<std::string>{"launch", "--nproc-per-node", "2", "--", "train", "--config", cfg,
                                                         "--log.every", "1000000", "--train.eval_every", "1000000",
                                                         "--checkpoint.every", "1000000"},
                                d / "launch.log");
    ASSERT_TRUE(wait_until([&] { return !read_metrics(d / "run").empty() || !job->running(); }, 120)) << job->log();
    ASSERT_TRUE(job->running()) << job->log();
    ASSERT_EQ(job->ranks().size(), 2u) << job->log();
  }
};

TEST_F(Launch, AbsurdRankCountsAreOneLineErrors) {
  TempDir d;
  const std::string cfg = config(d, 5);
  expect_user_error(run_loom({"launch", "--nproc-per-node", "1000000000", "--", "train", "--config", cfg}),
                    "--nproc-per-node: 1000000000 is outside 1..1024");
  // 65536 x 65536 overflows an int to 0: the count is checked in 64 bits.
  expect_user_error(run_loom({"launch", "--nproc-per-node", "1024", "--nnodes", "65536", "--master-port", "29500",
                              "--", "train", "--config", cfg}),
                    "--nproc-per-node x --nnodes: 67108864 ranks");
  expect_user_error(run_loom({"launch", "--nproc-per-node", "65536", "--nnodes", "65536", "--master-port", "29500",
                              "--", "train", "--config", cfg}),
                    "--nproc-per-node");
  expect_user_error(run_loom({"launch", "--nproc-per-node", "99999999999", "--", "train", "--config", cfg}),
                    "--nproc-per-node");
  expect_user_error(run_loom({"launch", "--nproc-per-node", "0", "--", "train", "--config", cfg}), "--nproc-per-node");
}

TEST_F(Launch, SeveralRanksWithoutASecretAreOneLineErrors) {
  TempDir d;
  const std::string cfg = config(d, 5);
  // Several nodes: every launcher must hand its ranks the same secret, so it must be given.
  expect_user_error(run_loom({"launch", "--nnodes", "2", "--node-rank", "1", "--nproc-per-node", "1", "--master-port",
                              "29500", "--", "train", "--config", cfg}),
                    "LOOM_JOB_SECRET");
  // A rank started by srun / mpirun / by hand.
  setenv("RANK", "1", 1);
  setenv("WORLD_SIZE", "2", 1);
  RunResult r = run_loom({"train", "--config", cfg});
  setenv("LOOM_JOB_SECRET", "short", 1);
  RunResult short_secret = run_loom({"train", "--config", cfg});
  setenv("WORLD_SIZE", "100000", 1);
  RunResult huge_world = run_loom({"train", "--config", cfg});
  for (const char* v : {"RANK", "WORLD_SIZE", "LOOM_JOB_SECRET"}) unsetenv(v);
  expect_user_error(r, "LOOM_JOB_SECRET: a job of several ranks needs a shared secret");
  expect_user_error(short_secret, "LOOM_JOB_SECRET: expected 16 to 256 characters");
  expect_user_error(huge_world, "a world of 100000 ranks is outside 1..65536");
}

TEST_F(Launch, KilledLauncherLeavesNoRankBehind) {
  TempDir d;
  std::unique_ptr<Job> job;
  start_training(job, d, config(d, 100000));
  ::kill(job->pid(), SIGKILL);
  ASSERT_TRUE(job->wait(10));
  const auto ranks = job->ranks();
  EXPECT_TRUE(wait_until([&] { return gone(ranks[0]) && gone(ranks[1]); }, 10))
      << "ranks still running 10 s after the launcher was killed";
}

TEST_F(Launch, SecondSignalEndsAHungRank) {
  TempDir d;
  std::unique_ptr<Job> job;
  setenv("LOOM_COMM_TIMEOUT", "600", 1);  // the hung rank is not noticed by the other any time soon
  start_training(job, d, config(d, 100000));
  unsetenv("LOOM_COMM_TIMEOUT");
  const auto ranks = job->ranks();
  ::kill(ranks[1], SIGSTOP);  // hung: it will not act on the forwarded signal
  ::kill(job->pid(), SIGINT);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  ASSERT_TRUE(job->running()) << "the job ended on one signal although a rank is hung: " << job->log();
  ::kill(job->pid(), SIGINT);
  EXPECT_TRUE(job->wait(10)) << "the launcher is still waiting for its ranks 10 s after a second Ctrl-C: " << job->log();
  EXPECT_TRUE(wait_until([&] { return gone(ranks[0]) && gone(ranks[1]); }, 10));
  EXPECT_NE(job->log().find("signalled again, killing the ranks"), std::string::npos) << job->log();
}

TEST_F(Launch, HangupStopsTheRanksWithACheckpoint) {
  TempDir d;
  std::unique_ptr<Job> job;
  start_training(job, d, config(d, 100000));
  ::kill(job->pid(), SIGHUP);
  ASSERT_TRUE(job->wait(60)) << job->log();
  const auto ranks = job->ranks();
  EXPECT_TRUE(wait_until([&] { return gone(ranks[0]) && gone(ranks[1]); }, 10));
  EXPECT_TRUE(WIFEXITED(job->status()) && WEXITSTATUS(job->status()) == 0) << "status " << job->status() << job->log();
  EXPECT_NE(job->log().find("forwarding Terminated"), std::string::npos) << job->log();
  EXPECT_TRUE(fs::exists(d / "run/latest/model.safetensors")) << job->log();
}

TEST_F(Launch, SetupFailureStopsTheRanksAlreadyStarted) {
  TempDir d;
  // With 12 descriptors the launcher runs out of them for the pipes of its third or fourth rank.
  Job job({"launch", "--nproc-per-node", "8", "--", "train", "--config", config(d, 100000)}, d / "launch.log", 12);
  ASSERT_TRUE(job.wait(30)) << job.log();
  const std::string log = job.log();
  EXPECT_TRUE(WIFEXITED(job.status()) && WEXITSTATUS(job.status()) == 2) << "status " << job.status() << log;
  EXPECT_NE(log.find("loom: error: launch: cannot start rank "), std::string::npos) << log;
  EXPECT_EQ(log.find("loom: error:"), log.rfind("loom: error:")) << "more than one error line: " << log;
  EXPECT_EQ(log.back(), '\n');
  EXPECT_EQ(log.find('\n', log.find("loom: error:")), log.size() - 1) << "the error is not one last line: " << log;
  const auto ranks = job.ranks();
  ASSERT_FALSE(ranks.empty()) << "no rank was started before the failure: " << log;
  for (int p : ranks) EXPECT_TRUE(gone(p)) << "rank pid " << p << " outlived the failed launch";
}

// Attacks an intruder who can reach the port can make without the secret; any answer but
// "wrong secret" (or none) would be a leak.
void hammer(int port, std::atomic<bool>& stop, std::atomic<int>& attempts, std::atomic<int>& leaks, uint64_t seed) {
  auto u32 = [](size_t n) {
    std::string s;
    for (int i = 0; i < 4; ++i) s += static_cast<char>((n >> (8 * i)) & 0xff);
    return s;
  };
  const std::vector<std::string> attacks = {
      "G" + u32(6) + "gloo/0" + u32(4) + "1000",                       // read a rank's address
      "S" + u32(6) + "gloo/1" + u32(3) + "bad",                        // overwrite one
      "A" + u32(0) + u32(32) + std::string(32, 'f'),                   // guess the secret
      "A" + u32(0) + u32(20) + "abc",                                  // half a message
      "A" + u32(0) + u32(64u << 20),                                   // promise 64 MiB
      "G" + u32(1) + "k" + u32(9) + "not a num",                       // a non-numeric timeout
      std::string("\x00\xff\xff\xff\xff garbage", 14),
  };
  Rng rng(seed);
  std::vector<int> held;
  while (!stop) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(static_cast<uint16_t>(port));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval tv{0, 50000};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
      ::close(fd);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      continue;
    }
    const std::string& a = attacks[rng.below(attacks.size())];
    ::send(fd, a.data(), a.size(), MSG_NOSIGNAL);
    ++attempts;
    if (held.size() < 100 && rng.below(4) == 0) {
      held.push_back(fd);  // left open, as a slow client would
      continue;
    }
    char buf[64];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0 && !(n == 5 && buf[0] == 2)) ++leaks;
    ::close(fd);
  }
  for (int fd : held) ::close(fd);
}

TEST_F(Launch, JobTrainsWhileAnIntruderHammersTheStore) {
  TempDir d;
  Job job({"launch", "--nproc-per-node", "2", "--", "train", "--config", config(d, 20)}, d / "launch.log");
  // The port is held from the moment the launcher names it: nobody else can bind it before
  // rank 0 serves on it.
  int port = 0;
  static const std::regex at(R"(rendezvous at 127\.0\.0\.1:(\d+))");
  ASSERT_TRUE(wait_until([&] {
    std::smatch m;
    const std::string log = job.log();
    if (std::regex_search(log, m, at)) port = std::stoi(m[1]);
    return port > 0;
  }, 30)) << job.log();
  const int squatter = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const int bound = ::bind(squatter, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  const int why = errno;
  ::close(squatter);
  EXPECT_NE(bound, 0) << "another process could take the store's port before rank 0 opened it";
  EXPECT_EQ(why, EADDRINUSE);
  // Two intruders hammer the port through rendezvous and training.
  std::atomic<bool> stop{false};
  std::atomic<int> attempts{0}, leaks{0};
  std::vector<std::thread> intruders;
  for (int i = 0; i < 2; ++i) intruders.emplace_back(hammer, port, std::ref(stop), std::ref(attempts), std::ref(leaks), 100 + i);
  const bool ended = job.wait(180);
  stop = true;
  for (auto& t : intruders) t.join();
  ASSERT_TRUE(ended) << job.log();
  const std::string log = job.log();
  EXPECT_TRUE(WIFEXITED(job.status()) && WEXITSTATUS(job.status()) == 0) << log;
  EXPECT_NE(log.find("[rank 0] step 20/20"), std::string::npos) << log;
  EXPECT_NE(log.find("[rank 0] rendezvous: the store refused"), std::string::npos) << log;
  EXPECT_EQ(leaks.load(), 0) << "the store answered an intruder";
  EXPECT_GT(attempts.load(), 20) << "the intruders hardly ran";
  std::printf("(%d intruder connections while the job trained)\n", attempts.load());
}

}  // namespace
}  // namespace loom::test
