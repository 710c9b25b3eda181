// rendezvous.cpp: the key-value store and liveness monitor of rendezvous.h over plain TCP.
// A message is [op: 1 byte][key length: u32][key][value length: u32][value]; a reply is
// [status: 1 byte][length: u32][bytes]. One thread per connection on the server: a job has at
// most a few thousand ranks and the store is idle after start-up.
#include "engine/comm/rendezvous.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <sstream>

#include "engine/comm/comm.h"

namespace loom {

namespace {

using Clock = std::chrono::steady_clock;
enum Op : char { kSet = 'S', kGet = 'G', kHello = 'H', kBeat = 'B', kBye = 'Y', kStatus = 'T' };
enum State { kUnseen = 0, kAlive = 1, kFinished = 2, kLost = 3 };

// Reads exactly n bytes; false on EOF, error or (with a receive timeout set) timeout.
bool read_all(int fd, void* p, size_t n) {
  char* c = static_cast<char*>(p);
  while (n > 0) {
    const ssize_t r = ::recv(fd, c, n, 0);
    if (r <= 0) {
      if (r < 0 && errno == EINTR) continue;
      return false;
    }
    c += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}
bool write_all(int fd, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t r = ::send(fd, c, n, MSG_NOSIGNAL);
    if (r <= 0) {
      if (r < 0 && errno == EINTR) continue;
      return false;
    }
    c += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}
bool write_str(int fd, const std::string& s) {
  const uint32_t n = static_cast<uint32_t>(s.size());
  return write_all(fd, &n, 4) && write_all(fd, s.data(), s.size());
}
bool read_str(int fd, std::string& s) {
  uint32_t n = 0;
  if (!read_all(fd, &n, 4) || n > (64u << 20)) return false;
  s.resize(n);
  return read_all(fd, s.data(), n);
}
bool send_msg(int fd, char op, const std::string& k, const std::string& v) {
  return write_all(fd, &op, 1) && write_str(fd, k) && write_str(fd, v);
}
void set_recv_timeout(int fd, double s) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(s);
  tv.tv_usec = static_cast<suseconds_t>((s - static_cast<double>(tv.tv_sec)) * 1e6);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

// One connection attempt to host:port; -1 on failure.
int try_connect(const std::string& host, int port) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  if (::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res) != 0) return -1;
  int fd = -1;
  for (addrinfo* a = res; a; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
    ::close(fd);
    fd = -1;
  }
  ::freeaddrinfo(res);
  if (fd >= 0) {
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return fd;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
KvServer::KvServer(const std::string& addr, int port, int world)
    : world_(world), state_(static_cast<size_t>(world), kUnseen), seq_(static_cast<size_t>(world), 0) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) throw CommError("rendezvous: socket(): " + std::string(std::strerror(errno)));
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  sa.sin_addr.s_addr = htonl(INADDR_ANY);  // MASTER_ADDR names this host; listen on all its interfaces
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(listen_fd_, 1024) != 0) {
    const std::string why = std::strerror(errno);
    ::close(listen_fd_);
    throw CommError("rendezvous: rank 0 cannot listen on MASTER_ADDR:MASTER_PORT = " + addr + ":" +
                    std::to_string(port) + " (" + why + "; is another job using the port? set MASTER_PORT)");
  }
  acceptor_ = std::thread([this] { accept_loop(); });
}

KvServer::~KvServer() {
  stop_ = true;
  ::shutdown(listen_fd_, SHUT_RDWR);
  ::close(listen_fd_);
  {
    std::lock_guard<std::mutex> l(mu_);
    for (int fd : conns_) ::shutdown(fd, SHUT_RDWR);
  }
  cv_.notify_all();
  if (acceptor_.joinable()) acceptor_.join();
  for (auto& t : threads_) t.join();
  for (int fd : conns_) ::close(fd);
}

void KvServer::accept_loop() {
  while (!stop_) {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return;  // closed by the destructor
    }
    std::lock_guard<std::mutex> l(mu_);
    if (stop_) {
      ::close(fd);
      return;
    }
    conns_.push_back(fd);
    threads_.emplace_back([this, fd] { serve(fd); });
  }
}

void KvServer::serve(int fd) {
  int monitor_rank = -1;
  for (;;) {
    char op = 0;
    std::string k, v;
    if (!read_all(fd, &op, 1) || !read_str(fd, k) || !read_str(fd, v)) break;
    std::unique_lock<std::mutex> l(mu_);
    if (op == kSet) {
      kv_[k] = v;
      cv_.notify_all();
      l.unlock();
      const char ok = 0;
      if (!write_all(fd, &ok, 1) || !write_str(fd, "")) break;
    } else if (op == kGet) {
      const double timeout_s = std::stod(v);
      const bool found = cv_.wait_for(l, std::chrono::duration<double>(timeout_s),
                                      [&] { return stop_ || kv_.count(k) > 0; }) && !stop_;
      const std::string value = found ? kv_[k] : "";
      l.unlock();
      const char st = found ? 0 : 1;
      if (!write_all(fd, &st, 1) || !write_str(fd, value)) break;
    } else if (op == kHello) {
      monitor_rank = std::stoi(k);
      if (monitor_rank >= 0 && monitor_rank < world_) state_[monitor_rank] = kAlive;
    } else if (op == kBeat) {
      if (monitor_rank >= 0 && monitor_rank < world_) seq_[monitor_rank] = std::stoull(v);
    } else if (op == kBye) {
      if (monitor_rank >= 0 && monitor_rank < world_) state_[monitor_rank] = kFinished;
    } else if (op == kStatus) {
      std::ostringstream s;
      for (int r = 0; r < world_; ++r) s << state_[r] << " " << seq_[r] << "\n";
      l.unlock();
      const char ok = 0;
      if (!write_all(fd, &ok, 1) || !write_str(fd, s.str())) break;
    }
  }
  // The connection closed: a monitor connection that did not say goodbye is a lost rank.
  std::lock_guard<std::mutex> l(mu_);
  if (monitor_rank >= 0 && monitor_rank < world_ && state_[monitor_rank] == kAlive) state_[monitor_rank] = kLost;
}

// ---------------------------------------------------------------------------------------------
KvClient::KvClient(const std::string& addr, int port, int rank, double timeout_s)
    : addr_(addr), where_("MASTER_ADDR:MASTER_PORT = " + addr + ":" + std::to_string(port)), port_(port), rank_(rank) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  while ((fd_ = try_connect(addr, port)) < 0) {
    if (Clock::now() > deadline)
      throw CommError("rendezvous: rank " + std::to_string(rank) + " could not reach " + where_ + " within " +
                      std::to_string(static_cast<int>(timeout_s)) +
                      " s (is rank 0 running, and are MASTER_ADDR/MASTER_PORT the same on every rank? "
                      "LOOM_RENDEZVOUS_TIMEOUT sets the wait)");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

KvClient::~KvClient() {
  stop_ = true;
  if (beat_.joinable()) beat_.join();
  if (mon_fd_ >= 0) ::close(mon_fd_);
  if (fd_ >= 0) ::close(fd_);
}

std::string KvClient::request(char op, const std::string& key, const std::string& value, double timeout_s) {
  std::lock_guard<std::mutex> l(mu_);
  set_recv_timeout(fd_, timeout_s);
  char st = 0;
  std::string reply;
  if (!send_msg(fd_, op, key, value) || !read_all(fd_, &st, 1) || !read_str(fd_, reply))
    throw CommError("rendezvous: lost the connection to rank 0's store at " + where_ + " (rank 0 exited?)");
  if (st != 0) throw CommError("timeout");
  return reply;
}

void KvClient::set(const std::string& key, const std::string& value) { request(kSet, key, value, 60); }

std::string KvClient::get(const std::string& key, double timeout_s) {
  try {
    return request(kGet, key, std::to_string(timeout_s), timeout_s + 10);
  } catch (const CommError& e) {
    if (std::string(e.what()) != "timeout") throw;
    throw CommError("rendezvous at " + where_ + ": rank " + std::to_string(rank_) + " waited " +
                    std::to_string(static_cast<int>(timeout_s)) + " s for '" + key +
                    "' (not every rank arrived: check WORLD_SIZE and that all ranks were started)");
  }
}

void KvClient::start_monitor(const std::atomic<uint64_t>* seq) {
  mon_fd_ = try_connect(addr_, port_);
  if (mon_fd_ < 0) throw CommError("rendezvous: cannot open the monitor connection to " + where_);
  send_msg(mon_fd_, kHello, std::to_string(rank_), "");
  beat_ = std::thread([this, seq] {
    uint64_t sent = ~uint64_t{0};
    while (!stop_) {
      const uint64_t s = seq->load();
      if (s != sent && !send_msg(mon_fd_, kBeat, "", std::to_string(s))) return;  // store gone: nothing to report to
      sent = s;
      for (int i = 0; i < 10 && !stop_; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
}

void KvClient::finish() {
  stop_ = true;
  if (beat_.joinable()) beat_.join();
  if (mon_fd_ >= 0) send_msg(mon_fd_, kBye, "", "");
}

std::string KvClient::diagnose(uint64_t my_seq) {
  // A killed rank's connection closes at once, but give the store a moment to notice.
  std::string last;
  for (int attempt = 0; attempt < 30; ++attempt) {
    std::string status;
    try {
      status = request(kStatus, "", "", 5);
    } catch (const CommError&) {
      return "lost rank 0 (it hosts the rendezvous store at " + where_ + " and is no longer reachable)";
    }
    std::istringstream in(status);
    std::string lost, behind;
    int state = 0;
    uint64_t seq = 0;
    for (int r = 0; in >> state >> seq; ++r) {
      if (state == kLost) lost += (lost.empty() ? "" : ", ") + std::to_string(r);
      else if (state == kAlive && seq < my_seq && r != rank_) behind += (behind.empty() ? "" : ", ") + std::to_string(r);
    }
    if (!lost.empty()) return "lost rank " + lost + " (its process exited)";
    if (!behind.empty()) last = "rank " + behind + " did not reach this collective (hung or far behind)";
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return last.empty() ? "no rank has exited; a peer closed its connection or the network failed" : last;
}

}  // namespace loom
