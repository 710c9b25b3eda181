// rnn_attention.cu: the recurrent decoder's attention step (rnn_attention.h) on the GPU and,
// through cuda_compat.h, under the SIMT emulator. Sequence-to-sequence shapes are small (tens
// to a few hundred encoder positions, a few hundred features), so one block works on one row
// at a time and keeps that row's scores, query and output gradient in shared memory; the
// batched products around the op (the projections, the output layer) are where the FLOPs are.
//
// Forward, one block per query row: scores (one thread a key), block max and sum, the
// probabilities (saved, f32), then ctx (one thread a feature) as the weighted sum of values.
// Backward:
//   1. one block per query row: dp_j = dctx . values_j, delta = sum_j p_j dp_j (from the f32
//      probabilities, not from dctx . ctx: ctx is rounded to bf16, and the difference
//      dp_j - delta would carry that rounding at the scale of dp), dscore_j = p_j (dp_j - delta)
//      into scratch, and dq from the key rows;
//   2. one block per key row: dvalues and dkeys summed over the batch row's queries in order,
//      and the additive form's dv contribution of this key row into scratch;
//   3. additive only: dv += the per-key-row partials, summed in row order.
// Each gradient element is summed by one thread in a fixed order: deterministic, no atomics.
#include "kernels/common/cuda_compat.h"
#include "kernels/common/launch.cuh"
#include "kernels/common/reduce.cuh"
#include "kernels/common/vec.cuh"
#include "kernels/rnn_attention/rnn_attention.h"

#include <climits>
#include <cstdint>

#include "core/check.h"

namespace loom::cuda {
namespace {

using Bf = __nv_bfloat16;
constexpr int kThreads = 128;
static_assert(valid_block(kThreads));

// Keys that are not padding in batch row b.
__device__ __forceinline__ int n_keys(const int32_t* key_len, int64_t b, int Tk) {
  if (!key_len) return Tk;
  const int L = key_len[b];
  return L < 0 ? 0 : (L > Tk ? Tk : L);
}

// The block's sum of v, inline: the backward's block_sum (an out-of-line call on sm_90a) made
// ptxas spill 8 bytes around it. Partials added in warp order: the same bits every run.
__device__ __forceinline__ float block_total(float v) {
  __shared__ float part[kThreads / 32];
  v = warp_reduce(v, SumOp{});
  __syncthreads();  // the previous call's readers are done with part[]
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = v;
  __syncthreads();
  float t = 0.f;
#pragma unroll
  for (int w = 0; w < kThreads / 32; ++w) t += part[w];
  return t;
}

}  // namespace

// ---- forward ----------------------------------------------------------------------------

template <bool kAdd>
static __global__ void __launch_bounds__(kThreads)
    rnn_attention_fwd_kernel(const Bf* __restrict__ q, const Bf* __restrict__ keys, const Bf* __restrict__ values,
                             const Bf* __restrict__ v, const int32_t* __restrict__ key_len, Bf* __restrict__ ctx,
                             float* __restrict__ probs, int64_t rows, int Tq, int Tk, int A, int C) {
  LOOM_DYNAMIC_SMEM(float, smem);
  float* qs = smem;     // [A] the query row
  float* vs = qs + A;   // [A] the scoring vector (additive)
  float* ps = vs + A;   // [Tk] scores, then probabilities
  const int tid = threadIdx.x;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t b = r / Tq;
    const int L = n_keys(key_len, b, Tk);
    __syncthreads();  // the previous row's readers are done with qs and ps
    for (int x = tid; x < A; x += kThreads) {
      qs[x] = to_float(q[r * A + x]);
      if (kAdd) vs[x] = to_float(v[x]);
    }
    __syncthreads();
    float m = -INFINITY;
    for (int j = tid; j < L; j += kThreads) {
      const Bf* k = keys + (b * Tk + j) * A;
      float s = 0.f;
      if (kAdd) {
        for (int x = 0; x < A; ++x) s += vs[x] * tanhf(qs[x] + to_float(k[x]));
      } else {
        for (int x = 0; x < A; ++x) s += qs[x] * to_float(k[x]);
      }
      ps[j] = s;
      m = fmaxf(m, s);
    }
    const float M = block_max(m);
    float sum = 0.f;
    for (int j = tid; j < L; j += kThreads) sum += (ps[j] = __expf(ps[j] - M));
    const float S = block_sum(sum);
    const float inv = L > 0 ? 1.f / S : 0.f;
    for (int j = tid; j < Tk; j += kThreads) {
      const float p = j < L ? ps[j] * inv : 0.f;
      ps[j] = p;
      probs[r * Tk + j] = p;
    }
    __syncthreads();
    for (int c = tid; c < C; c += kThreads) {
      float acc = 0.f;
      for (int j = 0; j < L; ++j) acc += ps[j] * to_float(values[(b * Tk + j) * C + c]);
      ctx[r * C + c] = from_float<Bf>(acc);
    }
  }
}

// ---- backward ---------------------------------------------------------------------------

// Per query row: dscore into ds_out [rows, Tk] (0 on padding) and, when wanted, dq.
template <bool kAdd>
static __global__ void __launch_bounds__(kThreads)
    rnn_attention_dq_kernel(const Bf* __restrict__ dctx, const Bf* __restrict__ q, const Bf* __restrict__ keys,
                            const Bf* __restrict__ values, const Bf* __restrict__ v,
                            const int32_t* __restrict__ key_len, const float* __restrict__ probs,
                            Bf* __restrict__ dq, float* __restrict__ ds_out,
                            int64_t rows, int Tq, int Tk, int A, int C) {
  LOOM_DYNAMIC_SMEM(float, smem);
  float* qs = smem;     // [A]
  float* vs = qs + A;   // [A]
  float* ds = vs + A;   // [Tk] dscore
  float* dcs = ds + Tk; // [C] dctx row
  const int tid = threadIdx.x;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t b = r / Tq;
    const int L = n_keys(key_len, b, Tk);
    __syncthreads();
    for (int c = tid; c < C; c += kThreads) dcs[c] = to_float(dctx[r * C + c]);
    for (int x = tid; x < A; x += kThreads) {
      qs[x] = to_float(q[r * A + x]);
      if (kAdd) vs[x] = to_float(v[x]);
    }
    __syncthreads();
    float part = 0.f;
    for (int j = tid; j < L; j += kThreads) {
      const Bf* val = values + (b * Tk + j) * C;
      float dp = 0.f;
      for (int c = 0; c < C; ++c) dp += dcs[c] * to_float(val[c]);
      ds[j] = dp;
      part += probs[r * Tk + j] * dp;
    }
    const float delta = block_total(part);
    // Each thread rewrites the ds[j] it wrote above: no barrier between.
    for (int j = tid; j < Tk; j += kThreads) {
      const float d = j < L ? probs[r * Tk + j] * (ds[j] - delta) : 0.f;
      ds[j] = d;
      ds_out[r * Tk + j] = d;
    }
    __syncthreads();
    if (dq) {
      for (int x = tid; x < A; x += kThreads) {
        float acc = 0.f;
        for (int j = 0; j < L; ++j) {
          const float k = to_float(keys[(b * Tk + j) * A + x]);
          if (kAdd) {
            const float u = tanhf(qs[x] + k);
            acc += ds[j] * (1.f - u * u);
          } else {
            acc += ds[j] * k;
          }
        }
        dq[r * A + x] = from_float<Bf>(kAdd ? acc * vs[x] : acc);
      }
    }
  }
}

// Per key row (b, j), one thread a feature, summing over the Tq query rows of batch row b:
// dvalues_j = sum_t p_tj dctx_t; dkeys_j from dscore; the additive form's dv partial of this
// key row into dv_part [B*Tk, A]. No shared memory, no barriers.
template <bool kAdd>
static __global__ void __launch_bounds__(kThreads)
    rnn_attention_dkv_kernel(const Bf* __restrict__ dctx, const Bf* __restrict__ q, const Bf* __restrict__ keys,
                             const Bf* __restrict__ v, const float* __restrict__ probs,
                             const float* __restrict__ ds, Bf* __restrict__ dkeys, Bf* __restrict__ dvalues,
                             float* __restrict__ dv_part, int64_t key_rows, int Tq, int Tk, int A, int C) {
  const int tid = threadIdx.x;
  for (int64_t kr = blockIdx.x; kr < key_rows; kr += gridDim.x) {
    const int64_t b = kr / Tk, j = kr % Tk;
    if (dvalues) {
      for (int c = tid; c < C; c += kThreads) {
        float acc = 0.f;
        for (int t = 0; t < Tq; ++t) acc += probs[(b * Tq + t) * Tk + j] * to_float(dctx[(b * Tq + t) * C + c]);
        dvalues[kr * C + c] = from_float<Bf>(acc);
      }
    }
    if (!dkeys && !kAdd) continue;
    for (int x = tid; x < A; x += kThreads) {
      const float k = to_float(keys[kr * A + x]);
      float acc = 0.f, acc_v = 0.f;
      for (int t = 0; t < Tq; ++t) {
        const float d = ds[(b * Tq + t) * Tk + j];
        const float qx = to_float(q[(b * Tq + t) * A + x]);
        if (kAdd) {
          const float u = tanhf(qx + k);
          acc += d * (1.f - u * u);
          acc_v += d * u;
        } else {
          acc += d * qx;
        }
      }
      if (dkeys) dkeys[kr * A + x] = from_float<Bf>(kAdd ? acc * to_float(v[x]) : acc);
      if (kAdd) dv_part[kr * A + x] = acc_v;
    }
  }
}

// dv[x] += sum over key rows of dv_part[., x], in row order.
static __global__ void __launch_bounds__(kThreads)
    rnn_attention_dv_kernel(const float* __restrict__ dv_part, float* __restrict__ dv, int64_t key_rows, int A) {
  for (int64_t x = int64_t(blockIdx.x) * kThreads + threadIdx.x; x < A; x += int64_t(gridDim.x) * kThreads) {
    float acc = 0.f;
    for (int64_t kr = 0; kr < key_rows; ++kr) acc += dv_part[kr * A + x];
    dv[x] += acc;
  }
}

// ---- launchers --------------------------------------------------------------------------

namespace {

void check_shape(int64_t B, int64_t Tq, int64_t Tk, int64_t A, int64_t C, size_t smem, const char* what) {
  LOOM_CHECK(B > 0 && Tq > 0 && Tk > 0 && A > 0 && C > 0, what, ": empty shape");
  LOOM_CHECK(Tq <= INT_MAX && Tk <= INT_MAX && A <= INT_MAX && C <= INT_MAX, what, ": a dimension exceeds int");
  LOOM_CHECK(smem <= kStaticSmemLimit, what, ": ", smem, " bytes of shared memory a row (Tk + A + C too large)");
}

template <class Kernel>
int rows_grid(Kernel* kernel, int64_t rows, size_t smem) {
  return grid_for(rows * kThreads, kThreads, blocks_per_sm(kernel, kThreads, smem));
}

}  // namespace

void rnn_attention_fwd(const RnnAttentionFwd& a, Stream s) {
  const bool add = a.score == AttnScore::Additive;
  const size_t smem = size_t(2 * a.A + a.Tk) * sizeof(float);
  check_shape(a.B, a.Tq, a.Tk, a.A, a.C, smem, "rnn_attention_fwd");
  LOOM_CHECK(a.q && a.keys && a.values && a.ctx && a.probs && (!add || a.v), "rnn_attention_fwd: null pointer");
  const auto* q = reinterpret_cast<const Bf*>(a.q);
  const auto* k = reinterpret_cast<const Bf*>(a.keys);
  const auto* val = reinterpret_cast<const Bf*>(a.values);
  const auto* v = reinterpret_cast<const Bf*>(a.v);
  auto* ctx = reinterpret_cast<Bf*>(a.ctx);
  const int64_t rows = a.B * a.Tq;
  with_bool(add, [&](auto kAdd) {
    constexpr bool K = decltype(kAdd)::value;
    LOOM_LAUNCH((rnn_attention_fwd_kernel<K>), rows_grid(rnn_attention_fwd_kernel<K>, rows, smem), kThreads, smem, s, q,
                k, val, v, a.key_len, ctx, a.probs, rows, int(a.Tq), int(a.Tk), int(a.A), int(a.C));
  });
}

size_t rnn_attention_bwd_scratch_floats(AttnScore score, int64_t B, int64_t Tq, int64_t Tk, int64_t A) {
  return size_t(B * Tq * Tk) + (score == AttnScore::Additive ? size_t(B * Tk * A) : 0);
}

void rnn_attention_bwd(const RnnAttentionBwd& a, Stream s) {
  const bool add = a.score == AttnScore::Additive;
  const size_t smem = size_t(2 * a.A + a.Tk + a.C) * sizeof(float);
  check_shape(a.B, a.Tq, a.Tk, a.A, a.C, smem, "rnn_attention_bwd");
  LOOM_CHECK(a.dctx && a.q && a.keys && a.values && a.probs && a.scratch && (!add || a.v),
             "rnn_attention_bwd: null pointer");
  const auto* dctx = reinterpret_cast<const Bf*>(a.dctx);
  const auto* q = reinterpret_cast<const Bf*>(a.q);
  const auto* k = reinterpret_cast<const Bf*>(a.keys);
  const auto* val = reinterpret_cast<const Bf*>(a.values);
  const auto* v = reinterpret_cast<const Bf*>(a.v);
  auto* dq = reinterpret_cast<Bf*>(a.dq);
  auto* dk = reinterpret_cast<Bf*>(a.dkeys);
  auto* dval = reinterpret_cast<Bf*>(a.dvalues);
  float* ds = a.scratch;
  float* dv_part = add ? a.scratch + a.B * a.Tq * a.Tk : nullptr;  // the dot form has none
  const int64_t rows = a.B * a.Tq, key_rows = a.B * a.Tk;
  const int Tq = int(a.Tq), Tk = int(a.Tk), A = int(a.A), C = int(a.C);
  with_bool(add, [&](auto kAdd) {
    constexpr bool K = decltype(kAdd)::value;
    LOOM_LAUNCH((rnn_attention_dq_kernel<K>), rows_grid(rnn_attention_dq_kernel<K>, rows, smem), kThreads, smem, s,
                dctx, q, k, val, v, a.key_len, a.probs, dq, ds, rows, Tq, Tk, A, C);
    if (dk || dval || (K && a.dv))
      LOOM_LAUNCH((rnn_attention_dkv_kernel<K>), rows_grid(rnn_attention_dkv_kernel<K>, key_rows, 0), kThreads, 0, s,
                  dctx, q, k, v, a.probs, ds, dk, dval, dv_part, key_rows, Tq, Tk, A, C);
    if (K && a.dv)
      LOOM_LAUNCH(rnn_attention_dv_kernel, grid_for(A, kThreads, blocks_per_sm(rnn_attention_dv_kernel, kThreads, 0)),
                  kThreads, 0, s, static_cast<const float*>(dv_part), a.dv, key_rows, A);
  });
}

}  // namespace loom::cuda
