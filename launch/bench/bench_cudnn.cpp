// bench_cudnn.cpp: cuDNN baselines for `loom bench kernels` (see bench_cudnn.h).
//
// Attention is the fused flash-attention pattern of cuDNN's runtime fusion engines, expressed
// with backend descriptors the way cudnn-frontend's SDPA nodes lower it (no dropout, no bias):
//
//   forward   S = Q·Kᵀ (f32) → ·scale → causal mask (GEN_INDEX row/col, CMP_GE, BINARY_SELECT with
//             the lowest float) → softmax: m = max_row, e = exp(S - m), z = sum_row(e),
//             Stats = m + log z (output, f32), P = e / z (bf16) → O = P·V
//   backward  softmax_sum = sum_row(dO ∘ O)·1 (f32, a real buffer);
//             P = exp(mask(Q·Kᵀ·scale - Stats)); dV = Pᵀ·dO (Pᵀ by a reshape with swapped strides);
//             dP = dO·Vᵀ; dS = (dP·1 - softmax_sum) ∘ P · scale; dK = dSᵀ·Q;
//             dQ_accum = dS·K (f32, a real buffer), dQ = identity(dQ_accum)
//
// Q, K, V, dQ, dK, dV point into loom's packed [B, T, 3C] buffers with strides (head h at
// column h*D of its third; Kᵀ and Vᵀ are the same memory with the last two strides swapped); O and
// dO are [B, T, C]. Engines come from heuristics mode A: the first engine config whose execution
// plan finalizes is used (then the fallback mode's configs, then every engine of the graph).
#include "launch/bench/bench_cudnn.h"

#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/rng.h"
#include "kernels/common/cuda_check.h"

#if CUDNN_MAJOR < 9
#error "bench_cudnn.cpp needs cuDNN 9 headers (cudnn_graph.h, the v8 RNN API)"
#endif

namespace loom::cudnn_bench {
namespace {

// Every cuDNN and CUDA call here is checked with CUDNN_TRY / CUDA_TRY (kernels/common/
// cuda_check.h): a failure throws LibraryError, which the entry points below catch, so that a
// baseline that cannot run reads "n/a (why)" and the bench goes on.

struct Handle {
  cudnnHandle_t h = nullptr;
  explicit Handle(cudaStream_t s) {
    CUDNN_TRY(cudnnCreate(&h));
    CUDNN_TRY(cudnnSetStream(h, s));
  }
  ~Handle() {
    if (h) cudnnDestroy(h);
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
};

// Device allocations, freed together.
struct Pool {
  std::vector<void*> ptrs;
  Pool() = default;
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
  ~Pool() {
    for (void* p : ptrs) cudaFree(p);
  }
  void* alloc(size_t bytes) {
    if (bytes == 0) return nullptr;
    void* p = nullptr;
    CUDA_TRY(cudaMalloc(&p, bytes));
    ptrs.push_back(p);
    return p;
  }
};

struct Event {
  cudaEvent_t e = nullptr;
  Event() { CUDA_TRY(cudaEventCreate(&e)); }
  ~Event() {
    if (e) cudaEventDestroy(e);
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
};

// Median milliseconds of `fn` over `reps` timed runs after `warm` untimed ones (as bench_kernels).
double time_ms(cudaStream_t s, int warm, int reps, const std::function<void()>& fn) {
  for (int i = 0; i < warm; ++i) fn();
  Event a, b;
  std::vector<float> ms;
  for (int i = 0; i < std::max(reps, 1); ++i) {
    CUDA_TRY(cudaEventRecord(a.e, s));
    fn();
    CUDA_TRY(cudaEventRecord(b.e, s));
    CUDA_TRY(cudaEventSynchronize(b.e));
    float t = 0;
    CUDA_TRY(cudaEventElapsedTime(&t, a.e, b.e));
    ms.push_back(t);
  }
  CUDA_TRY(cudaGetLastError());
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// ---- backend graph ---------------------------------------------------------------------------

using Dims = std::array<int64_t, 4>;
using Desc = cudnnBackendDescriptor_t;

// One operation graph and its execution plan; owns every descriptor it made.
class Graph {
 public:
  Graph(cudnnHandle_t h, std::string name) : h_(h), name_(std::move(name)) {}
  ~Graph() {
    for (auto it = owned_.rbegin(); it != owned_.rend(); ++it) cudnnBackendDestroyDescriptor(*it);
  }
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  // A tensor the variant pack binds to memory (or, by value, to a host scalar).
  Desc tensor(int64_t uid, cudnnDataType_t dt, const Dims& dim, const Dims& stride, bool by_value = false) {
    return make_tensor(uid, dt, dim, stride, false, by_value);
  }
  // A float scalar passed by value (attention scale, mask fill, 1).
  Desc scalar(int64_t uid) { return make_tensor(uid, CUDNN_DATA_FLOAT, {1, 1, 1, 1}, {1, 1, 1, 1}, false, true); }
  // An intermediate that never reaches memory.
  Desc virt(cudnnDataType_t dt, const Dims& dim, const Dims& stride) {
    return make_tensor(next_virtual_uid_++, dt, dim, stride, true, false);
  }

  void pointwise(cudnnPointwiseMode_t mode, cudnnDataType_t prec, Desc x, Desc y, Desc b = nullptr, Desc t = nullptr,
                 int64_t axis = -1) {
    Desc pw = make(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    set(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode);
    set(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &prec);
    if (axis >= 0) set(pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis);
    finalize(pw, "pointwise descriptor (mode " + std::to_string(int(mode)) + ")");
    Desc op = make(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
    set(op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pw);
    set(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
    if (b) set(op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b);
    if (t) set(op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &t);
    set(op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y);
    finalize(op, "pointwise operation (mode " + std::to_string(int(mode)) + ")");
    ops_.push_back(op);
  }
  void matmul(Desc a, Desc b, Desc c) {
    Desc mm = make(CUDNN_BACKEND_MATMUL_DESCRIPTOR);
    const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    set(mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp);
    finalize(mm, "matmul descriptor");
    Desc op = make(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
    set(op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &a);
    set(op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b);
    set(op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c);
    set(op, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &mm);
    finalize(op, "matmul operation");
    ops_.push_back(op);
  }
  void reduction(cudnnReduceTensorOp_t red, Desc x, Desc y) {
    Desc rd = make(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
    const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    set(rd, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &red);
    set(rd, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp);
    finalize(rd, "reduction descriptor");
    Desc op = make(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
    set(op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
    set(op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y);
    set(op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &rd);
    finalize(op, "reduction operation");
    ops_.push_back(op);
  }
  // y views x with other dims/strides (here: a transpose of the last two dims) and type.
  void reshape(Desc x, Desc y) {
    Desc op = make(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR);
    set(op, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x);
    set(op, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y);
    finalize(op, "reshape operation");
    ops_.push_back(op);
  }

  // Operation graph -> heuristics (mode A, then the fallback mode) -> the first engine config
  // whose execution plan finalizes; failing all, each engine of the graph with default knobs.
  void build() {
    graph_ = make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    set(graph_, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, int64_t(ops_.size()), ops_.data());
    set(graph_, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &h_);
    finalize(graph_, "operation graph (" + std::to_string(ops_.size()) + " ops)");
    std::string tried;
    for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
      const char* mode_name = mode == CUDNN_HEUR_MODE_A ? "heuristics A" : "fallback heuristics";
      Desc heur = make(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
      set(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph_);
      set(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
      try {
        CUDNN_TRY_NAMED(std::string(mode_name) + " finalize", cudnnBackendFinalize(heur));
      } catch (const LibraryError& e) {
        tried += std::string(tried.empty() ? "" : "; ") + e.what();
        continue;
      }
      int64_t n = 0;
      CUDNN_TRY(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &n, nullptr));
      if (n <= 0) {
        tried += std::string(tried.empty() ? "" : "; ") + mode_name + ": no engine configs";
        continue;
      }
      std::vector<Desc> cfgs(static_cast<size_t>(n));
      for (auto& c : cfgs) c = make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
      int64_t got = 0;
      CUDNN_TRY(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, n, &got,
                                   cfgs.data()));
      for (int64_t i = 0; i < got; ++i)
        if (try_plan(cfgs[size_t(i)], std::string(mode_name) + " config " + std::to_string(i), tried)) return;
    }
    // Last resort: every engine of the graph with its default knobs.
    int64_t cnt = 0, engines = 0;
    CUDNN_TRY(cudnnBackendGetAttribute(graph_, CUDNN_ATTR_OPERATIONGRAPH_ENGINE_GLOBAL_COUNT, CUDNN_TYPE_INT64, 1, &cnt,
                                 &engines));
    for (int64_t gi = 0; gi < engines; ++gi) {
      Desc eng = make(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
      set(eng, CUDNN_ATTR_ENGINE_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph_);
      set(eng, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &gi);
      if (cudnnBackendFinalize(eng) != CUDNN_STATUS_SUCCESS) continue;
      Desc cfg = make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
      set(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &eng);
      if (cudnnBackendFinalize(cfg) != CUDNN_STATUS_SUCCESS) continue;
      if (try_plan(cfg, "engine " + std::to_string(gi), tried)) return;
    }
    throw LibraryError("no engine for the " + name_ + " graph (" + tried + ")");
  }
  size_t workspace_bytes() const { return workspace_; }
  int64_t engine() const { return engine_; }

  // Binds uids to pointers (device memory, or host scalars for by-value tensors).
  void bind(const std::vector<std::pair<int64_t, void*>>& pack, void* workspace) {
    std::vector<int64_t> uids;
    std::vector<void*> ptrs;
    for (const auto& [uid, p] : pack) {
      uids.push_back(uid);
      ptrs.push_back(p);
    }
    varpack_ = make(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
    set(varpack_, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, int64_t(uids.size()), uids.data());
    set(varpack_, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, int64_t(ptrs.size()), ptrs.data());
    set(varpack_, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace);
    finalize(varpack_, "variant pack");
  }
  void execute() {
    CUDNN_TRY_NAMED("cudnnBackendExecute(" + name_ + ")", cudnnBackendExecute(h_, plan_, varpack_));
  }

 private:
  // Finalizes an execution plan for `cfg`; on success it becomes the graph's plan.
  bool try_plan(Desc cfg, const std::string& label, std::string& tried) {
    Desc plan = make(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
    set(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &h_);
    set(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfg);
    try {
      CUDNN_TRY_NAMED("plan", cudnnBackendFinalize(plan));
    } catch (const LibraryError& e) {
      if (tried.size() < 600) tried += std::string(tried.empty() ? "" : "; ") + label + ": " + e.what();
      return false;
    }
    plan_ = plan;
    engine_ = engine_index(cfg);
    int64_t cnt = 0, ws = 0;
    CUDNN_TRY(cudnnBackendGetAttribute(plan_, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &cnt, &ws));
    workspace_ = ws > 0 ? size_t(ws) : 0;
    return true;
  }
  Desc make(cudnnBackendDescriptorType_t t) {
    Desc d = nullptr;
    CUDNN_TRY_NAMED(name_ + ": cudnnBackendCreateDescriptor(type " + std::to_string(int(t)) + ")",
                    cudnnBackendCreateDescriptor(t, &d));
    owned_.push_back(d);
    return d;
  }
  void set(Desc d, cudnnBackendAttributeName_t a, cudnnBackendAttributeType_t t, int64_t n, const void* v) {
    CUDNN_TRY_NAMED(name_ + ": cudnnBackendSetAttribute(attribute " + std::to_string(int(a)) + ")",
                    cudnnBackendSetAttribute(d, a, t, n, v));
  }
  void finalize(Desc d, const std::string& what) {
    CUDNN_TRY_NAMED(name_ + ": finalize " + what, cudnnBackendFinalize(d));
  }
  Desc make_tensor(int64_t uid, cudnnDataType_t dt, const Dims& dim, const Dims& stride, bool is_virtual,
                   bool by_value) {
    Desc d = make(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    const int64_t align = 16;
    const bool v = is_virtual, bv = by_value;
    set(d, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt);
    set(d, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dim.data());
    set(d, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, stride.data());
    set(d, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
    set(d, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &align);
    set(d, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &v);
    if (by_value) set(d, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &bv);
    finalize(d, "tensor " + std::to_string(uid));
    return d;
  }
  // The engine's global index, for the report; -1 where cuDNN will not say.
  int64_t engine_index(Desc cfg) {
    Desc eng = make(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
    int64_t cnt = 0, idx = -1;
    if (cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cnt, &eng) !=
        CUDNN_STATUS_SUCCESS)
      return -1;
    if (cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &cnt, &idx) !=
        CUDNN_STATUS_SUCCESS)
      return -1;
    return idx;
  }

  cudnnHandle_t h_;
  std::string name_;
  std::vector<Desc> owned_, ops_;
  Desc graph_ = nullptr, plan_ = nullptr, varpack_ = nullptr;
  int64_t next_virtual_uid_ = 1000;
  int64_t engine_ = -1;
  size_t workspace_ = 0;
};

// The causal mask of both graphs: keep score (row q, column k) where q >= k, else the lowest float.
Desc causal_mask(Graph& g, Desc s, Desc fill, const Dims& dim, const Dims& stride) {
  Desc row = g.virt(CUDNN_DATA_INT32, dim, stride);
  Desc col = g.virt(CUDNN_DATA_INT32, dim, stride);
  Desc keep = g.virt(CUDNN_DATA_BOOLEAN, dim, stride);
  Desc out = g.virt(CUDNN_DATA_FLOAT, dim, stride);
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, s, row, nullptr, nullptr, 2);
  g.pointwise(CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, s, col, nullptr, nullptr, 3);
  g.pointwise(CUDNN_POINTWISE_CMP_GE, CUDNN_DATA_BOOLEAN, row, keep, col);
  g.pointwise(CUDNN_POINTWISE_BINARY_SELECT, CUDNN_DATA_FLOAT, s, out, fill, keep);
  return out;
}

// Tensor uids the variant packs bind (virtual tensors count from 1000).
enum : int64_t {
  kQ = 1, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV, kScale, kFill, kOne, kSoftmaxSum, kDQAccum
};

// Shapes and strides of the attention graphs' tensors.
struct AttnLayout {
  Dims qkv_dim, qkv_str;  // Q, K, V and dQ, dK, dV in the packed [B, T, 3C] buffers
  Dims t_dim, t_str;      // Kᵀ, Vᵀ: the same memory, last two dims swapped
  Dims o_dim, o_str;      // O, dO: [B, T, C]
  Dims r_dim, r_str;      // per row: Stats, max, sums [B, H, T, 1]
  Dims s_dim, s_str;      // scores [B, H, T, T] (virtual)
  Dims st_str;            // scores transposed (the reshape before dV and dK)
  Dims acc_str;           // dQ_accum, packed f32 [B, H, T, D]
};
AttnLayout attn_layout(int64_t B, int64_t T, int64_t C, int64_t H) {
  const int64_t D = C / H, C3 = 3 * C;
  AttnLayout a;
  a.qkv_dim = {B, H, T, D}, a.qkv_str = {T * C3, D, C3, 1};
  a.t_dim = {B, H, D, T}, a.t_str = {T * C3, D, 1, C3};
  a.o_dim = {B, H, T, D}, a.o_str = {T * C, D, C, 1};
  a.r_dim = {B, H, T, 1}, a.r_str = {H * T, T, 1, 1};
  a.s_dim = {B, H, T, T}, a.s_str = {H * T * T, T * T, T, 1};
  a.st_str = {H * T * T, T * T, 1, T};
  a.acc_str = {H * T * D, T * D, D, 1};
  return a;
}

// The forward graph's tensors and operations (uids kQ, kK, kV, kO, kStats, kScale, kFill).
void forward_ops(Graph& g, const AttnLayout& a) {
  Desc Q = g.tensor(kQ, CUDNN_DATA_BFLOAT16, a.qkv_dim, a.qkv_str);
  Desc KT = g.tensor(kK, CUDNN_DATA_BFLOAT16, a.t_dim, a.t_str);
  Desc V = g.tensor(kV, CUDNN_DATA_BFLOAT16, a.qkv_dim, a.qkv_str);
  Desc O = g.tensor(kO, CUDNN_DATA_BFLOAT16, a.o_dim, a.o_str);
  Desc Stats = g.tensor(kStats, CUDNN_DATA_FLOAT, a.r_dim, a.r_str);
  Desc Scale = g.scalar(kScale), Fill = g.scalar(kFill);
  Desc S = g.virt(CUDNN_DATA_FLOAT, a.s_dim, a.s_str);
  g.matmul(Q, KT, S);
  Desc Ss = g.virt(CUDNN_DATA_FLOAT, a.s_dim, a.s_str);
  g.pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, S, Ss, Scale);
  Desc Sm = causal_mask(g, Ss, Fill, a.s_dim, a.s_str);
  Desc Mx = g.virt(CUDNN_DATA_FLOAT, a.r_dim, a.r_str);
  g.reduction(CUDNN_REDUCE_TENSOR_MAX, Sm, Mx);
  Desc Sub = g.virt(CUDNN_DATA_FLOAT, a.s_dim, a.s_str);
  g.pointwise(CUDNN_POINTWISE_SUB, CUDNN_DATA_FLOAT, Sm, Sub, Mx);
  Desc E = g.virt(CUDNN_DATA_FLOAT, a.s_dim, a.s_str);
  g.pointwise(CUDNN_POINTWISE_EXP, CUDNN_DATA_FLOAT, Sub, E);
  Desc Z = g.virt(CUDNN_DATA_FLOAT, a.r_dim, a.r_str);
  g.reduction(CUDNN_REDUCE_TENSOR_ADD, E, Z);
  Desc LogZ = g.virt(CUDNN_DATA_FLOAT, a.r_dim, a.r_str);
  g.pointwise(CUDNN_POINTWISE_LOG, CUDNN_DATA_FLOAT, Z, LogZ);
  g.pointwise(CUDNN_POINTWISE_ADD, CUDNN_DATA_FLOAT, Mx, Stats, LogZ);
  Desc P = g.virt(CUDNN_DATA_BFLOAT16, a.s_dim, a.s_str);  // the second matmul takes P in the i/o type
  g.pointwise(CUDNN_POINTWISE_DIV, CUDNN_DATA_FLOAT, E, P, Z);
  g.matmul(P, V, O);
}

// The backward graph's tensors and operations (uids kQ, kK, kV, kO, kDO, kStats, kDQ, kDK, kDV,
// kSoftmaxSum, kDQAccum, kScale, kFill, kOne).
void backward_ops(Graph& g, const AttnLayout& a) {
  Desc Q = g.tensor(kQ, CUDNN_DATA_BFLOAT16, a.qkv_dim, a.qkv_str);
  Desc KT = g.tensor(kK, CUDNN_DATA_BFLOAT16, a.t_dim, a.t_str);
  Desc VT = g.tensor(kV, CUDNN_DATA_BFLOAT16, a.t_dim, a.t_str);
  Desc O = g.tensor(kO, CUDNN_DATA_BFLOAT16, a.o_dim, a.o_str);
  Desc dO = g.tensor(kDO, CUDNN_DATA_BFLOAT16, a.o_dim, a.o_str);
  Desc Stats = g.tensor(kStats, CUDNN_DATA_FLOAT, a.r_dim, a.r_str);
  Desc dQ = g.tensor(kDQ, CUDNN_DATA_BFLOAT16, a.qkv_dim, a.qkv_str);
  Desc dK = g.tensor(kDK, CUDNN_DATA_BFLOAT16, a.qkv_dim, a.qkv_str);
  Desc dV = g.tensor(kDV, CUDNN_DATA_BFLOAT16, a.qkv_dim, a.qkv_str);
  Desc SoftmaxSum = g.tensor(kSoftmaxSum, CUDNN_DATA_FLOAT, a.r_dim, a.r_str);
  Desc dQacc = g.tensor(kDQAccum, CUDNN_DATA_FLOAT, a.qkv_dim, a.acc_str);
  Desc Scale = g.scalar(kScale), Fill = g.scalar(kFill), One = g.scalar(kOne);
  // softmax_sum = rowsum(dO ∘ O)
  Desc dOO = g.virt(CUDNN_DATA_FLOAT, a.o_dim, a.o_str);
  g.pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, dO, dOO, O);
  Desc Red = g.virt(CUDNN_DATA_FLOAT, a.r_dim, a.r_str);
  g.reduction(CUDNN_REDUCE_TENSOR_ADD, dOO, Red);
  g.pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, Red, SoftmaxSum, One);
  // P = exp(mask(Q·Kᵀ·scale - Stats)); dV = Pᵀ·dO
  Desc S = g.virt(CUDNN_DATA_FLOAT, a.s_dim, a.s_str);
  g.matmul(Q, KT, S);
  Desc Ss = g.virt(CUDNN_DATA_FLOAT, a.s_dim, a.s_str);
  g.pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, S, Ss, Scale);
  Desc Sub = g.virt(CUDNN_DATA_FLOAT, a.s_dim, a.s_str);
  g.pointwise(CUDNN_POINTWISE_SUB, CUDNN_DATA_FLOAT, Ss, Sub, Stats);
  Desc Sm = causal_mask(g, Sub, Fill, a.s_dim, a.s_str);
  Desc P = g.virt(CUDNN_DATA_FLOAT, a.s_dim, a.s_str);
  g.pointwise(CUDNN_POINTWISE_EXP, CUDNN_DATA_FLOAT, Sm, P);
  Desc PT = g.virt(CUDNN_DATA_BFLOAT16, a.s_dim, a.st_str);
  g.reshape(P, PT);
  g.matmul(PT, dO, dV);
  // dS = (dO·Vᵀ·1 - softmax_sum) ∘ P · scale; dK = dSᵀ·Q
  Desc dP = g.virt(CUDNN_DATA_FLOAT, a.s_dim, a.s_str);
  g.matmul(dO, VT, dP);
  Desc dP1 = g.virt(CUDNN_DATA_FLOAT, a.s_dim, a.s_str);
  g.pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, dP, dP1, One);
  Desc dP2 = g.virt(CUDNN_DATA_FLOAT, a.s_dim, a.s_str);
  g.pointwise(CUDNN_POINTWISE_SUB, CUDNN_DATA_FLOAT, dP1, dP2, SoftmaxSum);
  Desc dP3 = g.virt(CUDNN_DATA_FLOAT, a.s_dim, a.s_str);
  g.pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, dP2, dP3, P);
  Desc dS = g.virt(CUDNN_DATA_FLOAT, a.s_dim, a.s_str);
  g.pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, dP3, dS, Scale);
  Desc dST = g.virt(CUDNN_DATA_BFLOAT16, a.s_dim, a.st_str);
  g.reshape(dS, dST);
  g.matmul(dST, Q, dK);
  // dQ = dS·K through an f32 accumulator
  Desc K = g.virt(CUDNN_DATA_BFLOAT16, a.qkv_dim, a.qkv_str);
  g.reshape(KT, K);
  g.matmul(dS, K, dQacc);
  g.pointwise(CUDNN_POINTWISE_IDENTITY, CUDNN_DATA_FLOAT, dQacc, dQ);
}

// f32 -> IEEE half bits, round to nearest even (host-side fill of fp16 LSTM buffers).
uint16_t f32_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const int32_t exp = int32_t((x >> 23) & 0xffu) - 127 + 15;
  uint32_t mant = x & 0x7fffffu;
  if (exp >= 31) return uint16_t(sign | 0x7c00u);
  if (exp <= 0) {
    if (exp < -10) return uint16_t(sign);
    mant |= 0x800000u;
    const uint32_t shift = uint32_t(14 - exp);
    uint32_t h = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1u))) ++h;
    return uint16_t(sign | h);
  }
  uint32_t h = (uint32_t(exp) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return uint16_t(sign | h);
}

// n random 16-bit values in [-a, a) of type bf16 or fp16, uploaded.
void fill16(void* dst, size_t n, bool bf16_type, float a, Rng& r) {
  std::vector<uint16_t> h(n);
  for (auto& v : h) {
    const float f = a * (2 * r.uniform() - 1);
    v = bf16_type ? to_bf16(f).bits : f32_to_f16(f);
  }
  CUDA_TRY(cudaMemcpy(dst, h.data(), n * 2, cudaMemcpyHostToDevice));
}

template <typename T, cudnnStatus_t (*Destroy)(T)>
struct Own {
  T v = nullptr;
  Own() = default;
  Own(const Own&) = delete;
  Own& operator=(const Own&) = delete;
  ~Own() {
    if (v) Destroy(v);
  }
};

void lstm_run(bool bf16_type, int64_t H64, int64_t B64, int64_t T64, cudaStream_t s, int warm, int reps,
              LstmResult& r) {
  const int H = int(H64), B = int(B64), T = int(T64), I = H;
  const cudnnDataType_t dt = bf16_type ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF;
  Handle h(s);
  Pool mem;
  Own<cudnnDropoutDescriptor_t, cudnnDestroyDropoutDescriptor> drop;
  CUDNN_TRY(cudnnCreateDropoutDescriptor(&drop.v));
  size_t states_bytes = 0;
  CUDNN_TRY(cudnnDropoutGetStatesSize(h.h, &states_bytes));
  void* states = mem.alloc(states_bytes);
  CUDNN_TRY(cudnnSetDropoutDescriptor(drop.v, h.h, 0.0f, states, states_bytes, 1234ull));

  Own<cudnnRNNDescriptor_t, cudnnDestroyRNNDescriptor> rnn;
  CUDNN_TRY(cudnnCreateRNNDescriptor(&rnn.v));
  CUDNN_TRY(cudnnSetRNNDescriptor_v8(rnn.v, CUDNN_RNN_ALGO_STANDARD, CUDNN_LSTM, CUDNN_RNN_DOUBLE_BIAS, CUDNN_UNIDIRECTIONAL,
                               CUDNN_LINEAR_INPUT, dt, CUDNN_DATA_FLOAT, CUDNN_TENSOR_OP_MATH, I, H, H, 1, drop.v,
                               CUDNN_RNN_PADDED_IO_DISABLED));
  // All sequences have length T: the packed sequence-major layout, [T, B, vector].
  std::vector<int> lens(size_t(B), T);
  Own<cudnnRNNDataDescriptor_t, cudnnDestroyRNNDataDescriptor> xd, yd;
  CUDNN_TRY(cudnnCreateRNNDataDescriptor(&xd.v));
  CUDNN_TRY(cudnnCreateRNNDataDescriptor(&yd.v));
  CUDNN_TRY(cudnnSetRNNDataDescriptor(xd.v, dt, CUDNN_RNN_DATA_LAYOUT_SEQ_MAJOR_PACKED, T, B, I, lens.data(), nullptr));
  CUDNN_TRY(cudnnSetRNNDataDescriptor(yd.v, dt, CUDNN_RNN_DATA_LAYOUT_SEQ_MAJOR_PACKED, T, B, H, lens.data(), nullptr));
  Own<cudnnTensorDescriptor_t, cudnnDestroyTensorDescriptor> hd, cd;
  CUDNN_TRY(cudnnCreateTensorDescriptor(&hd.v));
  CUDNN_TRY(cudnnCreateTensorDescriptor(&cd.v));
  const int hdim[3] = {1, B, H}, hstride[3] = {B * H, H, 1};
  CUDNN_TRY(cudnnSetTensorNdDescriptor(hd.v, dt, 3, hdim, hstride));
  CUDNN_TRY(cudnnSetTensorNdDescriptor(cd.v, dt, 3, hdim, hstride));

  size_t wbytes = 0, work_bytes = 0, reserve_bytes = 0;
  CUDNN_TRY(cudnnGetRNNWeightSpaceSize(h.h, rnn.v, &wbytes));
  CUDNN_TRY(cudnnGetRNNTempSpaceSizes(h.h, rnn.v, CUDNN_FWD_MODE_TRAINING, xd.v, &work_bytes, &reserve_bytes));
  void* w = mem.alloc(wbytes);
  void* dw = mem.alloc(wbytes);
  void* work = mem.alloc(work_bytes);
  void* reserve = mem.alloc(reserve_bytes);
  const size_t nx = size_t(T) * B * I, ny = size_t(T) * B * H;
  void* x = mem.alloc(nx * 2);
  void* dx = mem.alloc(nx * 2);
  void* y = mem.alloc(ny * 2);
  void* dy = mem.alloc(ny * 2);
  auto* dev_lens = static_cast<int32_t*>(mem.alloc(size_t(B) * 4));
  CUDA_TRY(cudaMemcpy(dev_lens, lens.data(), size_t(B) * 4, cudaMemcpyHostToDevice));
  Rng rng(7);
  fill16(w, wbytes / 2, bf16_type, 1.0f / std::sqrt(float(H)), rng);
  fill16(x, nx, bf16_type, 1.0f, rng);
  fill16(dy, ny, bf16_type, 1.0f, rng);
  CUDA_TRY(cudaMemsetAsync(dw, 0, wbytes, s));

  // Zero initial states (hx, cx null); the final states and their gradients are not wanted.
  auto fwd = [&] {
    CUDNN_TRY(cudnnRNNForward(h.h, rnn.v, CUDNN_FWD_MODE_TRAINING, dev_lens, xd.v, x, yd.v, y, hd.v, nullptr, nullptr, cd.v,
                        nullptr, nullptr, wbytes, w, work_bytes, work, reserve_bytes, reserve));
  };
  auto bwd = [&] {
    CUDNN_TRY(cudnnRNNBackwardData_v8(h.h, rnn.v, dev_lens, yd.v, y, dy, xd.v, dx, hd.v, nullptr, nullptr, nullptr, cd.v,
                                nullptr, nullptr, nullptr, wbytes, w, work_bytes, work, reserve_bytes, reserve));
    CUDNN_TRY(cudnnRNNBackwardWeights_v8(h.h, rnn.v, CUDNN_WGRAD_MODE_ADD, dev_lens, xd.v, x, hd.v, nullptr, yd.v, y,
                                   wbytes, dw, work_bytes, work, reserve_bytes, reserve));
  };
  r.fwd_ms = time_ms(s, warm, reps, fwd);
  r.fwdbwd_ms = time_ms(s, warm, reps, [&] {
    fwd();
    bwd();
  });
  CUDA_TRY(cudaStreamSynchronize(s));
}

}  // namespace

std::string version() {
  const size_t v = cudnnGetVersion();
  auto fmt = [](size_t x) {
    return std::to_string(x / 10000) + "." + std::to_string((x / 100) % 100) + "." + std::to_string(x % 100);
  };
  return "cuDNN " + fmt(v) + " (headers " + fmt(CUDNN_VERSION) + ")";
}

AttnResult attention(const AttnBuffers& buf, int64_t B, int64_t T, int64_t C, int64_t H, CUstream_st* stream,
                     int warm, int reps) {
  AttnResult r;
  const cudaStream_t s = stream;
  const int64_t D = C / H;
  const auto t0 = std::chrono::steady_clock::now();
  try {
    if (D * H != C || D % 8 != 0) throw LibraryError("head dim " + std::to_string(D) + " unsupported");
    Handle h(s);
    Pool mem;
    auto* qkv = static_cast<char*>(const_cast<void*>(buf.qkv));
    auto* dqkv = static_cast<char*>(buf.dqkv);
    void *q = qkv, *k = qkv + C * 2, *v = qkv + 2 * C * 2;
    void *dq = dqkv, *dk = dqkv + C * 2, *dv = dqkv + 2 * C * 2;
    void* dout = const_cast<void*>(buf.dout);
    float scale = 1.0f / std::sqrt(float(D)), fill = std::numeric_limits<float>::lowest(), one = 1.0f;

    const AttnLayout lay = attn_layout(B, T, C, H);

    auto note = [&](const char* part, const LibraryError& e) {
      r.why += std::string(r.why.empty() ? "" : "; ") + part + ": " + e.what();
      cudaGetLastError();  // clear a non-sticky error so the bench goes on
    };

    // ---- forward ----
    std::unique_ptr<Graph> f;
    try {
      f = std::make_unique<Graph>(h.h, "forward");
      forward_ops(*f, lay);
      f->build();
      void* ws = mem.alloc(f->workspace_bytes());
      f->bind({{kQ, q}, {kK, k}, {kV, v}, {kO, buf.out}, {kStats, buf.stats}, {kScale, &scale}, {kFill, &fill}},
              ws);
    } catch (const LibraryError& e) {
      note("forward", e);
      f.reset();
    }

    // ---- backward ----
    std::unique_ptr<Graph> g;
    void* dq_accum = nullptr;
    const size_t acc_bytes = size_t(B * H * T * D) * 4;
    // Before cuDNN 9.6 the caller had to zero dQ_accum before every backward.
    const bool zero_accum = cudnnGetVersion() < 90600;
    try {
      g = std::make_unique<Graph>(h.h, "backward");
      backward_ops(*g, lay);
      g->build();
      void* ws = mem.alloc(g->workspace_bytes());
      void* softmax_sum = mem.alloc(size_t(B * H * T) * 4);
      dq_accum = mem.alloc(acc_bytes);
      g->bind({{kQ, q},
               {kK, k},
               {kV, v},
               {kO, buf.out},
               {kDO, dout},
               {kStats, buf.stats},
               {kDQ, dq},
               {kDK, dk},
               {kDV, dv},
               {kSoftmaxSum, softmax_sum},
               {kDQAccum, dq_accum},
               {kScale, &scale},
               {kFill, &fill},
               {kOne, &one}},
              ws);
    } catch (const LibraryError& e) {
      note("backward", e);
      g.reset();
    }
    r.build_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.engines = "fwd engine " + (f ? std::to_string(f->engine()) : std::string("-")) + ", bwd engine " +
                (g ? std::to_string(g->engine()) : std::string("-"));

    if (f) {
      try {
        r.fwd_ms = time_ms(s, warm, reps, [&] { f->execute(); });
        r.fwd_ok = true;
      } catch (const LibraryError& e) {
        note("forward", e);
      }
    }
    // Without cuDNN's own statistics the backward still runs (and times) on zeros.
    if (!r.fwd_ok) CUDA_TRY(cudaMemsetAsync(buf.stats, 0, size_t(B * H * T) * 4, s));
    if (g) {
      try {
        r.bwd_ms = time_ms(s, warm, reps, [&] {
          if (zero_accum) CUDA_TRY(cudaMemsetAsync(dq_accum, 0, acc_bytes, s));
          g->execute();
        });
        r.bwd_ok = true;
      } catch (const LibraryError& e) {
        note("backward", e);
      }
    }
    CUDA_TRY(cudaStreamSynchronize(s));
  } catch (const LibraryError& e) {
    r.why += std::string(r.why.empty() ? "" : "; ") + e.what();
    cudaGetLastError();  // clear a non-sticky error so the bench goes on
  }
  if (r.build_s == 0) r.build_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

LstmResult lstm(int64_t H, int64_t B, int64_t T, CUstream_st* stream, int warm, int reps) {
  LstmResult r;
  std::string why;
  // cuDNN's RNNs take bf16 data from 9.13 on; before that (or if bf16 fails) fp16, f32 math.
  const bool bf16_ok = cudnnGetVersion() >= 91300;
  if (!bf16_ok) why = "bf16: needs cuDNN >= 9.13; ";
  for (int pass = bf16_ok ? 0 : 1; pass < 2; ++pass) {
    const bool bf = pass == 0;
    try {
      LstmResult t;
      lstm_run(bf, H, B, T, stream, warm, reps, t);
      r = t;
      r.ok = true;
      r.dtype = bf ? "bf16" : "fp16";
      return r;
    } catch (const LibraryError& e) {
      why += std::string(bf ? "bf16: " : "fp16: ") + e.what() + "; ";
      cudaGetLastError();
    }
  }
  r.ok = false;
  if (why.size() >= 2) why.resize(why.size() - 2);
  r.why = why;
  return r;
}

}  // namespace loom::cudnn_bench
