// executor.cpp: binds every value to memory once, then runs nodes in order.
#include "engine/graph/executor.h"

#include <vector>

namespace loom {

Executor::Executor(const Graph& g, Backend& be) : g_(g), be_(be), plan_(plan_memory(g)) {
  LOOM_CHECK(g.float_dtype() == be.float_dtype(), "graph is ", dtype_name(g.float_dtype()), ", backend ", be.name(),
             " runs ", dtype_name(be.float_dtype()));
  bind(own_arena());
}

Executor::Executor(const Graph& g, Backend& be, const Executor& other) : g_(g), be_(be), plan_(plan_memory(g)) {
  LOOM_CHECK(g.float_dtype() == be.float_dtype() && &other.be_ == &be, "graph is ", dtype_name(g.float_dtype()),
             ", backend ", be.name(), ": an arena is shared on one backend only");
  bind(plan_.arena_bytes <= other.plan_.arena_bytes ? other.arena_base_ : own_arena());
}

void* Executor::own_arena() {
  arena_ = DeviceBuffer(be_, plan_.arena_bytes);
  // Poison the arena (all-ones bytes are NaN in every float type): a kernel that reads an
  // activation before it is written shows up as NaN in tests, never as a plausible number.
  if (plan_.arena_bytes) {
    std::vector<unsigned char> poison(plan_.arena_bytes, 0xFF);
    be_.to_device(arena_.data(), poison.data(), poison.size());
  }
  return arena_.data();
}

void Executor::bind(void* arena) {
  const Graph& g = g_;
  arena_base_ = arena;
  ptr_.assign(g.values.size(), nullptr);
  inputs_.resize(g.values.size());
  for (size_t v = 0; v < g.values.size(); ++v) {
    const Value& val = g.values[v];
    if (val.kind == ValueKind::Input) {
      inputs_[v] = DeviceBuffer(be_, val.bytes());
      be_.zero(inputs_[v].data(), val.bytes());
      ptr_[v] = inputs_[v].data();
    } else if (val.kind == ValueKind::Activation && plan_.offset[v] != Plan::kNone) {
      ptr_[v] = static_cast<char*>(arena) + plan_.offset[v];
    }
  }
}

void Executor::bind_params(void* params, void* grads) {
  params_ = params;
  grads_ = grads;
  const size_t ps = dtype_size(g_.float_dtype()), gs = dtype_size(g_.grad_dtype());
  for (size_t v = 0; v < g_.values.size(); ++v) {
    const Value& val = g_.values[v];
    if (val.kind == ValueKind::Param)
      ptr_[v] = static_cast<char*>(params) + g_.params[val.param].offset * ps;
    else if (val.kind == ValueKind::ParamGrad)
      ptr_[v] = grads ? static_cast<char*>(grads) + g_.params[val.param].offset * gs : nullptr;
  }
  prepare();
}

void Executor::prepare() {
  calls_.clear();
  for (size_t k = 0; k < g_.nodes.size(); ++k) {
    const Node& n = g_.nodes[k];
    OpCall c;
    c.op = n.op;
    c.attrs = n.attrs;
    for (size_t i = 0; i < n.in.size(); ++i)
      if (n.in[i] >= 0) c.in[i] = view(n.in[i]);
    for (size_t i = 0; i < n.out.size(); ++i)
      if (n.out[i] >= 0) c.out[i] = view(n.out[i]);
    for (size_t i = 0; i < n.in.size(); ++i)
      LOOM_CHECK(n.in[i] < 0 || c.in[i].data, "unbound ", describe_slot(g_, k, true, static_cast<int>(i)));
    for (size_t i = 0; i < n.out.size(); ++i)
      LOOM_CHECK(n.out[i] < 0 || c.out[i].data, "unbound ", describe_slot(g_, k, false, static_cast<int>(i)));
    be_.check_supported(c);
    calls_.push_back(c);
  }
}

TensorView Executor::view(int v) const {
  const Value& val = g_.values[v];
  return TensorView{ptr_[v], val.shape, val.dtype};
}

void Executor::set_input(int v, const void* host, size_t bytes) {
  LOOM_CHECK(g_.values[v].kind == ValueKind::Input, g_.values[v].name, " is not an input");
  LOOM_CHECK(bytes == g_.values[v].bytes(), "input ", g_.values[v].name, ": ", bytes, " bytes, expected ",
             g_.values[v].bytes());
  be_.to_device(ptr_[v], host, bytes);
}

void Executor::get(int v, void* host, size_t bytes) const {
  LOOM_CHECK(ptr_[v], "value ", g_.values[v].name, " has no memory (not live at the end?)");
  LOOM_CHECK(bytes == g_.values[v].bytes());
  be_.to_host(host, ptr_[v], bytes);
}

std::vector<float> Executor::fetch_f32(int v) const {
  const Value& val = g_.values[v];
  const size_t n = static_cast<size_t>(numel(val.shape));
  std::vector<float> r(n);
  switch (val.dtype) {
    case DType::F32: get(v, r.data(), n * 4); break;
    case DType::F64: {
      std::vector<double> d(n);
      get(v, d.data(), n * 8);
      for (size_t i = 0; i < n; ++i) r[i] = static_cast<float>(d[i]);
      break;
    }
    case DType::BF16: {
      std::vector<bf16> b(n);
      get(v, b.data(), n * 2);
      for (size_t i = 0; i < n; ++i) r[i] = from_bf16(b[i]);
      break;
    }
    case DType::I32: LOOM_CHECK(false, "fetch_f32 of an integer value ", val.name);
  }
  return r;
}

void Executor::run_range(size_t b, size_t e) {
  LOOM_CHECK(calls_.size() == g_.nodes.size(), "bind_params() before running");
  for (size_t i = b; i < e; ++i) {
    if (on_node) on_node(g_.nodes[i], true);
    be_.run(calls_[i]);
    if (on_node) on_node(g_.nodes[i], false);
  }
}

void Executor::forward() { run_range(0, g_.forward_end ? g_.forward_end : g_.nodes.size()); }
void Executor::backward() {
  if (g_.forward_end) run_range(g_.forward_end, g_.nodes.size());
}

}  // namespace loom
