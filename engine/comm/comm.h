// comm.h: the communicator seam of the trainer. Data parallelism plugs in here (NCCL, CPU
// collectives); a single process uses SingleComm, whose collectives are identities.
#pragma once
#include <cstdint>
#include <memory>

namespace loom {

class Comm {
 public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int world() const = 0;
  // In-place sum over ranks of n floats in the given backend memory.
  virtual void allreduce_sum(float* data, int64_t n) = 0;
  // Sum of a host scalar over ranks (losses and metrics for logging).
  virtual double allreduce_scalar(double v) = 0;
  virtual void barrier() = 0;
};

class SingleComm final : public Comm {
 public:
  int rank() const override { return 0; }
  int world() const override { return 1; }
  void allreduce_sum(float*, int64_t) override {}
  double allreduce_scalar(double v) override { return v; }
  void barrier() override {}
};

}  // namespace loom
