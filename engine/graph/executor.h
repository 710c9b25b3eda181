// executor.h: runs a planned graph on a backend. Owns the activation arena (one allocation,
// carved by the planner) and the buffers of the graph's inputs; parameters and their
// gradients are the caller's flat buffers, bound once. The executor keeps no state between
// runs beyond those buffers: recurrent state and KV caches are inputs the caller owns.
#pragma once
#include <functional>
#include <vector>

#include "engine/backend/backend.h"
#include "engine/graph/graph.h"
#include "engine/graph/planner.h"

namespace loom {

class Executor {
 public:
  Executor(const Graph& g, Backend& be);
  // Borrows `other`'s arena when it is large enough for this graph's plan (graphs of one model
  // at several shapes, run one at a time: nothing lives in the arena between runs), else owns
  // one. `other` must outlive this executor.
  Executor(const Graph& g, Backend& be, const Executor& other);
  // Flat buffers in the backend's memory: graph.param_count elements each. grads may be null
  // for graphs without backward nodes.
  void bind_params(void* params, void* grads);

  TensorView view(int value) const;
  // Copies host data into an input value (size must match).
  void set_input(int value, const void* host, size_t bytes);
  // Copies a value back to the host.
  void get(int value, void* host, size_t bytes) const;
  template <typename T>
  std::vector<T> fetch(int value) const {
    std::vector<T> r(static_cast<size_t>(numel(g_.values[value].shape)));
    get(value, r.data(), r.size() * sizeof(T));
    return r;
  }

  // Any float value converted to f32 on the host (bf16 activations, f64 gradient checks).
  std::vector<float> fetch_f32(int value) const;

  void forward();   // nodes [0, forward_end)
  void backward();  // nodes [forward_end, end)
  void run() { forward(), backward(); }

  const Plan& plan() const { return plan_; }
  bool borrows_arena() const { return arena_base_ && arena_base_ != arena_.data(); }
  const Graph& graph() const { return g_; }
  Backend& backend() const { return be_; }
  // Called around every node (profiling ranges, per-op timing); may be empty.
  std::function<void(const Node&, bool begin)> on_node;

 private:
  void* own_arena();  // allocates and poisons arena_
  void bind(void* arena);
  void prepare();
  void run_range(size_t b, size_t e);

  const Graph& g_;
  Backend& be_;
  Plan plan_;
  DeviceBuffer arena_;
  void* arena_base_ = nullptr;  // arena_'s, or the one borrowed
  std::vector<DeviceBuffer> inputs_;
  std::vector<void*> ptr_;
  void* params_ = nullptr;
  void* grads_ = nullptr;
  std::vector<OpCall> calls_;
};

}  // namespace loom
