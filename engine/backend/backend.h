// backend.h: the interface every device implements. One virtual method per op, generated
// from ops.def: a backend that misses an op cannot be instantiated. A backend reads no graph:
// each call brings the op's attributes and tensor views (engine/ops/ops.h). Memory moves through the
// backend so the executor and trainer are the same code for CPU, CUDA and the emulator.
#pragma once
#include <array>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "engine/ops/ops.h"
#include "engine/tensor/tensor.h"
#include "kernels/adamw/adamw.h"

namespace loom {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // The device itself, as its driver names it ("NVIDIA H200"; "cpu" for the CPU).
  virtual std::string device_name() const { return name(); }
  // Float type of activations and parameters in graphs this backend runs.
  virtual DType float_dtype() const = 0;

  // Fails with a UserError (exit 2) naming the size when the device has no room: a run too
  // large for the machine is the user's to resize, not a crash.
  virtual void* alloc(size_t bytes) = 0;
  // Bytes this backend could still allocate (host: MemAvailable; a GPU: cudaMemGetInfo's free).
  virtual uint64_t free_memory() const;
  virtual void release(void* p) = 0;
  virtual void to_device(void* dst, const void* host, size_t bytes) = 0;
  virtual void to_host(void* host, const void* src, size_t bytes) = 0;
  virtual void zero(void* p, size_t bytes) = 0;
  // Device-to-device copy, in stream order (legal inside a captured step).
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  virtual void synchronize() {}

  // Optimizer work on the flat buffers (pointers in this backend's memory). With mixed
  // precision (float_dtype() != F32) the executor reads a low-precision working copy of the
  // f32 master weights: `working`, rewritten by every update (stochastic rounding, `seed`).
  virtual void adamw(const ref::AdamWArgs& a, void* working, uint64_t seed) = 0;
  // Euclidean norm of n floats, reduced in a fixed order (deterministic).
  virtual double norm(const float* g, int64_t n) = 0;
  // Fills the working copy from the master weights (round to nearest). Mixed precision only.
  virtual void to_working(const float* master, void* working, int64_t n) {
    LOOM_CHECK(false, name(), " has no working copy");
  }

  // train.deterministic: kernels whose float sums otherwise depend on block timing (attention's
  // dQ on the GPU) sum in a fixed order, for bit-identical runs. The CPU is deterministic as is.
  virtual void set_deterministic(bool on) {}

  // The device stream ops are queued on (cudaStream_t), for communicators that order their
  // collectives after compute with events; null where there is none.
  virtual void* compute_stream() { return nullptr; }

  // Refuses an op this backend cannot run at its shapes with a one-line UserError that says
  // what to change; the executor asks once per node, when it binds its graph.
  virtual void check_supported(const OpCall&) const {}

  // Whole-step capture (CUDA graphs). A backend without it runs `step` eagerly every time.
  // capture() records `step` (and keeps it: it must stay callable) and runs nothing; replay()
  // runs it, capturing it again first if memory it used has moved since.
  virtual bool can_capture() const { return false; }
  virtual int capture(const std::function<void()>& step) { return -1; }
  virtual void replay(int graph) {}

  // Profiling: named ranges (NVTX on CUDA) and the profiler's capture window.
  virtual void range_push(const char* name) {}
  virtual void range_pop() {}
  virtual void profiler_start() {}
  virtual void profiler_stop() {}

#define LOOM_OP(name, in, out, n_diff) virtual void op_##name(const OpCall& c) = 0;
#include "engine/ops/ops.def"
#undef LOOM_OP

  void run(const OpCall& c) {
    switch (c.op) {
#define LOOM_OP(name, in, out, n_diff) \
  case OpId::name: op_##name(c); break;
#include "engine/ops/ops.def"
#undef LOOM_OP
    }
  }
};

// Memory owned through a backend (RAII). Views never free; this does.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Backend& be, size_t bytes) : be_(&be), bytes_(bytes), p_(bytes ? be.alloc(bytes) : nullptr) {}
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(DeviceBuffer&& o) noexcept { *this = std::move(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      be_ = o.be_, bytes_ = o.bytes_, p_ = o.p_;
      o.p_ = nullptr, o.bytes_ = 0;
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void reset() {
    if (p_) be_->release(p_);
    p_ = nullptr;
    bytes_ = 0;
  }
  void* data() const { return p_; }
  size_t bytes() const { return bytes_; }

 private:
  Backend* be_ = nullptr;
  size_t bytes_ = 0;
  void* p_ = nullptr;
};

// The CPU reference backend, in float (training) or double (gradient checks).
std::unique_ptr<Backend> make_cpu_backend(DType float_dtype = DType::F32);

// Scoped profiling range on a backend (NVTX on CUDA, nothing on CPU).
class Range {
 public:
  Range(Backend& be, const char* name) : be_(be) { be_.range_push(name); }
  ~Range() { be_.range_pop(); }
  Range(const Range&) = delete;
  Range& operator=(const Range&) = delete;

 private:
  Backend& be_;
};

}  // namespace loom
