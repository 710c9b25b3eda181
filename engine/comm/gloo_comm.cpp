// gloo_comm.cpp: CPU ranks on Gloo (Debian's libgloo-dev) over TCP. Gloo brings the
// collectives (ring all-reduce, reduce, all-gather, barrier) with per-operation timeouts and
// rendezvous through any key-value Store: ours is rendezvous.h's TCP store at
// MASTER_ADDR:MASTER_PORT, so `loom launch`, torchrun, srun and mpirun all start ranks the same
// way and no MPI launcher is needed. docs/distributed.md compares this with OpenMPI.
#include <gloo/allgatherv.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/math.h>
#include <gloo/reduce.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <exception>

#include "engine/comm/comm.h"
#include "engine/comm/rendezvous.h"

namespace loom {

namespace {

// A rank's full-mesh key (its number, "R") holds one tcp::Address per peer, each the 128
// bytes of a sockaddr_storage and an 8-byte sequence number. Gloo fills the sockaddr_storage
// with getsockname() over an uninitialised stack buffer, so past the address proper it carries
// whatever the stack held (pointers into the stack and the code). Those bytes would be
// published to the store; they are zeroed here. connect() reads only the family's length.
constexpr size_t kGlooAddressBytes = sizeof(sockaddr_storage) + sizeof(ssize_t);
static_assert(sizeof(sockaddr_storage) == 128);

void zero_address_padding(std::vector<char>& data) {
  if (data.size() % kGlooAddressBytes != 0) return;
  for (size_t at = 0; at < data.size(); at += kGlooAddressBytes) {
    sa_family_t family = 0;
    std::memcpy(&family, data.data() + at, sizeof family);
    // sockaddr_in's own sin_zero is padding too: keep family, port and address (8 bytes).
    const size_t used = family == AF_INET ? offsetof(sockaddr_in, sin_zero)
                        : family == AF_INET6 ? sizeof(sockaddr_in6)
                                             : sizeof(sockaddr_storage);
    std::memset(data.data() + at + used, 0, sizeof(sockaddr_storage) - used);
  }
}

// Gloo's rendezvous keys go through our store under a prefix.
class StoreAdapter final : public gloo::rendezvous::Store {
 public:
  StoreAdapter(KvClient& kv, double timeout_s) : kv_(kv), timeout_s_(timeout_s) {}
  void set(const std::string& key, const std::vector<char>& data) override {
    std::vector<char> clean = data;
    if (!key.empty() && key.find_first_not_of("0123456789") == std::string::npos) zero_address_padding(clean);
    kv_.set("gloo/" + key, std::string(clean.begin(), clean.end()));
  }
  std::vector<char> get(const std::string& key) override {
    const std::string v = kv_.get("gloo/" + key, timeout_s_);
    return {v.begin(), v.end()};
  }
  void wait(const std::vector<std::string>& keys) override { wait(keys, std::chrono::milliseconds(0)); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override {
    const double t = timeout.count() > 0 ? timeout.count() / 1000.0 : timeout_s_;
    for (const auto& k : keys) kv_.get("gloo/" + k, t);
  }

 private:
  KvClient& kv_;
  double timeout_s_;
};

using ReduceFn = void (*)(void*, const void*, const void*, size_t);

class GlooComm final : public Comm {
 public:
  GlooComm(int rank, int world, const std::string& addr, int port) : rank_(rank), world_(world) {
    const double rdv = rendezvous_timeout_s();
    timeout_ = std::chrono::milliseconds(static_cast<int64_t>(comm_timeout_s() * 1000));
    if (rank == 0) server_ = std::make_unique<KvServer>(addr, port, world);
    kv_ = std::make_unique<KvClient>(addr, port, rank, rdv);
    // The address the other ranks reach this one at: loopback for a single-node job, else
    // the interface named by LOOM_GLOO_IFACE, else this host's name.
    gloo::transport::tcp::attr attr;
    const char* iface = std::getenv("LOOM_GLOO_IFACE");
    if (iface && *iface) {
      attr.iface = iface;
    } else if (addr == "localhost" || addr.rfind("127.", 0) == 0) {
      attr.hostname = "127.0.0.1";
    } else {
      char host[256] = {};
      ::gethostname(host, sizeof host - 1);
      attr.hostname = host;
    }
    try {
      device_ = gloo::transport::tcp::CreateDevice(attr);
      auto ctx = std::make_shared<gloo::rendezvous::Context>(rank, world);
      ctx->setTimeout(std::chrono::milliseconds(static_cast<int64_t>(rdv * 1000)));
      StoreAdapter store(*kv_, rdv);
      ctx->connectFullMesh(store, device_);
      ctx->setTimeout(timeout_);
      ctx_ = ctx;
    } catch (const gloo::Exception& e) {
      throw CommError("rendezvous at " + kv_->where() + ": rank " + std::to_string(rank) +
                      " could not connect to its peers: " + e.what());
    }
    kv_->start_monitor(&seq_);
  }

  ~GlooComm() override {
    // A clean exit says goodbye; an exit by exception leaves the others to report this rank lost.
    if (std::uncaught_exceptions() == 0) kv_->finish();
    ctx_.reset();
  }

  int rank() const override { return rank_; }
  int world() const override { return world_; }
  std::string name() const override { return "gloo"; }

  void allreduce_sum(float* data, int64_t n) override {
    if (n == 0) return;
    run("all-reduce", [&] {
      gloo::AllreduceOptions o(ctx_);
      o.setOutput(data, static_cast<size_t>(n));
      o.setReduceFunction(static_cast<ReduceFn>(&gloo::sum<float>));
      gloo::allreduce(o);
    });
  }

  double allreduce_scalar(double v) override {
    run("all-reduce (scalar)", [&] {
      gloo::AllreduceOptions o(ctx_);
      o.setOutput(&v, 1);
      o.setReduceFunction(static_cast<ReduceFn>(&gloo::sum<double>));
      gloo::allreduce(o);
    });
    return v;
  }

  // A reduce to each slice's owner in turn: Gloo's reduce pipelines segments around the ring,
  // so the bytes moved match a reduce-scatter's.
  void reduce_scatter_sum(float* data, const std::vector<int64_t>& counts) override {
    check_counts(counts);
    int64_t off = 0;
    for (int r = 0; r < world_; ++r) {
      const int64_t c = counts[static_cast<size_t>(r)];
      if (c > 0) {
        scratch_.resize(static_cast<size_t>(c));
        run("reduce-scatter", [&] {
          gloo::ReduceOptions o(ctx_);
          o.setInput(data + off, static_cast<size_t>(c));
          o.setOutput(scratch_.data(), static_cast<size_t>(c));
          o.setRoot(r);
          o.setReduceFunction(static_cast<ReduceFn>(&gloo::sum<float>));
          gloo::reduce(o);
        });
        if (r == rank_) std::memcpy(data + off, scratch_.data(), static_cast<size_t>(c) * 4);
      }
      off += c;
    }
  }

  void allgather(float* data, const std::vector<int64_t>& counts) override {
    check_counts(counts);
    int64_t off = 0;
    for (int r = 0; r < rank_; ++r) off += counts[static_cast<size_t>(r)];
    const int64_t mine = counts[static_cast<size_t>(rank_)];
    scratch_.assign(data + off, data + off + mine);  // the input must not alias the output
    std::vector<size_t> elems(counts.begin(), counts.end());
    run("all-gather", [&] {
      gloo::AllgathervOptions o(ctx_);
      o.setInput(scratch_.data(), static_cast<size_t>(mine));
      o.setOutput(data, elems);
      gloo::allgatherv(o);
    });
  }

  void barrier(double timeout_s) override {
    run("barrier", [&] {
      gloo::BarrierOptions o(ctx_);
      if (timeout_s > 0) o.setTimeout(std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
      gloo::barrier(o);
    });
  }

 private:
  void check_counts(const std::vector<int64_t>& counts) const {
    if (static_cast<int>(counts.size()) != world_)
      throw CommError("collective: " + std::to_string(counts.size()) + " counts for " + std::to_string(world_) + " ranks");
  }

  // Runs one collective; a Gloo failure becomes a CommError that says which rank was lost.
  template <class F>
  void run(const char* what, F&& f) {
    const uint64_t seq = ++seq_;
    try {
      f();
    } catch (const gloo::Exception& e) {
      const std::string why = kv_->diagnose(seq);
      throw CommError("rank " + std::to_string(rank_) + ": " + what + " #" + std::to_string(seq) + " failed: " + why +
                      " [gloo: " + e.what() + "]");
    }
  }

  int rank_, world_;
  std::chrono::milliseconds timeout_{};
  std::unique_ptr<KvServer> server_;
  std::unique_ptr<KvClient> kv_;
  std::shared_ptr<gloo::transport::Device> device_;
  std::shared_ptr<gloo::Context> ctx_;
  std::atomic<uint64_t> seq_{0};
  std::vector<float> scratch_;
};

}  // namespace

std::unique_ptr<Comm> make_gloo_comm(int rank, int world, const std::string& addr, int port) {
  return std::make_unique<GlooComm>(rank, world, addr, port);
}

}  // namespace loom
