// attention_sm90_bwd.cuh: the attention backward for sm_90a (H100/H200), warp-specialised in
// the FlashAttention-3 manner, included by attention.cu inside its anonymous namespace after
// the mma.sync backward's launcher (it uses that file's Problem, BwdOut, key_len_of,
// exp2_approx, pack_float2, sts32, attention_tensor_map, swizzle_128b, dq_order_wait/signal
// and launch_bwd_prep/launch_bwd_dq). The mma.sync backward stays the path for sm_80 and for
// D = 16, 32; the launcher picks this one on sm_90 devices at D = 64 and 128 (attention.cu,
// use_sm90_backward).
//
// A block owns kBc = 128 keys of one (b, h), 64 for each of its two consumer warpgroups, and
// streams the query tiles that see them (kBr = 64 queries each) through a kStages-deep ring:
//  - warpgroup 0, the producer: one thread loads K and V once and each stage's Q and dO by
//    TMA (128B swizzle); then the warpgroup writes the transposed tiles wgmma's B operand needs
//    K-major (K^T once, Q^T and dO^T every stage: the emulator and this kernel use no
//    MN-major descriptors), and the stage's lse (times log2 e), delta = rowsum(dO * O) (from
//    the mma.sync backward's prep kernel) and document starts;
//  - warpgroups 1 and 2, the consumers, each for its 64 keys, per query tile:
//      S^T = K Q^T, dP^T = V dO^T            (wgmma, both operands from shared memory)
//      P^T = exp2(S^T scale - lse), masked    (registers)
//      dV += P^T dO                           (wgmma, P^T from registers, B = dO^T)
//      dS^T = P^T * (dP^T - delta)            (registers; also stored as dS for dQ)
//      dK += dS^T Q                           (wgmma, dS^T from registers, B = Q^T)
//      dQ[:, half c] = dS K over both consumers' keys (wgmma, A = dS, B = K^T), after a
//      named barrier that joins the two consumers (each reads the other's half of dS);
//    dQ is added into the f32 accumulator [B, Tq, C] with f32 atomics, as in
//    the mma.sync backward, in key-block order when deterministic (attention.cu,
//    dq_order_wait), and turned into bf16 by the last launch.
// Each stage has three mbarriers: `loaded` (TMA bytes landed), `full` (the transposes, lse,
// delta and starts written: the 128 producer threads arrive), `empty` (both consumers done
// with the stage, dS included: their 256 threads arrive).
// Shared memory: K, V, K^T (3 x kBc x D bf16) plus kStages x (Q, dO, Q^T, dO^T, dS): two stages
// at D = 64 (147 KiB), one at D = 128 (178 KiB; a second would need 259).
//
// Tiles skipped as in the mma.sync backward: query tiles before the block's first key
// (causal) or after the last query whose document reaches it are never loaded; a block wholly
// past the key length loads none and writes zero dK, dV. Keys at or past the key length are
// zeroed in K^T (0 * NaN would poison dQ) and their P and dS are selects of 0.

template <int D>
struct Sm90BwdTile {
  static constexpr int kConsumers = 2, kThreads = 128 * (1 + kConsumers);
  static constexpr int kBc = 64 * kConsumers, kBr = 64;
  static constexpr int kStages = D <= 64 ? 2 : 1;
  static constexpr int kKvBytes = kBc * D * 2;                                  // K, V, K^T
  static constexpr int kQBytes = kBr * D * 2;                                   // Q, dO, Q^T, dO^T
  static constexpr int kDsBytes = kBr * kBc * 2;                                // dS: one 128B tile a consumer
  static constexpr int kRowBytes = 3 * kBr * 4;                                 // lse, delta, starts
  static constexpr int kStageBytes = (4 * kQBytes + kDsBytes + kRowBytes + 1023) / 1024 * 1024;
  static constexpr size_t kSmemBytes = 1024 + 3 * size_t(kKvBytes) + size_t(kStages) * kStageBytes;
  static_assert(D == 64 || D == 128, "the sm90 backward reads rows as 128-byte boxes");
  static_assert(kBr * 2 == 128, "Q^T and dO^T rows are one 128-byte swizzle row");
  static_assert(kSmemBytes <= smem_per_block_limit(900), "attention sm90 backward: the ring exceeds shared memory");
  static_assert(valid_block(kThreads));
};

// Element (row, col) of a tile TMA loaded as 128-byte boxes of `rows` rows with the 128B
// swizzle (box col / 64 at box * rows * 128 bytes).
template <int kRows>
__device__ __forceinline__ bf16raw box_at(const unsigned char* tile, int row, int col) {
  const uint32_t a = uint32_t(col / 64) * kRows * 128 + swizzle_128b(uint32_t(row * 128 + col % 64 * 2));
  return *reinterpret_cast<const bf16raw*>(tile + a);
}

// dst(d, r) = src(r0 + r, d) for r in [0, 64): a [D][64] bf16 tile in the 128B-swizzled K-major
// layout wgmma reads as B (d/8 groups of 1024 bytes), from a box-layout tile of kRows rows;
// rows r0 + r >= valid become zeros. The 128 producer threads move row pairs (32-bit stores).
template <int D, int kRows>
__device__ __forceinline__ void transpose_to_b(unsigned char* dst, const unsigned char* src, int r0, int valid,
                                               int tid) {
  const bf16raw zero = from_float<bf16raw>(0.f);
  for (int e = tid; e < D * 32; e += 128) {
    const int d = e % D, r = 2 * (e / D);
    __nv_bfloat162 pair;
    pair.x = r0 + r < valid ? box_at<kRows>(src, r0 + r, d) : zero;
    pair.y = r0 + r + 1 < valid ? box_at<kRows>(src, r0 + r + 1, d) : zero;
    uint32_t bits;
    memcpy(&bits, &pair, 4);
    sts32(reinterpret_cast<bf16raw*>(dst + swizzle_128b(uint32_t((d / 8) * 1024 + (d % 8) * 128 + 2 * r))), bits);
  }
}

// A descriptor of a 128B-swizzled K-major operand: rows of 128 bytes, 8-row groups 1024 apart.
__device__ __forceinline__ uint64_t desc_128b(const unsigned char* p) {
  return ::loom::hopper::make_smem_desc(p, CU_TENSOR_MAP_SWIZZLE_128B, 16, 1024);
}

template <int D, bool kDoc>
__global__ void __launch_bounds__(Sm90BwdTile<D>::kThreads, 1)
    attention_bwd_sm90_kernel(const __grid_constant__ CUtensorMap map_q, const __grid_constant__ CUtensorMap map_k,
                              const __grid_constant__ CUtensorMap map_v, const __grid_constant__ CUtensorMap map_do,
                              const Problem p, const float* __restrict__ lse, const float* __restrict__ delta,
                              const BwdOut o, float scale_log2, float scale) {
  namespace hp = ::loom::hopper;
  using Tile = Sm90BwdTile<D>;
  constexpr int kBr = Tile::kBr, kBc = Tile::kBc, kStages = Tile::kStages, kBoxes = D / 64;
  constexpr int kS = kBr / 2, kAcc = D / 2, kDq = D / 4;  // accumulator floats a thread
  LOOM_DYNAMIC_SMEM(unsigned char, raw_smem);
  __shared__ __align__(8) uint64_t bar_kv, loaded[kStages], full[kStages], empty[kStages];
  unsigned char* smem = hp::align_smem(raw_smem, 1024);
  unsigned char* sK = smem;                     // kBoxes boxes of [kBc][128 B]
  unsigned char* sV = sK + Tile::kKvBytes;      // the same
  unsigned char* sKt = sV + Tile::kKvBytes;     // K^T: a [D][64 keys] tile a consumer
  auto stage = [&](int s) { return sKt + Tile::kKvBytes + s * Tile::kStageBytes; };
  auto stage_q = [&](int s) { return stage(s); };                           // boxes of [kBr][128 B]
  auto stage_do = [&](int s) { return stage(s) + Tile::kQBytes; };          // the same
  auto stage_qt = [&](int s) { return stage(s) + 2 * Tile::kQBytes; };      // [D][kBr]
  auto stage_dot = [&](int s) { return stage(s) + 3 * Tile::kQBytes; };     // [D][kBr]
  auto stage_ds = [&](int s) { return stage(s) + 4 * Tile::kQBytes; };      // dS [kBr][64 keys] a consumer
  auto stage_rows = [&](int s) { return reinterpret_cast<float*>(stage_ds(s) + Tile::kDsBytes); };

  const int H = p.H, C = H * D, T = p.Tq;
  const int k0 = int(blockIdx.x) * kBc;
  const int bh = int(blockIdx.y), b = bh / H, h = bh % H;
  const bool causal = p.causal;
  const int len = key_len_of(p, b);
  const int tid = int(threadIdx.x), wg = tid / 128;
  // The query tiles, as in attention_bwd_kernel: from the block's first key (causal), to the
  // last query whose document starts at or before the block's last key (document mask), none
  // for a block wholly past the key length.
  const int32_t* doc = kDoc ? p.doc_start + int64_t(b) * T : nullptr;
  const int i_begin = causal ? k0 / kBr : 0;
  int q_end = k0 < len ? T : 0;
  if (kDoc) {
    int lo_q = min(k0, T), hi_q = T;
    while (lo_q < hi_q) {
      const int mid = (lo_q + hi_q) / 2;
      if (doc[mid] > k0 + kBc - 1) hi_q = mid; else lo_q = mid + 1;
    }
    q_end = lo_q;
  }
  const int n_qb = max((q_end + kBr - 1) / kBr, i_begin);

  init_ring_barriers(&bar_kv, loaded, full, empty, Tile::kConsumers);

  if (wg == 0) {
    // ---- producer
    hp::setmaxnreg_dec<40>();
    if (n_qb == i_begin) return;  // no query tile: the consumers write zeros
    if (tid == 0) {
      hp::mbarrier_arrive_expect_tx(&bar_kv, 2 * Tile::kKvBytes);
      for (int box = 0; box < kBoxes; ++box) {
        hp::tma_load<3>(sK + box * kBc * 128, &map_k, &bar_kv, {h * D + box * 64, k0, b});
        hp::tma_load<3>(sV + box * kBc * 128, &map_v, &bar_kv, {h * D + box * 64, k0, b});
      }
    }
    hp::mbarrier_wait_parity(&bar_kv, 0);
    for (int c = 0; c < Tile::kConsumers; ++c)
      transpose_to_b<D, kBc>(sKt + c * D * 128, sK, 64 * c, len - k0, tid);
    const float* lse_row = lse + int64_t(bh) * T;
    const float* delta_row = delta + int64_t(bh) * T;
    for (int qi = i_begin; qi < n_qb; ++qi) {
      const int it = qi - i_begin, s = it % kStages, q0 = qi * kBr;
      const uint32_t ph = uint32_t(it / kStages) & 1u;
      if (tid == 0) {
        hp::mbarrier_wait_parity(&empty[s], ph ^ 1u);  // a fresh barrier passes parity 1
        hp::mbarrier_arrive_expect_tx(&loaded[s], 2 * Tile::kQBytes);
        for (int box = 0; box < kBoxes; ++box) {
          hp::tma_load<3>(stage_q(s) + box * kBr * 128, &map_q, &loaded[s], {h * D + box * 64, q0, b});
          hp::tma_load<3>(stage_do(s) + box * kBr * 128, &map_do, &loaded[s], {h * D + box * 64, q0, b});
        }
      }
      // Every producer thread writes into the stage only after this wait, which the empty
      // wait above precedes.
      hp::mbarrier_wait_parity(&loaded[s], ph);
      transpose_to_b<D, kBr>(stage_qt(s), stage_q(s), 0, kBr, tid);
      transpose_to_b<D, kBr>(stage_dot(s), stage_do(s), 0, kBr, tid);
      // Rows past T: lse = +inf, so their P is exactly 0 (Q and dO read as zeros there).
      float* rows = stage_rows(s);
      for (int r = tid; r < kBr; r += 128) {
        const int q = q0 + r;
        rows[r] = q < T ? lse_row[q] * kLog2e : INFINITY;
        rows[kBr + r] = q < T ? delta_row[q] : 0.f;
        reinterpret_cast<int32_t*>(rows)[2 * kBr + r] = kDoc ? doc[min(q, T - 1)] : 0;
      }
      hp::fence_proxy_async_shared();  // the generic-proxy writes, visible to wgmma
      hp::mbarrier_arrive(&full[s]);
    }
    return;
  }

  // ---- consumers: warpgroup c owns keys kc0 .. kc0 + 63
  hp::setmaxnreg_inc<232>();
  const int c = wg - 1, w = (tid % 128) / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const int kc0 = k0 + 64 * c;
  const int key_of[2] = {kc0 + 16 * w + g, kc0 + 16 * w + g + 8};  // this thread's two accumulator rows
  float dv[kAcc], dk[kAcc];
#pragma unroll
  for (int i = 0; i < kAcc; ++i) dv[i] = dk[i] = 0.f;
  if (n_qb > i_begin) hp::mbarrier_wait_parity(&bar_kv, 0);
  for (int qi = i_begin; qi < n_qb; ++qi) {
    const int it = qi - i_begin, s = it % kStages, q0 = qi * kBr;
    const uint32_t ph = uint32_t(it / kStages) & 1u;
    hp::mbarrier_wait_parity(&full[s], ph);
    const float* rows = stage_rows(s);
    const int32_t* starts = reinterpret_cast<const int32_t*>(rows + 2 * kBr);

    // S^T = K Q^T and dP^T = V dO^T (rows = this consumer's keys, columns = the tile's queries),
    // two groups: at D = 64 the softmax of S^T runs while dP^T is in flight; at D = 128 dP^T is
    // issued after it (S^T and dP^T live together next to dK and dV would spill).
    constexpr bool kOverlapDp = D <= 64;
    float st[kS], dpt[kS];
    // acc = (this consumer's rows of a [kBc][D] tile) (a [kBr][D] tile)^T, both in boxes: one group.
    auto issue_t = [&](float (&acc)[kS], const unsigned char* keys, const unsigned char* queries) {
#pragma unroll
      for (int kt = 0; kt < D / 16; ++kt) {
        const int box = kt / 4, off = kt % 4 * 32;
        hp::wgmma_ss<kBr, __nv_bfloat16>(acc, desc_128b(keys + box * kBc * 128 + c * 64 * 128 + off),
                                         desc_128b(queries + box * kBr * 128 + off), kt > 0);
      }
      hp::wgmma_commit_group();
    };
    auto issue_dp = [&] { issue_t(dpt, sV, stage_do(s)); };
    hp::wgmma_fence();
    issue_t(st, sK, stage_q(s));
    if constexpr (kOverlapDp) {
      issue_dp();
      hp::wgmma_wait_group<1>();
    } else {
      hp::wgmma_wait_group<0>();
    }

    // st[i]: key row 16w + g + 8 * ((i / 2) % 2), query column 8 * (i / 4) + 2t + i % 2 (PTX ISA
    // wgmma .m64nNk16 D fragment). P recomputed from the saved lse; masks are selects. P^T goes
    // straight into the A fragments of dV += P^T dO (register k of k-step kk holds d[8kk + 2k]
    // and d[8kk + 2k + 1]) and is read back from them for dS: S^T's 32 floats die here, which
    // keeps the D = 128 consumer within its registers.
    uint32_t pa[kBr / 16][4];
#pragma unroll
    for (int kk = 0; kk < kBr / 16; ++kk)
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        float pv[2];
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int i = 8 * kk + 2 * k + e, col = 8 * (i / 4) + 2 * t + e, key = key_of[(i / 2) % 2];
          const bool masked = key >= len || (causal && key > q0 + col) || (kDoc && key < starts[col]);
          pv[e] = masked ? 0.f : exp2_approx(st[i] * scale_log2 - rows[col]);
        }
        pa[kk][k] = pack_float2(pv[0], pv[1]);
      }
    hp::wgmma_fence();
    if constexpr (!kOverlapDp) issue_dp();
#pragma unroll
    for (int kk = 0; kk < kBr / 16; ++kk)
      hp::wgmma_rs<D, __nv_bfloat16>(dv, pa[kk], desc_128b(stage_dot(s) + kk * 32), 1);
    hp::wgmma_commit_group();
    hp::wgmma_wait_group<0>();  // dP^T and dV

    // dS^T = P^T (dP^T - delta); a masked P is an exact 0 and so is its dS (a NaN dP^T from a
    // padded key's V row included). dS^T feeds dK from registers and goes to shared memory as
    // dS (rows = queries, this consumer's 64 keys along K) for dQ.
    uint32_t dsa[kBr / 16][4];
    // dS(col, key) at col * 128 + 2 key, 128B-swizzled: the XOR term (col % 8) * 16 is
    // 2t + e's whatever i / 4 is, so this thread's four addresses are a base plus 1024 (i / 4).
    unsigned char* ds_tile = stage_ds(s) + c * (Tile::kDsBytes / Tile::kConsumers);
    auto ds_at = [&](int i, int e) {
      const int ce = 2 * t + e, key_local = 16 * w + g + 8 * ((i / 2) % 2);
      return reinterpret_cast<bf16raw*>(ds_tile + 1024 * (i / 4) + ce * 128 + ((2 * key_local) ^ ((ce & 7) << 4)));
    };
#pragma unroll
    for (int kk = 0; kk < kBr / 16; ++kk)
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        // bf16 to f32 is the bits moved up: the low half is the first element.
        const float pv[2] = {__uint_as_float(pa[kk][k] << 16), __uint_as_float(pa[kk][k] & 0xFFFF0000u)};
        float dsv[2];
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int i = 8 * kk + 2 * k + e, col = 8 * (i / 4) + 2 * t + e;
          dsv[e] = pv[e] == 0.f ? 0.f : pv[e] * (dpt[i] - rows[kBr + col]);
          *ds_at(i, e) = from_float<bf16raw>(dsv[e]);
        }
        dsa[kk][k] = pack_float2(dsv[0], dsv[1]);
      }
    hp::fence_proxy_async_shared();  // dS's generic-proxy writes, visible to both consumers' wgmma
    hp::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBr / 16; ++kk)
      hp::wgmma_rs<D, __nv_bfloat16>(dk, dsa[kk], desc_128b(stage_qt(s) + kk * 32), 1);
    hp::wgmma_commit_group();

    // dQ[:, c D/2 .. (c + 1) D/2) = dS K over all kBc keys: both consumers' dS written.
    hp::named_barrier_sync(1, 256);
    float dq[kDq];
    hp::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBc / 16; ++kk) {
      const int half = kk / 4, off = kk % 4 * 32;
      hp::wgmma_ss<D / 2, __nv_bfloat16>(
          dq, desc_128b(stage_ds(s) + half * (Tile::kDsBytes / Tile::kConsumers) + off),
          desc_128b(sKt + half * D * 128 + c * (D / 2) * 128 + off), kk > 0);
    }
    hp::wgmma_commit_group();
    hp::wgmma_wait_group<0>();  // dK and dQ: the stage is read to the end before it is released
    hp::mbarrier_arrive(&empty[s]);

    // dq[i]: query row 16w + g + 8 * ((i / 2) % 2), column c D/2 + 8 * (i / 4) + 2t + i % 2.
    // Every key block that sees these queries adds into the same f32 rows, hence atomics; in
    // key-block order with a deterministic dQ (dq_order_wait: the first consumer thread waits,
    // named barrier 2 lets both consumers go, and counts them done before the signal).
    int32_t* order = o.dq_order ? o.dq_order + int64_t(bh) * o.order_stride + qi : nullptr;
    if (order) {
      if (tid == 128) dq_order_wait(order, int(blockIdx.x) - (kDoc ? doc[q0] / kBc : 0));
      hp::named_barrier_sync(2, 256);
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int q = q0 + 16 * w + g + 8 * r;
      if (q < T) {
        float* dst = o.dq_acc + (int64_t(b) * T + q) * C + int64_t(h) * D + c * (D / 2) + 2 * t;
#pragma unroll
        for (int i = 2 * r; i < kDq; i += 4) {
          atomicAdd(dst + 8 * (i / 4), dq[i]);
          atomicAdd(dst + 8 * (i / 4) + 1, dq[i + 1]);
        }
      }
    }
    if (order) {
      hp::named_barrier_sync(2, 256);
      if (tid == 128) dq_order_signal(order);
    }
  }

  // Epilogue: dK (times the softmax scale) and dV as bf16 pairs straight from the accumulators.
  if (!o.dk) return;  // k and v need no gradient
  const int64_t kv_off = int64_t(b) * p.Tk * p.ldkv + int64_t(h) * D;
#pragma unroll
  for (int i = 0; i < kAcc; i += 2) {
    const int key = key_of[(i / 2) % 2], col = 8 * (i / 4) + 2 * t;
    if (key < p.Tk) {
      sts32(o.dk + kv_off + int64_t(key) * p.ldkv + col, pack_float2(dk[i] * scale, dk[i + 1] * scale));
      sts32(o.dv + kv_off + int64_t(key) * p.ldkv + col, pack_float2(dv[i], dv[i + 1]));
    }
  }
}

// Three launches on one stream as launch_bwd's: launch_bwd_prep, this kernel, launch_bwd_dq.
template <int D>
void launch_bwd_sm90(const Problem& p, int64_t B, const bf16raw* dout, const bf16raw* out, const float* lse,
                     float* scratch, bf16raw* dq, bf16raw* dk, bf16raw* dv, bool deterministic, cudaStream_t s) {
  using Tile = Sm90BwdTile<D>;
  const int64_t C = int64_t(p.H) * D;
  const BwdPrep prep = launch_bwd_prep<D>(p, B, dout, out, scratch, dk, dv, deterministic, s);
  const CUtensorMap mq = attention_tensor_map(p.q, B, p.Tq, p.ldq, C, 64, Tile::kBr, CU_TENSOR_MAP_SWIZZLE_128B);
  const CUtensorMap mk = attention_tensor_map(p.k, B, p.Tk, p.ldkv, C, 64, Tile::kBc, CU_TENSOR_MAP_SWIZZLE_128B);
  const CUtensorMap mv = attention_tensor_map(p.v, B, p.Tk, p.ldkv, C, 64, Tile::kBc, CU_TENSOR_MAP_SWIZZLE_128B);
  const CUtensorMap mdo = attention_tensor_map(dout, B, p.Tq, C, C, 64, Tile::kBr, CU_TENSOR_MAP_SWIZZLE_128B);
  const float scale = 1.f / sqrtf(float(D));
  const dim3 grid(unsigned(ceil_div(p.Tk, Tile::kBc)), unsigned(B * p.H));
  with_bool(p.doc_start != nullptr, [&](auto doc) {
    allow_dynamic_smem(attention_bwd_sm90_kernel<D, decltype(doc)::value>, Tile::kSmemBytes);
    LOOM_LAUNCH((attention_bwd_sm90_kernel<D, decltype(doc)::value>), grid, Tile::kThreads, Tile::kSmemBytes, s, mq,
                mk, mv, mdo, p, lse, prep.delta, prep.out, scale * kLog2e, scale);
  });
  launch_bwd_dq(p, B, D, prep.out.dq_acc, dq, s);
}
