// rendezvous.h: a small TCP key-value store at MASTER_ADDR:MASTER_PORT, hosted by rank 0, that
// the ranks use to find each other (Gloo's full-mesh addresses, NCCL's unique id) and, for the
// rest of the job, as a liveness monitor: every rank keeps a connection open and reports which
// collective it has reached, so that when a collective fails the survivors can name the rank
// that died (its connection closed) or hung (it never reached the collective).
// It carries a few hundred bytes per rank; the collectives themselves never go through it.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace loom {

// Rank 0's side: accepts connections, answers SET / GET (blocking until the key appears) /
// STATUS, tracks the monitor connections.
class KvServer {
 public:
  KvServer(const std::string& addr, int port, int world);  // CommError if the port is taken
  ~KvServer();
  KvServer(const KvServer&) = delete;
  KvServer& operator=(const KvServer&) = delete;

 private:
  void accept_loop();
  void serve(int fd);
  int listen_fd_ = -1;
  int world_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::string> kv_;
  std::vector<int> state_;           // 0 not seen, 1 alive, 2 finished, 3 lost
  std::vector<uint64_t> seq_;        // the collective each rank has reached
  std::vector<int> conns_;
  std::vector<std::thread> threads_;
  std::thread acceptor_;
  std::atomic<bool> stop_{false};
};

// Every rank's side (rank 0 included).
class KvClient {
 public:
  // Connects, retrying until timeout_s; CommError naming addr:port after that.
  KvClient(const std::string& addr, int port, int rank, double timeout_s);
  ~KvClient();
  KvClient(const KvClient&) = delete;
  KvClient& operator=(const KvClient&) = delete;
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
  std::string request(char op, const std::string& key, const std::string& value, double timeout_s);
  std::string addr_, where_;
  int port_, rank_;
  int fd_ = -1, mon_fd_ = -1;
  std::mutex mu_;
  std::thread beat_;
  std::atomic<bool> stop_{false};
};

}  // namespace loom
