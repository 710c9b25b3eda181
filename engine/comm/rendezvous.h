// rendezvous.h: a small TCP key-value store at MASTER_ADDR:MASTER_PORT, hosted by rank 0, that
// the ranks use to find each other (Gloo's full-mesh addresses, NCCL's unique id) and, for the
// rest of the job, as a liveness monitor: every rank keeps a connection open and reports which
// collective it has reached, so that when a collective fails the survivors can name the rank
// that died (its connection closed) or hung (it never reached the collective).
// It carries a few hundred bytes per rank; the collectives themselves never go through it.
//
// The store is reachable by whoever can reach MASTER_ADDR, so it trusts nobody by default
// (docs/reliability.md, "The rendezvous store"): it listens on MASTER_ADDR only, every
// connection must present the job's secret (LOOM_JOB_SECRET) in its first message, every
// length and number is checked as it arrives, and a bad connection is closed without
// disturbing the others. Keys are written once.
#pragma once
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "engine/comm/comm.h"

namespace loom {

// How much the store tolerates from a connection. The defaults suit real jobs; tests shorten
// the timeouts.
struct StoreLimits {
  double auth_timeout_s = 5;      // a new connection must present the secret within this
  double message_timeout_s = 30;  // a message, once started, must arrive whole within this
  int max_pending = 64;           // connections that have not yet presented the secret
  int spare_authed = 16;          // authenticated connections beyond the 2 per rank a job uses
};

// A listening TCP socket on addr:port (port 0: the kernel picks one), close-on-exec. addr is
// resolved and bound as given: 127.0.0.1 listens on loopback only, never on every interface.
// CommError naming addr:port when it cannot bind. The port bound is in *bound_port.
int listen_socket(const std::string& addr, int port, int* bound_port);

// Rank 0's side: one thread polling every connection; answers SET (once per key) / GET
// (blocking until the key appears) / STATUS, tracks the monitor connections.
class KvServer {
 public:
  // CommError if the port is taken. When this process inherited the listening socket of
  // addr:port from `loom launch` (LOOM_STORE_FD), the store serves on that one.
  KvServer(const std::string& addr, int port, int world, const std::string& secret = job_secret(),
           const StoreLimits& limits = {});
  ~KvServer();
  KvServer(const KvServer&) = delete;
  KvServer& operator=(const KvServer&) = delete;
  int port() const { return port_; }  // the bound port (useful with port 0)

 private:
  struct Conn;
  void loop();
  void accept_ready();
  void on_readable(Conn& c);
  bool handle(Conn& c, char op, const std::string& key, const std::string& value);
  void reply(Conn& c, char status, const std::string& bytes);
  void flush(Conn& c);
  void answer_waiters(const std::string& key);
  void expire(Conn& c);
  void refuse(const std::string& why);
  int listen_fd_ = -1, wake_[2] = {-1, -1}, spare_fd_ = -1, port_ = 0;
  int world_;
  std::string secret_;
  StoreLimits limits_;
  std::map<std::string, std::string> kv_;
  std::vector<int> state_;       // 0 not seen, 1 alive, 2 finished, 3 lost
  std::vector<uint64_t> seq_;    // the collective each rank has reached
  std::vector<std::unique_ptr<Conn>> conns_;
  int refused_ = 0;
  double last_note_ = -1e9, accept_paused_until_ = 0;
  std::thread loop_thread_;
};

// Every rank's side (rank 0 included).
class KvClient {
 public:
  // Connects and presents the secret, retrying until timeout_s; CommError naming addr:port
  // after that, UserError when the store refuses the secret.
  KvClient(const std::string& addr, int port, int rank, double timeout_s, const std::string& secret = job_secret());
  ~KvClient();
  KvClient(const KvClient&) = delete;
  KvClient& operator=(const KvClient&) = delete;
  // CommError when the key was already written (keys are written once).
  void set(const std::string& key, const std::string& value);
  // Blocks until the key exists; CommError after timeout_s.
  std::string get(const std::string& key, double timeout_s);
  // Starts the liveness monitor: a second connection, a beat every 500 ms carrying *seq.
  void start_monitor(const std::atomic<uint64_t>* seq);
  // Marks this rank as finished (a clean exit, not a loss) and stops the monitor.
  void finish();
  // After a failed collective number `my_seq`: which ranks were lost or are behind, as text.
  std::string diagnose(uint64_t my_seq);
  const std::string& where() const { return where_; }

 private:
  int open_connection(double timeout_s);
  std::string request(char op, const std::string& key, const std::string& value, double timeout_s);
  std::string addr_, where_, secret_;
  int port_, rank_;
  int fd_ = -1, mon_fd_ = -1;
  std::mutex mu_;
  std::thread beat_;
  std::atomic<bool> stop_{false};
};

}  // namespace loom
