// rendezvous.cpp: the key-value store and liveness monitor of rendezvous.h over plain TCP.
//
// Wire format, integers little-endian: a message is
//   [op: 1 byte][key length: u32][key][value length: u32][value]
// and a reply [status: 1 byte][length: u32][bytes]. The first message of every connection is
// AUTH (op 'A', empty key, the job's secret as value); the store answers 0 and serves the
// connection, or answers 2 (wrong secret) / 4 (too many connections) and closes it.
//
// The server is one thread polling non-blocking sockets rather than a thread per connection:
// whatever a peer sends, the store holds at most what has arrived (a length is checked against
// its limit before a byte of the body is awaited), never blocks on one peer, and closes a
// connection that breaks the protocol or misses a deadline without disturbing the others.
// docs/reliability.md lists each promise and the test that proves it.
#include "engine/comm/rendezvous.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <limits>
#include <sstream>

#include "core/check.h"
#include "engine/io/fd.h"

namespace loom {

namespace {

using Clock = std::chrono::steady_clock;
enum Op : char { kAuth = 'A', kSet = 'S', kGet = 'G', kHello = 'H', kBeat = 'B', kBye = 'Y', kStatus = 'T' };
enum Status : char { kOk = 0, kTimedOut = 1, kBadSecret = 2, kExists = 3, kFull = 4 };
enum State { kUnseen = 0, kAlive = 1, kFinished = 2, kLost = 3 };

// Limits on what a peer may claim. A Gloo rank publishes 136 bytes per peer, so 16 MiB covers
// jobs of over 100,000 ranks; keys are short names ("gloo/rank_17", "nccl/id").
constexpr size_t kMaxSecret = 256, kMaxKey = 1024, kMaxValue = size_t{16} << 20;
constexpr uint64_t kMaxWaitMs = uint64_t{7} * 24 * 3600 * 1000;  // a GET waits at most a week
// With every slot for unauthenticated connections taken, a new one evicts the oldest only if
// that one has had this long to present the secret (a real rank sends it at once).
constexpr double kEvictAge_s = 0.25;

double now_s() { return std::chrono::duration<double>(Clock::now().time_since_epoch()).count(); }

void put_u32(std::string& s, size_t n) {
  for (int i = 0; i < 4; ++i) s += static_cast<char>((n >> (8 * i)) & 0xff);
}
uint32_t get_u32(const char* p) {
  uint32_t n = 0;
  for (int i = 0; i < 4; ++i) n |= static_cast<uint32_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return n;
}
std::string message(char op, const std::string& k, const std::string& v) {
  std::string s(1, op);
  put_u32(s, k.size());
  s += k;
  put_u32(s, v.size());
  s += v;
  return s;
}

enum class Parse { kNeedMore, kBad, kMessage };
// One message from the front of `in`, each length checked as soon as its 4 bytes are there.
Parse parse_message(const std::string& in, size_t max_key, size_t max_value, char* op, std::string* k,
                    std::string* v, size_t* used) {
  if (in.size() < 5) return Parse::kNeedMore;
  const size_t kl = get_u32(in.data() + 1);
  if (kl > max_key) return Parse::kBad;
  if (in.size() < 9 + kl) return Parse::kNeedMore;
  const size_t vl = get_u32(in.data() + 5 + kl);
  if (vl > max_value) return Parse::kBad;
  if (in.size() < 9 + kl + vl) return Parse::kNeedMore;
  *op = in[0];
  k->assign(in, 5, kl);
  v->assign(in, 9 + kl, vl);
  *used = 9 + kl + vl;
  return Parse::kMessage;
}

// A whole decimal number no larger than max; anything else (sign, spaces, exponent, empty) is
// a bad message.
template <class T>
bool parse_number(const std::string& s, T max, T* out) {
  T x{};
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), x);
  if (ec != std::errc() || end != s.data() + s.size() || x > max) return false;
  *out = x;
  return true;
}

// The time taken depends on the expected secret's length only, not on where the first
// differing byte is.
bool same_secret(const std::string& given, const std::string& expected) {
  unsigned diff = given.size() != expected.size();
  for (size_t i = 0; i < expected.size(); ++i)
    diff |= static_cast<unsigned char>(expected[i]) ^ static_cast<unsigned char>(i < given.size() ? given[i] : 0);
  return diff == 0;
}

// Reads exactly n bytes; false on EOF, error or (with a receive timeout set) timeout.
bool read_all(int fd, char* c, size_t n) {
  return transfer(c, n, 0, [&](char* p, size_t k, uint64_t) { return ::recv(fd, p, k, 0); }) == n;
}
bool write_all(int fd, const std::string& s) {
  const auto send = [&](char* p, size_t k, uint64_t) { return ::send(fd, p, k, MSG_NOSIGNAL); };
  return transfer(const_cast<char*>(s.data()), s.size(), 0, send) == s.size();
}
// A reply; its body grows with the bytes that arrive, never ahead of them by more than a chunk.
bool read_reply(int fd, char* status, std::string* body) {
  char head[5];
  if (!read_all(fd, head, 5)) return false;
  const size_t n = get_u32(head + 1);
  if (n > kMaxValue) return false;
  *status = head[0];
  body->clear();
  while (body->size() < n) {
    const size_t at = body->size(), chunk = std::min<size_t>(n - at, 65536);
    body->resize(at + chunk);
    if (!read_all(fd, body->data() + at, chunk)) return false;
  }
  return true;
}
void set_recv_timeout(int fd, double s) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(s);
  tv.tv_usec = static_cast<suseconds_t>((s - static_cast<double>(tv.tv_sec)) * 1e6);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}
void set_nodelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int port_of(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(ss).sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(ss).sin6_port);
  return -1;
}
std::string host_of(const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (ss.ss_family == AF_INET)
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(ss).sin_addr, buf, sizeof buf);
  else if (ss.ss_family == AF_INET6)
    ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(ss).sin6_addr, buf, sizeof buf);
  return buf;
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
  if (fd >= 0) set_nodelay(fd);
  return fd;
}

// The listening socket `loom launch` bound for this job and handed to rank 0 (LOOM_STORE_FD),
// so that no other process can take the port between the launcher choosing it and the store
// opening; -1 when there is none for this port (or it was already taken by an earlier store).
int inherited_listener(int port) {
  static std::atomic<bool> taken{false};
  const char* v = std::getenv("LOOM_STORE_FD");
  int fd = -1;
  if (!v || !parse_number<int>(v, 1 << 20, &fd) || fd < 3 || taken.load()) return -1;
  int listening = 0;
  socklen_t len = sizeof listening;
  sockaddr_storage ss{};
  socklen_t sl = sizeof ss;
  if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &sl) != 0 || port_of(ss) != port || taken.exchange(true))
    return -1;
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  return fd;
}

}  // namespace

int listen_socket(const std::string& addr, int port, int* bound_port) {
  const std::string where = "MASTER_ADDR:MASTER_PORT = " + addr + ":" + std::to_string(port);
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  if (const int e = ::getaddrinfo(addr.c_str(), std::to_string(port).c_str(), &hints, &res); e != 0)
    throw CommError("rendezvous: rank 0 cannot resolve " + where + " (" + ::gai_strerror(e) + ")");
  int fd = -1, err = 0;
  for (addrinfo* a = res; a && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      err = errno;
      continue;
    }
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd, 1024) != 0) {
      err = errno;
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(res);
  if (fd < 0)
    throw CommError("rendezvous: rank 0 cannot listen on " + where + " (" + std::strerror(err) +
                    (err == EADDRNOTAVAIL ? "; MASTER_ADDR must be an address of rank 0's host"
                                          : "; is another job using the port? set MASTER_PORT") + ")");
  sockaddr_storage ss{};
  socklen_t sl = sizeof ss;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &sl);
  *bound_port = port_of(ss);
  return fd;
}

// ---------------------------------------------------------------------------------------------
struct KvServer::Conn {
  int fd = -1;
  std::string peer;
  bool authed = false, dead = false;
  int rank = -1;                 // the rank whose monitor connection this is
  std::string in, out;           // received and not yet parsed; to send
  double opened = 0, started = 0;  // accepted; first byte of the unfinished message (0: none)
  bool waiting = false;          // a GET for wait_key, answered by wait_until at the latest
  std::string wait_key;
  double wait_until = 0;
};

KvServer::KvServer(const std::string& addr, int port, int world, const std::string& secret, const StoreLimits& limits)
    : world_(world), secret_(secret), limits_(limits), state_(static_cast<size_t>(world), kUnseen),
      seq_(static_cast<size_t>(world), 0) {
  LOOM_CHECK(!secret_.empty(), "the rendezvous store needs a secret");
  listen_fd_ = inherited_listener(port);
  if (listen_fd_ >= 0)
    port_ = port;
  else
    listen_fd_ = listen_socket(addr, port, &port_);
  ::fcntl(listen_fd_, F_SETFL, ::fcntl(listen_fd_, F_GETFL) | O_NONBLOCK);
  LOOM_CHECK(::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) == 0, "rendezvous: pipe: ", std::strerror(errno));
  // Held back for the moment the process runs out of descriptors (see accept_ready).
  spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  loop_thread_ = std::thread([this] { loop(); });
}

KvServer::~KvServer() {
  const char stop = 1;
  while (::write(wake_[1], &stop, 1) < 0 && errno == EINTR) {
  }
  if (loop_thread_.joinable()) loop_thread_.join();
  for (auto& c : conns_)
    if (c->fd >= 0) ::close(c->fd);
  for (int fd : {listen_fd_, wake_[0], wake_[1], spare_fd_})
    if (fd >= 0) ::close(fd);
}

void KvServer::loop() {
  std::vector<pollfd> fds;
  for (;;) {
    double now = now_s(), next = now + 1.0;
    fds.clear();
    fds.push_back({wake_[0], POLLIN, 0});
    fds.push_back({now >= accept_paused_until_ ? listen_fd_ : -1, POLLIN, 0});
    for (const auto& c : conns_) {
      fds.push_back({c->fd, static_cast<short>(POLLIN | (c->out.empty() ? 0 : POLLOUT)), 0});
      if (!c->authed) next = std::min(next, c->opened + limits_.auth_timeout_s);
      if (c->waiting) next = std::min(next, c->wait_until);
      if (c->started > 0) next = std::min(next, c->started + limits_.message_timeout_s);
    }
    if (accept_paused_until_ > now) next = std::min(next, accept_paused_until_);
    const int ms = static_cast<int>(std::clamp((next - now) * 1000.0 + 1.0, 0.0, 1000.0));
    if (::poll(fds.data(), fds.size(), ms) < 0 && errno != EINTR) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));  // ENOMEM: try again, never give up
      continue;
    }
    if (fds[0].revents) return;  // the destructor
    for (size_t i = 2; i < fds.size(); ++i) {
      Conn& c = *conns_[i - 2];
      if (c.dead) continue;  // evicted meanwhile
      if (fds[i].revents & POLLOUT) flush(c);
      if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) on_readable(c);
    }
    if (fds[1].revents & POLLIN) accept_ready();
    for (auto& c : conns_) expire(*c);
    // Closed connections go now: a monitor connection that did not say goodbye is a lost rank.
    for (auto& c : conns_) {
      if (!c->dead) continue;
      if (c->rank >= 0 && state_[static_cast<size_t>(c->rank)] == kAlive) state_[static_cast<size_t>(c->rank)] = kLost;
      if (c->fd >= 0) ::close(c->fd);
      c->fd = -1;
    }
    conns_.erase(std::remove_if(conns_.begin(), conns_.end(), [](const auto& c) { return c->dead; }), conns_.end());
  }
}

void KvServer::accept_ready() {
  int pending = 0;
  for (const auto& c : conns_) pending += !c->authed && !c->dead;
  for (int burst = 0; burst < 64; ++burst) {
    sockaddr_storage ss{};
    socklen_t sl = sizeof ss;
    const int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &sl, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE) {
        // Out of descriptors. The connection would wait in the backlog and poll would report
        // it forever: make room by dropping the oldest unauthenticated connection, else take
        // it with the spare descriptor and close it at once.
        auto oldest = std::find_if(conns_.begin(), conns_.end(), [](const auto& c) { return !c->authed && !c->dead; });
        if (oldest != conns_.end()) {
          refuse("out of file descriptors, dropped a connection from " + (*oldest)->peer);
          ::close((*oldest)->fd);
          (*oldest)->fd = -1;
          (*oldest)->dead = true;
          --pending;
          continue;
        }
        if (spare_fd_ >= 0) {
          ::close(spare_fd_);
          const int shed = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
          if (shed >= 0) ::close(shed);
          spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
          refuse("out of file descriptors");
          continue;
        }
      }
      // Nothing waiting (EAGAIN), or no memory: pause accepting for a moment, then try again.
      if (errno != EAGAIN && errno != EWOULDBLOCK) accept_paused_until_ = now_s() + 0.05;
      return;
    }
    auto c = std::make_unique<Conn>();
    c->fd = fd;
    c->peer = host_of(ss);
    c->opened = now_s();
    set_nodelay(fd);
    if (pending >= limits_.max_pending) {
      // Every slot is taken by connections that have not presented the secret: evict the
      // oldest if it has had its chance, else turn this one away (a real rank retries).
      Conn* old = nullptr;
      for (auto& o : conns_)
        if (!o->authed && !o->dead && (!old || o->opened < old->opened)) old = o.get();
      if (!old || c->opened - old->opened < kEvictAge_s) {
        refuse("too many connections without the secret, from " + c->peer);
        ::close(fd);
        continue;
      }
      refuse("connection from " + old->peer + " did not present the secret");
      old->dead = true;
      ::shutdown(old->fd, SHUT_RDWR);
      --pending;
    }
    conns_.push_back(std::move(c));
    ++pending;
  }
}

void KvServer::on_readable(Conn& c) {
  char buf[65536];
  // A bounded number of reads per round, so that one busy connection cannot starve the others.
  for (int round = 0; round < 16 && !c.dead; ++round) {
    const ssize_t r = ::recv(c.fd, buf, sizeof buf, 0);
    if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)) {
      c.dead = true;
      return;
    }
    if (r < 0) {
      if (errno == EINTR) continue;
      return;
    }
    c.in.append(buf, static_cast<size_t>(r));
    if (c.started == 0) c.started = now_s();
    while (!c.dead && !c.waiting && !c.in.empty()) {
      char op = 0;
      std::string k, v;
      size_t used = 0;
      // Before the secret only AUTH is accepted, with an empty key and a short value.
      const Parse p = c.authed ? parse_message(c.in, kMaxKey, kMaxValue, &op, &k, &v, &used)
                               : c.in[0] != kAuth ? Parse::kBad
                                                  : parse_message(c.in, 0, kMaxSecret, &op, &k, &v, &used);
      if (p == Parse::kNeedMore) break;
      if (p == Parse::kBad || (c.in.erase(0, used), !handle(c, op, k, v))) {
        refuse((c.authed ? "malformed message from rank connection " : "malformed first message from ") + c.peer);
        c.dead = true;
      }
    }
    // A client waits for the answer to its GET before it sends again.
    if (c.waiting && !c.in.empty()) {
      refuse("message sent while waiting, from " + c.peer);
      c.dead = true;
    }
    c.started = c.in.empty() ? 0 : c.started;
    if (static_cast<size_t>(r) < sizeof buf) return;
  }
}

bool KvServer::handle(Conn& c, char op, const std::string& key, const std::string& value) {
  if (!c.authed) {
    int authed = 0;
    for (const auto& o : conns_) authed += o->authed && !o->dead;
    const bool good = same_secret(value, secret_);
    const bool room = authed < 2 * int64_t{world_} + limits_.spare_authed;
    if (good && room) {
      c.authed = true;
      reply(c, kOk, "");
      return true;
    }
    refuse(good ? "too many connections for a job of " + std::to_string(world_) + " ranks, from " + c.peer
                : "wrong secret from " + c.peer);
    reply(c, good ? kFull : kBadSecret, "");
    c.dead = true;
    return true;
  }
  switch (op) {
    case kSet: {
      const bool fresh = kv_.emplace(key, value).second;
      reply(c, fresh ? kOk : kExists, "");
      if (fresh) answer_waiters(key);
      return true;
    }
    case kGet: {
      uint64_t ms = 0;
      if (!parse_number(value, kMaxWaitMs, &ms)) return false;
      const auto it = kv_.find(key);
      if (it != kv_.end()) {
        reply(c, kOk, it->second);
      } else {
        c.waiting = true;
        c.wait_key = key;
        c.wait_until = now_s() + static_cast<double>(ms) / 1000.0;
      }
      return true;
    }
    case kHello: {
      int rank = -1;
      if (!parse_number(key, world_ - 1, &rank) || rank < 0) return false;
      c.rank = rank;
      state_[static_cast<size_t>(rank)] = kAlive;
      return true;
    }
    case kBeat: {
      uint64_t seq = 0;
      if (c.rank < 0 || !parse_number(value, std::numeric_limits<uint64_t>::max(), &seq)) return false;
      seq_[static_cast<size_t>(c.rank)] = seq;
      return true;
    }
    case kBye:
      if (c.rank < 0) return false;
      state_[static_cast<size_t>(c.rank)] = kFinished;
      return true;
    case kStatus: {
      std::string s;
      for (int r = 0; r < world_; ++r)
        s += std::to_string(state_[static_cast<size_t>(r)]) + " " + std::to_string(seq_[static_cast<size_t>(r)]) + "\n";
      reply(c, kOk, s);
      return true;
    }
    default:
      return false;
  }
}

// Queues a reply and sends what the socket takes now; the rest goes when poll says it can.
void KvServer::reply(Conn& c, char status, const std::string& bytes) {
  c.out.push_back(status);
  put_u32(c.out, bytes.size());
  c.out += bytes;
  flush(c);
}

void KvServer::flush(Conn& c) {
  while (!c.out.empty() && !c.dead) {
    const ssize_t r = ::send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r > 0) {
      c.out.erase(0, static_cast<size_t>(r));
    } else if (r < 0 && errno == EINTR) {
      continue;
    } else {
      c.dead = !(r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
      return;
    }
  }
}

void KvServer::answer_waiters(const std::string& key) {
  for (auto& c : conns_)
    if (c->waiting && !c->dead && c->wait_key == key) {
      c->waiting = false;
      reply(*c, kOk, kv_[key]);
    }
}

void KvServer::expire(Conn& c) {
  if (c.dead) return;
  const double now = now_s();
  if (!c.authed && now > c.opened + limits_.auth_timeout_s) {
    refuse("connection from " + c.peer + " did not present the secret in time");
    c.dead = true;
  } else if (c.started > 0 && now > c.started + limits_.message_timeout_s) {
    refuse("unfinished message from " + c.peer);
    c.dead = true;
  } else if (c.waiting && now >= c.wait_until) {
    c.waiting = false;
    reply(c, kTimedOut, "");
  }
}

// Refusals are counted and reported at most every 10 s, so that an intruder hammering the port
// cannot flood the job's output; the first is reported at once.
void KvServer::refuse(const std::string& why) {
  ++refused_;
  const double now = now_s();
  if (now - last_note_ < 10) return;
  std::fprintf(stderr, "rendezvous: the store refused %d connection(s) (latest: %s)\n", refused_, why.c_str());
  std::fflush(stderr);
  refused_ = 0;
  last_note_ = now;
}

// ---------------------------------------------------------------------------------------------
KvClient::KvClient(const std::string& addr, int port, int rank, double timeout_s, const std::string& secret)
    : addr_(addr), where_("MASTER_ADDR:MASTER_PORT = " + addr + ":" + std::to_string(port)), secret_(secret),
      port_(port), rank_(rank) {
  fd_ = open_connection(timeout_s);
}

KvClient::~KvClient() {
  stop_ = true;
  if (beat_.joinable()) beat_.join();
  if (mon_fd_ >= 0) ::close(mon_fd_);
  if (fd_ >= 0) ::close(fd_);
}

// Connects and presents the secret, retrying until timeout_s: rank 0 may not be up yet, and a
// busy store may turn a connection away.
int KvClient::open_connection(double timeout_s) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  std::string why;
  for (;;) {
    const int fd = try_connect(addr_, port_);
    if (fd >= 0) {
      set_recv_timeout(fd, 5);
      char st = 0;
      std::string body;
      const bool answered = write_all(fd, message(kAuth, "", secret_)) && read_reply(fd, &st, &body);
      if (answered && st == kOk) return fd;
      ::close(fd);
      if (answered && st == kBadSecret)
        throw UserError("LOOM_JOB_SECRET: the rendezvous store at " + where_ + " refused rank " +
                        std::to_string(rank_) +
                        "'s secret (every rank of a job needs the same LOOM_JOB_SECRET; loom launch sets it)");
      why = answered && st == kFull ? "; the store has more connections than a job of this size needs" : "";
    }
    if (Clock::now() > deadline)
      throw CommError("rendezvous: rank " + std::to_string(rank_) + " could not reach " + where_ + " within " +
                      std::to_string(static_cast<int>(timeout_s)) +
                      " s (is rank 0 running, and are MASTER_ADDR/MASTER_PORT the same on every rank? "
                      "LOOM_RENDEZVOUS_TIMEOUT sets the wait" + why + ")");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

std::string KvClient::request(char op, const std::string& key, const std::string& value, double timeout_s) {
  std::lock_guard<std::mutex> l(mu_);
  set_recv_timeout(fd_, timeout_s);
  char st = 0;
  std::string reply;
  if (!write_all(fd_, message(op, key, value)) || !read_reply(fd_, &st, &reply))
    throw CommError("rendezvous: lost the connection to rank 0's store at " + where_ + " (rank 0 exited?)");
  if (st == kTimedOut) throw CommError("timeout");
  if (st == kExists)
    throw CommError("rendezvous: the store at " + where_ + " already holds '" + key +
                    "' (keys are written once: are two jobs using the same MASTER_ADDR:MASTER_PORT?)");
  return reply;
}

void KvClient::set(const std::string& key, const std::string& value) { request(kSet, key, value, 60); }

std::string KvClient::get(const std::string& key, double timeout_s) {
  const double ms = std::clamp(timeout_s * 1000.0, 0.0, static_cast<double>(kMaxWaitMs));
  try {
    return request(kGet, key, std::to_string(static_cast<uint64_t>(ms)), timeout_s + 10);
  } catch (const CommError& e) {
    if (std::string(e.what()) != "timeout") throw;
    throw CommError("rendezvous at " + where_ + ": rank " + std::to_string(rank_) + " waited " +
                    std::to_string(static_cast<int>(timeout_s)) + " s for '" + key +
                    "' (not every rank arrived: check WORLD_SIZE and that all ranks were started)");
  }
}

void KvClient::start_monitor(const std::atomic<uint64_t>* seq) {
  try {
    mon_fd_ = open_connection(10);
  } catch (const CommError&) {
    throw CommError("rendezvous: cannot open the monitor connection to " + where_);
  }
  write_all(mon_fd_, message(kHello, std::to_string(rank_), ""));
  beat_ = std::thread([this, seq] {
    uint64_t sent = ~uint64_t{0};
    while (!stop_) {
      const uint64_t s = seq->load();
      if (s != sent && !write_all(mon_fd_, message(kBeat, "", std::to_string(s))))
        return;  // store gone: nothing to report to
      sent = s;
      for (int i = 0; i < 10 && !stop_; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
}

void KvClient::finish() {
  stop_ = true;
  if (beat_.joinable()) beat_.join();
  if (mon_fd_ >= 0) write_all(mon_fd_, message(kBye, "", ""));
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
