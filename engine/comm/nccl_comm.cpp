// nccl_comm.cpp: GPU ranks on NCCL (real CUDA builds only; engine/CMakeLists.txt adds this file
// to loom_cuda_backend_real when NCCL is found; engine/comm/nccl.h declares its entry points
// weak, so a CPU-only binary simply has no NCCL).
//
// - Device: local rank modulo the visible devices, set before the backend is made.
// - Unique id: rank 0 creates it and publishes it through the rendezvous store
//   (rendezvous.h) at MASTER_ADDR:MASTER_PORT, the same store CPU ranks use.
// - Non-blocking communicator (ncclConfig_t::blocking = 0): init and every collective return
//   at once; a watchdog loop polls the stream and ncclCommGetAsyncError and, past the
//   timeout, calls ncclCommAbort and reports which rank was lost (from the store's monitor).
// - Buckets: each bucket's all-reduce goes on the communicator's own stream behind an event
//   recorded on the compute stream once the bucket's last gradient kernel has been queued, so
//   it overlaps the rest of backward; finish_buckets makes the compute stream wait for the
//   last one. Without an attached compute stream (the backend does not expose it yet) the
//   ordering falls back to a device synchronisation before each bucket.
// - Errors: every NCCL call goes through NCCL_CHECK (nccl_check.h) and every CUDA call through
//   CUDA_TRY_AS(CommError, ...), so a failure is a CommError naming the call. A failure inside
//   a collective (queueing it, or the communicator's asynchronous state while waiting) goes on
//   to `fail`: the communicator is aborted and the store asked which rank was lost.
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <exception>
#include <thread>

#include "engine/comm/comm.h"
#include "engine/comm/nccl.h"
#include "engine/comm/nccl_check.h"
#include "engine/comm/rendezvous.h"

namespace loom {

namespace {

using Clock = std::chrono::steady_clock;

class NcclComm final : public Comm {
 public:
  explicit NcclComm(const DistEnv& env) : rank_(env.rank), world_(env.world) {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0)
      throw CommError("nccl: rank " + std::to_string(rank_) + " sees no CUDA device");
    device_ = env.local_rank % count;
    CUDA_TRY_AS(CommError, cudaSetDevice(device_));
    timeout_s_ = comm_timeout_s();
    const double rdv = rendezvous_timeout_s();
    if (rank_ == 0) server_ = std::make_unique<KvServer>(env.master_addr, env.master_port, world_);
    kv_ = std::make_unique<KvClient>(env.master_addr, env.master_port, rank_, rdv);
    ncclUniqueId id{};  // every byte defined: all of it travels through the store
    if (rank_ == 0) {
      NCCL_CHECK(ncclGetUniqueId(&id));
      kv_->set("nccl/id", std::string(reinterpret_cast<const char*>(&id), sizeof id));
    } else {
      const std::string s = kv_->get("nccl/id", rdv);
      if (s.size() != sizeof id) throw CommError("nccl: malformed unique id from the store at " + kv_->where());
      std::memcpy(&id, s.data(), sizeof id);
    }
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    NCCL_CHECK(ncclCommInitRankConfig(&comm_, world_, id, rank_, &cfg));
    wait_comm("communicator init", rdv);
    CUDA_TRY_AS(CommError, cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    CUDA_TRY_AS(CommError, cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
    CUDA_TRY_AS(CommError, cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
    kv_->start_monitor(&seq_);
  }

  // Results unchecked: a destructor may run while a CommError unwinds, and must not throw.
  ~NcclComm() override {
    if (std::uncaught_exceptions() == 0) kv_->finish();
    if (comm_) {
      if (aborted_ || std::uncaught_exceptions() > 0)
        ncclCommAbort(comm_);
      else
        ncclCommDestroy(comm_);
    }
    if (stream_) cudaStreamDestroy(stream_);
    if (ready_) cudaEventDestroy(ready_);
    if (done_) cudaEventDestroy(done_);
  }

  int rank() const override { return rank_; }
  int world() const override { return world_; }
  std::string name() const override { return "nccl"; }

  // The stream the backend queues compute on (cudaStream_t); enables event ordering.
  void attach_compute_stream(void* s) override { compute_ = static_cast<cudaStream_t>(s); }

  void allreduce_sum(float* data, int64_t n) override {
    after_compute();
    checked("all-reduce", [&] {
      NCCL_CHECK(ncclAllReduce(data, data, static_cast<size_t>(n), ncclFloat, ncclSum, comm_, stream_));
    });
    wait_stream("all-reduce");
  }

  void reduce_scatter_sum(float* data, const std::vector<int64_t>& counts) override {
    // NCCL's reduce-scatter wants equal slices: the trainer's shards differ by at most one
    // element, so run it on the common size and sum the remainders with one small all-reduce.
    after_compute();
    const int64_t lo = *std::min_element(counts.begin(), counts.end());
    int64_t off = 0;
    for (int r = 0; r < rank_; ++r) off += counts[static_cast<size_t>(r)];
    bool equal = true;
    for (int64_t c : counts) equal = equal && c == lo;
    if (equal) {
      // In place: rank r's slice of the input is exactly its output.
      checked("reduce-scatter", [&] {
        NCCL_CHECK(ncclReduceScatter(data, data + off, static_cast<size_t>(lo), ncclFloat, ncclSum, comm_, stream_));
      });
      wait_stream("reduce-scatter");
      return;
    }
    int64_t total = 0;
    for (int64_t c : counts) total += c;
    checked("all-reduce", [&] {
      NCCL_CHECK(ncclAllReduce(data, data, static_cast<size_t>(total), ncclFloat, ncclSum, comm_, stream_));
    });
    wait_stream("all-reduce");
  }

  void allgather(float* data, const std::vector<int64_t>& counts) override {
    after_compute();
    checked("all-gather", [&] {
      int64_t off = 0;
      NCCL_CHECK(ncclGroupStart());
      for (int r = 0; r < world_; ++r) {
        const size_t c = static_cast<size_t>(counts[static_cast<size_t>(r)]);
        NCCL_CHECK(ncclBroadcast(data + off, data + off, c, ncclFloat, r, comm_, stream_));
        off += static_cast<int64_t>(c);
      }
      NCCL_CHECK(ncclGroupEnd());
    });
    wait_stream("all-gather");
  }

  double allreduce_scalar(double v) override {
    if (!scalar_) CUDA_TRY_AS(CommError, cudaMalloc(&scalar_, sizeof(double)));
    CUDA_TRY_AS(CommError, cudaMemcpyAsync(scalar_, &v, sizeof v, cudaMemcpyHostToDevice, stream_));
    checked("all-reduce (scalar)",
            [&] { NCCL_CHECK(ncclAllReduce(scalar_, scalar_, 1, ncclDouble, ncclSum, comm_, stream_)); });
    CUDA_TRY_AS(CommError, cudaMemcpyAsync(&v, scalar_, sizeof v, cudaMemcpyDeviceToHost, stream_));
    wait_stream("all-reduce (scalar)");
    return v;
  }

  void barrier(double timeout_s) override {
    const double keep = timeout_s_;
    if (timeout_s > 0) timeout_s_ = timeout_s;
    allreduce_scalar(0.0);
    timeout_s_ = keep;
  }

  void bucket_ready(float* data, int64_t n) override {
    after_compute();
    checked("bucket all-reduce", [&] {
      NCCL_CHECK(ncclAllReduce(data, data, static_cast<size_t>(n), ncclFloat, ncclSum, comm_, stream_));
    });
    pending_ = true;  // no host wait: overlaps what backward queues next
  }

  void finish_buckets() override {
    if (!pending_) return;
    pending_ = false;
    if (compute_) {
      CUDA_TRY_AS(CommError, cudaEventRecord(done_, stream_));
      CUDA_TRY_AS(CommError, cudaStreamWaitEvent(compute_, done_, 0));
    }
    wait_stream("bucket all-reduce");
  }

 private:
  // Orders the next collective after the compute queued so far.
  void after_compute() {
    if (compute_) {
      CUDA_TRY_AS(CommError, cudaEventRecord(ready_, compute_));
      CUDA_TRY_AS(CommError, cudaStreamWaitEvent(stream_, ready_, 0));
    } else {
      CUDA_TRY_AS(CommError, cudaDeviceSynchronize());
    }
    ++seq_;
  }

  // Runs NCCL calls of the collective `what`; one that fails aborts the communicator and
  // names the lost rank (fail) instead of only naming the call.
  template <typename Calls>
  void checked(const char* what, Calls&& calls) {
    try {
      calls();
    } catch (const CommError& e) {
      fail(what, e.what());
    }
  }

  // The communicator's asynchronous state: ncclSuccess or ncclInProgress; an error there (a
  // lost peer, the network) throws.
  ncclResult_t async_state() {
    ncclResult_t st = ncclInProgress;
    NCCL_CHECK(ncclCommGetAsyncError(comm_, &st));
    nccl_check(st, "ncclCommGetAsyncError");
    return st;
  }

  // Waits for the communicator to leave ncclInProgress (init), within timeout_s.
  void wait_comm(const char* what, double timeout_s) {
    const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
    for (;;) {
      ncclResult_t st = ncclInProgress;
      checked(what, [&] { st = async_state(); });
      if (st == ncclSuccess) return;
      if (Clock::now() > deadline) fail(what, "timed out after " + std::to_string(static_cast<int>(timeout_s)) + " s");
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  // The watchdog: waits for the communicator's stream, watching NCCL's asynchronous errors
  // and the timeout; aborts the communicator on either.
  void wait_stream(const char* what) {
    const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s_);
    for (int spin = 0;; ++spin) {
      const cudaError_t q = cudaStreamQuery(stream_);
      if (q == cudaSuccess) return;
      if (q != cudaErrorNotReady) fail(what, std::string("cudaStreamQuery: ") + cudaGetErrorString(q));
      checked(what, [&] { async_state(); });
      if (Clock::now() > deadline) fail(what, "timed out after " + std::to_string(static_cast<int>(timeout_s_)) + " s");
      if (spin > 1000) std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }

  [[noreturn]] void fail(const char* what, const std::string& why) {
    if (comm_ && !aborted_) {
      // Unblocks the kernels waiting on the lost peer. Unchecked: this report is the error.
      ncclCommAbort(comm_);
      aborted_ = true;
      comm_ = nullptr;
    }
    const std::string who = kv_ ? kv_->diagnose(seq_) : "";
    throw CommError("rank " + std::to_string(rank_) + " (nccl, device " + std::to_string(device_) + "): " + what + " #" +
                    std::to_string(seq_.load()) + " failed: " + (who.empty() ? "" : who + " ") + "[" + why + "]");
  }

  int rank_, world_, device_ = 0;
  double timeout_s_ = 45;
  std::unique_ptr<KvServer> server_;
  std::unique_ptr<KvClient> kv_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr, compute_ = nullptr;
  cudaEvent_t ready_ = nullptr, done_ = nullptr;
  double* scalar_ = nullptr;
  bool pending_ = false, aborted_ = false;
  std::atomic<uint64_t> seq_{0};
};

}  // namespace

std::unique_ptr<Comm> make_nccl_comm(const DistEnv& env) { return std::make_unique<NcclComm>(env); }

int nccl_device_count() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

}  // namespace loom
