// store_test.cpp: the rendezvous store (engine/comm/rendezvous.h) attacked through its own
// protocol, as anyone who can reach its port could: no secret, a wrong one, garbage,
// non-numeric numbers, lengths that promise gigabytes, a thousand connections, half messages
// that never finish, a process out of descriptors. After each attack the store must still
// answer the job's own client correctly. Also: it listens on MASTER_ADDR only, keys are
// written once, and the Gloo addresses it publishes carry no stray memory.
// docs/reliability.md maps each promise to its test here.
#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <latch>
#include <string>
#include <thread>
#include <vector>

#include "core/check.h"
#include "core/rng.h"
#include "engine/comm/comm.h"
#include "engine/comm/rendezvous.h"

namespace loom::test {
namespace {

using Clock = std::chrono::steady_clock;
const std::string kSecret = "store-test-secret-5f3a9c0e7d21b864";

// The store's wire format, spoken by hand (rendezvous.cpp's header describes it).
std::string u32(size_t n) {
  std::string s;
  for (int i = 0; i < 4; ++i) s += static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}
std::string msg(char op, const std::string& k, const std::string& v) { return std::string(1, op) + u32(k.size()) + k + u32(v.size()) + v; }
std::string auth(const std::string& secret) { return msg('A', "", secret); }
const std::string kAccepted = std::string(1, '\0') + u32(0), kWrongSecret = std::string(1, '\2') + u32(0);

int connect_to(const char* host, int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, host, &sa.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}
void send_bytes(int fd, const std::string& s) { ASSERT_EQ(::send(fd, s.data(), s.size(), MSG_NOSIGNAL), static_cast<ssize_t>(s.size())); }

// What the store sends on fd until it closes the connection or `seconds` pass.
struct Received {
  std::string bytes;
  bool closed = false;
};
Received receive(int fd, double seconds, size_t enough = SIZE_MAX) {
  Received r;
  const auto end = Clock::now() + std::chrono::duration<double>(seconds);
  while (Clock::now() < end && r.bytes.size() < enough) {
    pollfd p{fd, POLLIN, 0};
    const int ms = static_cast<int>(std::chrono::duration<double, std::milli>(end - Clock::now()).count()) + 1;
    if (::poll(&p, 1, ms) <= 0) continue;
    char buf[4096];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      r.closed = true;
      break;
    }
    r.bytes.append(buf, static_cast<size_t>(n));
  }
  return r;
}

size_t resident_bytes() {
  std::ifstream f("/proc/self/status");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  return 0;
}

StoreLimits quick_limits() {
  StoreLimits l;
  l.auth_timeout_s = 1;
  l.message_timeout_s = 1;
  return l;
}

// The job's own client still works: a fresh connection writes a new key and reads it back,
// and reads an old one.
void expect_store_serves(int port, const std::string& key) {
  KvClient c("127.0.0.1", port, 1, 10, kSecret);
  c.set(key, "value of " + key);
  EXPECT_EQ(c.get(key, 5), "value of " + key);
  EXPECT_EQ(c.get("gloo/rank_0", 5), "the real address");
}

class Store : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<KvServer>("127.0.0.1", 0, 2, kSecret, quick_limits());
    port_ = server_->port();
    job_ = std::make_unique<KvClient>("127.0.0.1", port_, 0, 10, kSecret);
    job_->set("gloo/rank_0", "the real address");
  }
  std::unique_ptr<KvServer> server_;
  std::unique_ptr<KvClient> job_;  // opened before the attack, used after it
  int port_ = 0;
};

TEST_F(Store, RefusesEveryConnectionWithoutTheSecret) {
  // A request straight away, without the secret: closed, nothing answered.
  for (const std::string& first : {msg('G', "gloo/rank_0", "1000"), msg('S', "gloo/rank_0", "my address"),
                                   msg('T', "", "")}) {
    const int fd = connect_to("127.0.0.1", port_);
    send_bytes(fd, first);
    const Received r = receive(fd, 3);
    EXPECT_TRUE(r.closed);
    EXPECT_EQ(r.bytes, "") << "the store answered a connection that never presented the secret";
    ::close(fd);
  }
  // Wrong secrets (one byte off, a prefix, longer, empty): told so, then closed, and a request
  // sent right after the wrong secret is not served.
  std::string off_by_one = kSecret;
  off_by_one.back() ^= 1;
  for (const std::string& wrong : {off_by_one, kSecret.substr(0, kSecret.size() - 1), kSecret + "x", std::string()}) {
    const int fd = connect_to("127.0.0.1", port_);
    send_bytes(fd, auth(wrong) + msg('S', "gloo/rank_0", "my address") + msg('G', "gloo/rank_0", "1000"));
    const Received r = receive(fd, 3);
    EXPECT_TRUE(r.closed) << "secret '" << wrong << "'";
    EXPECT_EQ(r.bytes, kWrongSecret) << "secret '" << wrong << "'";
    ::close(fd);
  }
  EXPECT_EQ(job_->get("gloo/rank_0", 5), "the real address");
  // The right secret is accepted on a hand-made connection too.
  const int fd = connect_to("127.0.0.1", port_);
  send_bytes(fd, auth(kSecret) + msg('G', "gloo/rank_0", "1000"));
  EXPECT_EQ(receive(fd, 3, kAccepted.size() + 5 + 16).bytes, kAccepted + std::string(1, '\0') + u32(16) + "the real address");
  ::close(fd);
  expect_store_serves(port_, "after/no-secret");
}

TEST_F(Store, AMalformedMessageClosesThatConnectionOnly) {
  // Before the secret: garbage, another protocol, a key length where none is allowed.
  Rng rng(5);
  std::string noise(300, '\0');
  for (char& c : noise) c = static_cast<char>(rng.below(256));
  noise[0] = 'Q';
  std::vector<std::string> before = {noise, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", std::string("A") + u32(7) + "abcdefg"};
  // After the secret, from a connection that has it: numbers that are not numbers, ranks out
  // of range, beats from a connection that never said which rank it is, unknown operations.
  std::vector<std::string> after = {msg('G', "k", "abc"), msg('G', "k", "1e3"), msg('G', "k", "-5"), msg('G', "k", ""),
                                    msg('G', "k", " 5"), msg('G', "k", "99999999999999999999999"),
                                    msg('H', "x", ""), msg('H', "-1", ""), msg('H', "2", ""), msg('H', "0 ", ""),
                                    msg('B', "", "7"), msg('H', "1", "") + msg('B', "", "12a"), msg('Y', "", ""),
                                    msg('Z', "k", "v"), msg('A', "", kSecret)};
  for (const auto& m : before) {
    const int fd = connect_to("127.0.0.1", port_);
    send_bytes(fd, m);
    const Received r = receive(fd, 3);
    EXPECT_TRUE(r.closed);
    EXPECT_EQ(r.bytes, "");
    ::close(fd);
  }
  for (const auto& m : after) {
    const int fd = connect_to("127.0.0.1", port_);
    send_bytes(fd, auth(kSecret) + m);
    const Received r = receive(fd, 3);
    EXPECT_TRUE(r.closed) << "message " << testing::PrintToString(m);
    EXPECT_EQ(r.bytes, kAccepted) << "message " << testing::PrintToString(m);
    ::close(fd);
  }
  // The job's connection from before all this still works, and so do new ones.
  job_->set("after/garbage/old", "1");
  EXPECT_EQ(job_->get("after/garbage/old", 5), "1");
  expect_store_serves(port_, "after/garbage");
}

TEST_F(Store, ClaimedLengthsTakeNoMemoryBeforeTheBytesArrive) {
  // 13-byte messages that promise 60 MiB (before the secret) and 15 MiB values (after it),
  // left unfinished: a store that allocated on the promise would grow by about 1.2 GB here.
  const size_t rss0 = resident_bytes();
  std::vector<int> fds;
  for (int i = 0; i < 16; ++i) {
    const int a = connect_to("127.0.0.1", port_);
    send_bytes(a, std::string("A") + u32(0) + u32(60u << 20) + "x");
    fds.push_back(a);
    const int b = connect_to("127.0.0.1", port_);
    send_bytes(b, auth(kSecret) + "S" + u32(1) + "k" + u32(15u << 20) + "x");
    fds.push_back(b);
    const int c = connect_to("127.0.0.1", port_);
    send_bytes(c, auth(kSecret) + "S" + u32(0xffffffffu));
    fds.push_back(c);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const size_t grown = resident_bytes() - std::min(rss0, resident_bytes());
  EXPECT_LT(grown, size_t{32} << 20) << "resident memory grew by " << (grown >> 20) << " MiB";
  // Over the limit: closed at once. Under it but never finished: closed at the message timeout.
  for (size_t i = 0; i < fds.size(); ++i) {
    const Received r = receive(fds[i], 3);
    EXPECT_TRUE(r.closed) << "connection " << i;
    ::close(fds[i]);
  }
  expect_store_serves(port_, "after/lengths");
}

TEST_F(Store, ThousandConnectionsAndHalfMessagesAreShed) {
  rlimit lim{};
  ::getrlimit(RLIMIT_NOFILE, &lim);
  lim.rlim_cur = std::min<rlim_t>(lim.rlim_max, 8192);
  ::setrlimit(RLIMIT_NOFILE, &lim);
  ASSERT_GE(lim.rlim_cur, 1200u) << "this test needs 1,200 descriptors";
  // A thousand connections held open: half say nothing, half send part of a first message
  // (the slow-loris pattern).
  std::vector<int> fds;
  for (int i = 0; i < 1000; ++i) {
    const int fd = connect_to("127.0.0.1", port_);
    ASSERT_GE(fd, 0) << "connection " << i;
    if (i % 2) send_bytes(fd, auth(kSecret).substr(0, 7));
    fds.push_back(fd);
  }
  // Authenticated connections that start a message and never finish it.
  for (int i = 0; i < 4; ++i) {
    const int fd = connect_to("127.0.0.1", port_);
    send_bytes(fd, auth(kSecret) + msg('S', "k", "some value").substr(0, 9));
    fds.push_back(fd);
  }
  // While they are all open, the job still gets in and is served.
  const auto t0 = Clock::now();
  expect_store_serves(port_, "during/flood");
  EXPECT_EQ(job_->get("during/flood", 5), "value of during/flood");
  std::printf("(served during the flood after %.2f s)\n", std::chrono::duration<double>(Clock::now() - t0).count());
  // Within the deadlines (1 s here) every one of them has been closed by the store.
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  int open = 0;
  for (int fd : fds) {
    const double left = std::max(0.0, std::chrono::duration<double>(deadline - Clock::now()).count());
    open += !receive(fd, left).closed;
    ::close(fd);
  }
  EXPECT_EQ(open, 0) << "connections the store never closed";
  expect_store_serves(port_, "after/flood");
}

TEST_F(Store, KeysAreWrittenOnce) {
  KvClient other("127.0.0.1", port_, 1, 10, kSecret);
  EXPECT_THROW(other.set("gloo/rank_0", "an impostor's address"), CommError);
  EXPECT_THROW(job_->set("gloo/rank_0", "a second thought"), CommError);
  EXPECT_EQ(other.get("gloo/rank_0", 5), "the real address");
  // The refusal leaves the connection usable.
  other.set("gloo/rank_1", "b");
  EXPECT_EQ(job_->get("gloo/rank_1", 5), "b");
}

TEST_F(Store, ListensOnMasterAddrOnly) {
  // 127.0.0.2 is this host too (all of 127/8 is loopback), but not the address the store was
  // given: a store listening on every interface would accept this connection.
  const int other = connect_to("127.0.0.2", port_);
  EXPECT_LT(other, 0) << "the store accepted a connection on an address it was not given";
  if (other >= 0) ::close(other);
  const int fd = connect_to("127.0.0.1", port_);
  EXPECT_GE(fd, 0);
  ::close(fd);
}

TEST_F(Store, ClientNamesAWrongSecret) {
  try {
    KvClient c("127.0.0.1", port_, 1, 5, "not-the-secret-of-this-job");
    ADD_FAILURE() << "connected with a wrong secret";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("LOOM_JOB_SECRET"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find(kSecret), std::string::npos) << "the message shows the secret";
  }
}

TEST(StoreLimitsTest, KeepsServingWhenOutOfDescriptors) {
  // The store runs in a child limited to 24 descriptors; 60 silent connections exhaust them.
  int ports[2];
  ASSERT_EQ(::pipe(ports), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    rlimit lim{24, 24};
    ::setrlimit(RLIMIT_NOFILE, &lim);
    try {
      KvServer server("127.0.0.1", 0, 2, kSecret, quick_limits());
      const int port = server.port();
      if (::write(ports[1], &port, sizeof port) != sizeof port) ::_exit(1);
      std::this_thread::sleep_for(std::chrono::seconds(30));
    } catch (...) {
    }
    ::_exit(0);
  }
  int port = 0;
  ASSERT_EQ(::read(ports[0], &port, sizeof port), static_cast<ssize_t>(sizeof port));
  std::vector<int> fds;
  for (int i = 0; i < 60; ++i) fds.push_back(connect_to("127.0.0.1", port));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  // The descriptors are still exhausted by the silent connections (until their deadline), yet
  // the job's client gets in: the store drops an unauthenticated connection to make room.
  try {
    KvClient c("127.0.0.1", port, 0, 10, kSecret);
    c.set("k", "v");
    EXPECT_EQ(c.get("k", 5), "v");
  } catch (const std::exception& e) {
    ADD_FAILURE() << "the store stopped serving after running out of descriptors: " << e.what();
  }
  for (int fd : fds) ::close(fd);
  // And again once the flood is gone.
  try {
    KvClient c("127.0.0.1", port, 1, 10, kSecret);
    EXPECT_EQ(c.get("k", 5), "v");
  } catch (const std::exception& e) {
    ADD_FAILURE() << "the store stopped serving: " << e.what();
  }
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  ::close(ports[0]);
  ::close(ports[1]);
}

// A port nobody listens on right now (for the communicator, which binds it itself).
int unused_port() {
  int port = 0;
  ::close(listen_socket("127.0.0.1", 0, &port));
  return port;
}

TEST(StoreGloo, PublishedAddressesCarryNoStrayBytes) {
  // Two Gloo ranks meet through the store; a third client with the secret reads what they
  // published under their rank numbers. Each peer address is a sockaddr_storage (128 bytes) and a sequence number (8):
  // past the IPv4 family, port and address everything must be zero, not whatever memory held.
  setenv("LOOM_JOB_SECRET", kSecret.c_str(), 1);
  const int port = unused_port();
  std::latch up(3), read(1);
  std::vector<std::string> errors(2);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r)
    ranks.emplace_back([&, r] {
      try {
        auto comm = make_gloo_comm(r, 2, "127.0.0.1", port);
        up.count_down();
        read.wait();
        comm->barrier(0);
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(r)] = e.what();
        up.count_down();
      }
    });
  up.arrive_and_wait();
  std::vector<std::string> values;
  try {
    KvClient c("127.0.0.1", port, 0, 10, kSecret);
    for (int r = 0; r < 2; ++r) values.push_back(c.get("gloo/" + std::to_string(r), 5));
  } catch (const std::exception& e) {
    ADD_FAILURE() << e.what();
  }
  read.count_down();
  for (auto& t : ranks) t.join();
  EXPECT_EQ(errors[0], "");
  EXPECT_EQ(errors[1], "");
  ASSERT_EQ(values.size(), 2u);
  for (const std::string& v : values) {
    ASSERT_EQ(v.size(), 136u) << "one peer address per rank in a job of two";
    sa_family_t family = 0;
    std::memcpy(&family, v.data(), sizeof family);
    EXPECT_EQ(family, AF_INET);
    for (size_t i = 8; i < 128; ++i) EXPECT_EQ(v[i], 0) << "byte " << i << " of a published address";
  }
}

}  // namespace
}  // namespace loom::test
