// attention_sm90.cuh: the attention forward for sm_90a (H100/H200), warp-specialised in the
// FlashAttention-3 manner, included by attention.cu inside its anonymous namespace (it uses
// that file's Problem, key_len_of, exp2_approx, quad_max2/quad_sum2 and pack_float2). The
// mma.sync kernel of attention.cu stays the sm_80 path and the reference design; the launcher
// picks this one on sm_90 devices (attention.cu, fwd_path).
//
// A block owns kBr = 128 queries of one (b, h) and has three warpgroups:
//  - warpgroup 0, the producer: one thread issues TMA loads of the Q tile (once) and of each
//    K/V tile into a kStages-deep ring of shared-memory stages; then the whole warpgroup turns
//    the stage's V (rows = keys) into V^T (rows = head dims), the K-major layout wgmma's B
//    operand needs, zeroing keys past the key length (0 * NaN would poison P V);
//  - warpgroups 1 and 2, the consumers, 64 query rows each: S = Q K^T and O += P V with
//    wgmma (Q and K through descriptors, P from registers: the S accumulators, packed, are
//    the A fragment), the online softmax on the accumulators in between.
// Each stage has three mbarriers: `loaded` (TMA bytes landed), `full` (V^T written: the 128
// producer threads arrive), `empty` (both consumers done with it: their 256 threads arrive).
// setmaxnreg moves registers from the producer (40) to the consumers (232), and the two
// consumers take turns issuing their S products (ping-pong, named barriers 1 and 2).
// Q and K are loaded with the widest swizzle their rows allow (128B at D >= 64), V^T is
// written in the 128B-swizzled layout by the producer itself; docs/kernels_attention.md has
// the design and its roofline estimate.
//
// Tiles skipped as in the mma.sync kernel: key tiles past the causal diagonal or the key
// length and before the block's first document start are never loaded; a consumer skips the
// products of a loaded tile that none of its rows sees (it still releases the stage).

template <int D>
struct Sm90FwdTile {
  static constexpr int kConsumers = 2, kThreads = 128 * (1 + kConsumers);
  static constexpr int kBr = 64 * kConsumers, kBc = 64, kStages = 2;
  // Q and K: rows of W bytes (a box per W/2 columns), W-byte swizzle.
  static constexpr int kW = 2 * D < 128 ? 2 * D : 128;
  static constexpr CUtensorMapSwizzle kSwizzle = kW == 128  ? CU_TENSOR_MAP_SWIZZLE_128B
                                                 : kW == 64 ? CU_TENSOR_MAP_SWIZZLE_64B
                                                            : CU_TENSOR_MAP_SWIZZLE_32B;
  static constexpr int kQBytes = kBr * D * 2, kTileBytes = kBc * D * 2;
  // A stage: K (swizzled), V as loaded (no swizzle), V^T (128B swizzle: kBc keys = 128 bytes).
  static constexpr int kStageBytes = 3 * kTileBytes;
  static constexpr size_t kSmemBytes = 1024 + size_t(kQBytes) + size_t(kStages) * kStageBytes;  // + alignment slack
  static_assert(kBc * 2 == 128, "V^T rows are one 128-byte swizzle row");
  static_assert(kSmemBytes <= smem_per_block_limit(900), "attention sm90 forward: the ring exceeds shared memory");
  static_assert(valid_block(kThreads));
};

// The mbarriers of a producer/consumer ring, initialised by thread 0 and published to the
// block: `once` (one arrival + tx: the tiles loaded once per block), and per stage `loaded`
// (one arrival + tx), `full` (the 128 producer threads) and `empty` (every consumer thread).
template <int kStages>
__device__ __forceinline__ void init_ring_barriers(uint64_t* once, uint64_t (&loaded)[kStages],
                                                   uint64_t (&full)[kStages], uint64_t (&empty)[kStages],
                                                   int consumers) {
  namespace hp = ::loom::hopper;
  if (threadIdx.x == 0) {
    hp::mbarrier_init(once, 1);
    for (int s = 0; s < kStages; ++s) {
      hp::mbarrier_init(&loaded[s], 1);
      hp::mbarrier_init(&full[s], 128);
      hp::mbarrier_init(&empty[s], 128 * consumers);
    }
    hp::fence_barrier_init();
  }
  __syncthreads();
}

// 128B swizzle of a byte offset from a 1024-aligned base (PTX ISA "Shared Memory Matrix
// Layout": 16-byte chunk bits 4-6 XOR row bits 7-9), for the V^T tile the producer writes.
__device__ __forceinline__ uint32_t swizzle_128b(uint32_t a) { return a ^ (((a >> 7) & 7u) << 4); }

template <int D, bool kDoc>
__global__ void __launch_bounds__(Sm90FwdTile<D>::kThreads, 1)
    attention_fwd_sm90_kernel(const __grid_constant__ CUtensorMap map_q, const __grid_constant__ CUtensorMap map_k,
                              const __grid_constant__ CUtensorMap map_v, const Problem p, bf16raw* __restrict__ out,
                              float* __restrict__ lse, float scale_log2) {
  namespace hp = ::loom::hopper;
  using Tile = Sm90FwdTile<D>;
  constexpr int kBr = Tile::kBr, kBc = Tile::kBc, kStages = Tile::kStages, kW = Tile::kW;
  constexpr int kS = kBc / 2, kO = D / 2;  // accumulator floats a thread: S and O
  LOOM_DYNAMIC_SMEM(unsigned char, raw_smem);
  __shared__ __align__(8) uint64_t bar_q, loaded[kStages], full[kStages], empty[kStages];
  unsigned char* smem = hp::align_smem(raw_smem, 1024);
  unsigned char* sQ = smem;  // D*2/kW boxes of [kBr][kW bytes]
  auto stage_k = [&](int s) { return smem + Tile::kQBytes + s * Tile::kStageBytes; };
  auto stage_v = [&](int s) { return stage_k(s) + Tile::kTileBytes; };   // [kBc][D] bf16
  auto stage_vt = [&](int s) { return stage_v(s) + Tile::kTileBytes; };  // [D][kBc], 128B swizzle

  const int H = p.H, C = H * D, T = p.Tq;
  const int q0 = int(gridDim.x - 1 - blockIdx.x) * kBr;  // heaviest (causal) tiles first
  const int bh = int(blockIdx.y), b = bh / H, h = bh % H;
  const bool causal = p.causal;
  const int len = key_len_of(p, b), last = len - 1;
  const int kv_end = causal ? min(q0 + kBr, len) : len;
  const int n_kb = (kv_end + kBc - 1) / kBc;
  const int32_t* doc = kDoc ? p.doc_start + int64_t(b) * T : nullptr;
  auto doc_of = [&](int row) { return doc ? doc[min(row, T - 1)] : 0; };
  const int j_begin = doc_of(q0) / kBc;
  const int tid = int(threadIdx.x), wg = tid / 128;

  init_ring_barriers(&bar_q, loaded, full, empty, Tile::kConsumers);

  if (wg == 0) {
    // ---- producer
    hp::setmaxnreg_dec<40>();
    if (tid == 0) {
      hp::mbarrier_arrive_expect_tx(&bar_q, Tile::kQBytes);
      for (int box = 0; box < 2 * D / kW; ++box)
        hp::tma_load<3>(sQ + box * kBr * kW, &map_q, &bar_q, {h * D + box * kW / 2, q0, b});
    }
    for (int j = j_begin; j < n_kb; ++j) {
      const int it = j - j_begin, s = it % kStages;
      const uint32_t ph = uint32_t(it / kStages) & 1u;
      const int k0 = j * kBc;
      if (tid == 0) {
        hp::mbarrier_wait_parity(&empty[s], ph ^ 1u);  // a fresh barrier passes parity 1
        hp::mbarrier_arrive_expect_tx(&loaded[s], 2 * Tile::kTileBytes);
        for (int box = 0; box < 2 * D / kW; ++box)
          hp::tma_load<3>(stage_k(s) + box * kBc * kW, &map_k, &loaded[s], {h * D + box * kW / 2, k0, b});
        hp::tma_load<3>(stage_v(s), &map_v, &loaded[s], {h * D, k0, b});
      }
      hp::mbarrier_wait_parity(&loaded[s], ph);
      // V^T(d, key) at (d/8)*1024 + (d%8)*128 + 2*key, swizzled; a thread moves key pairs so
      // that each store is 32 bits.
      const bf16raw* v = reinterpret_cast<const bf16raw*>(stage_v(s));
      unsigned char* vt = stage_vt(s);
      for (int e = tid; e < D * kBc / 2; e += 128) {
        const int d = e % D, key = 2 * (e / D);
        const bool ok0 = k0 + key < len, ok1 = k0 + key + 1 < len;
        const bf16raw zero = from_float<bf16raw>(0.f);
        __nv_bfloat162 pair;
        pair.x = ok0 ? v[key * D + d] : zero;
        pair.y = ok1 ? v[(key + 1) * D + d] : zero;
        const uint32_t a = uint32_t((d / 8) * 1024 + (d % 8) * 128 + 2 * key);
        uint32_t bits;
        memcpy(&bits, &pair, 4);
        sts32(reinterpret_cast<bf16raw*>(vt + swizzle_128b(a)), bits);
      }
      hp::fence_proxy_async_shared();  // the generic-proxy writes, visible to wgmma
      hp::mbarrier_arrive(&full[s]);
    }
    return;
  }

  // ---- consumers: warpgroup c owns rows q0 + 64c .. q0 + 64c + 63
  hp::setmaxnreg_inc<232>();
  const int c = wg - 1, w = (tid % 128) / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const int wg_row0 = q0 + 64 * c, wg_last_row = wg_row0 + 63;
  const int row_of[2] = {wg_row0 + 16 * w + g, wg_row0 + 16 * w + g + 8};  // this thread's two rows
  const int wg_lo = doc_of(wg_row0), wg_hi = doc_of(wg_last_row);
  const int lo[2] = {doc_of(row_of[0]), doc_of(row_of[1])};
  // The smallest last key of this warpgroup's rows: tiles past it need the mask.
  const int warp_last = causal ? min(wg_row0, last) : last;

  float o[kO], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
#pragma unroll
  for (int i = 0; i < kO; ++i) o[i] = 0.f;
  hp::mbarrier_wait_parity(&bar_q, 0);
  const unsigned char* q_rows = sQ + 64 * c * kW;

  // Ping-pong: the consumers take turns issuing S = Q K^T (named barriers 1 and 2, one per
  // consumer, 256 threads: this warpgroup's sync meets the other's arrive), so that one's
  // softmax runs while the other's product does. The second consumer opens the first turn (the
  // first consumer's); the last turn is not passed on, which keeps every barrier's arrivals and
  // syncs paired.
  const int n_it = n_kb - j_begin;
  const unsigned my_turn = 1u + unsigned(c), other_turn = 2u - unsigned(c);
  if (c == 1 && n_it > 0) hp::named_barrier_arrive(other_turn, 256);
  for (int j = j_begin; j < n_kb; ++j) {
    const int it = j - j_begin, s = it % kStages;
    const uint32_t ph = uint32_t(it / kStages) & 1u;
    const int k0 = j * kBc;
    hp::mbarrier_wait_parity(&full[s], ph);
    const bool sees = (!causal || k0 <= wg_last_row) && k0 + kBc > wg_lo;
    float sacc[kS];
    hp::named_barrier_sync(my_turn, 256);
    if (sees) {
      // S = Q K^T: D/16 k-steps of 32 bytes inside the W-byte rows, a box every kW bytes.
      hp::wgmma_fence();
#pragma unroll
      for (int kt = 0; kt < D / 16; ++kt) {
        const int box = kt * 32 / kW, off = kt * 32 % kW;
        hp::wgmma_ss<kBc, __nv_bfloat16>(
            sacc, hp::make_smem_desc(q_rows + box * kBr * kW + off, Tile::kSwizzle, 16, 8 * kW),
            hp::make_smem_desc(stage_k(s) + box * kBc * kW + off, Tile::kSwizzle, 16, 8 * kW), kt > 0);
      }
      hp::wgmma_commit_group();
    }
    if (c == 0 || it + 1 < n_it) hp::named_barrier_arrive(other_turn, 256);
    if (sees) {
      hp::wgmma_wait_group<0>();

      // d[i]: row 16w + g + 8 * ((i / 2) % 2), column 8 * (i / 4) + 2t + i % 2 (PTX ISA wgmma
      // .m64nNk16 D fragment). Masks and the online softmax as in attention_fwd_kernel.
      const bool edge = k0 + kBc - 1 > warp_last;
      const bool doc_edge = k0 < wg_hi;
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int i = 0; i < kS; ++i) {
        const int r = (i / 2) % 2, key = k0 + 8 * (i / 4) + 2 * t + i % 2;
        float x = sacc[i] * scale_log2;
        if ((edge && key > (causal ? min(row_of[r], last) : last)) || (doc_edge && key < lo[r])) x = -INFINITY;
        sacc[i] = x;
        mx[r] = fmaxf(mx[r], x);
      }
      quad_max2(mx[0], mx[1]);
      float base[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const float m_new = fmaxf(m[r], mx[r]);
        base[r] = m_new == -INFINITY ? 0.f : m_new;
        const float alpha = exp2_approx(m[r] - base[r]);
        m[r] = m_new;
        l[r] *= alpha;
#pragma unroll
        for (int i = 0; i < kO; ++i)
          if ((i / 2) % 2 == r) o[i] *= alpha;
      }
      // P as the A fragments of P V: register k of k-step kk holds d[8kk + 2k], d[8kk + 2k + 1].
      uint32_t pa[kBc / 16][4];
#pragma unroll
      for (int i = 0; i < kS; ++i) {
        const float pv = exp2_approx(sacc[i] - base[(i / 2) % 2]);
        l[(i / 2) % 2] += pv;
        sacc[i] = pv;
      }
#pragma unroll
      for (int kk = 0; kk < kBc / 16; ++kk)
#pragma unroll
        for (int k = 0; k < 4; ++k) pa[kk][k] = pack_float2(sacc[8 * kk + 2 * k], sacc[8 * kk + 2 * k + 1]);

      // O += P V: B = V^T, K-major (rows = head dims, 64 keys = one 128-byte row).
      hp::wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kBc / 16; ++kk)
        hp::wgmma_rs<D, __nv_bfloat16>(o, pa[kk], hp::make_smem_desc(stage_vt(s) + kk * 32, CU_TENSOR_MAP_SWIZZLE_128B, 16, 1024), 1);
      hp::wgmma_commit_group();
      hp::wgmma_wait_group<0>();  // the stage is read to the end before it is released
    }
    hp::mbarrier_arrive(&empty[s]);
  }

  // Epilogue: O / l as bf16 pairs straight from the accumulators, lse in natural log.
  quad_sum2(l[0], l[1]);
  bf16raw* o_dst = out + int64_t(b) * T * C + int64_t(h) * D;
#pragma unroll
  for (int i = 0; i < kO; i += 2) {
    const int r = (i / 2) % 2, row = row_of[r], col = 8 * (i / 4) + 2 * t;
    const float inv = 1.f / l[r];
    if (row < T) sts32(o_dst + int64_t(row) * C + col, pack_float2(o[i] * inv, o[i + 1] * inv));
  }
  if (t == 0)
#pragma unroll
    for (int r = 0; r < 2; ++r)
      if (row_of[r] < T) lse[int64_t(bh) * T + row_of[r]] = (m[r] + log2f(l[r])) * kLn2;
}

// A 3-D tensor map over rows of a [B, rows, ld] bf16 tensor, columns [0, C) from `base`
// (q, k or v's first column): box `box_cols` x `box_rows` x 1. Rows past `rows` read as zeros.
CUtensorMap attention_tensor_map(const bf16raw* base, int64_t B, int64_t rows, int64_t ld, int64_t C, int box_cols,
                                 int box_rows, CUtensorMapSwizzle swizzle) {
  alignas(64) CUtensorMap map;
  const cuuint64_t dims[3] = {cuuint64_t(C), cuuint64_t(rows), cuuint64_t(B)};
  const cuuint64_t strides[2] = {cuuint64_t(ld) * 2, cuuint64_t(rows * ld) * 2};
  const cuuint32_t box[3] = {cuuint32_t(box_cols), cuuint32_t(box_rows), 1}, ones[3] = {1, 1, 1};
  const CUresult r = ::loom::hopper::encode_tensor_map_tiled(
      &map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<bf16raw*>(base), dims, strides, box, ones,
      CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  LOOM_CHECK(r == CUDA_SUCCESS, "attention: cuTensorMapEncodeTiled failed (", int(r), ")");
  return map;
}

template <int D>
void launch_fwd_sm90(const Problem& p, int64_t B, bf16raw* out, float* lse, cudaStream_t s) {
  using Tile = Sm90FwdTile<D>;
  const CUtensorMap mq = attention_tensor_map(p.q, B, p.Tq, p.ldq, int64_t(p.H) * D, Tile::kW / 2, Tile::kBr, Tile::kSwizzle);
  const CUtensorMap mk = attention_tensor_map(p.k, B, p.Tk, p.ldkv, int64_t(p.H) * D, Tile::kW / 2, Tile::kBc, Tile::kSwizzle);
  const CUtensorMap mv = attention_tensor_map(p.v, B, p.Tk, p.ldkv, int64_t(p.H) * D, D, Tile::kBc, CU_TENSOR_MAP_SWIZZLE_NONE);
  const dim3 grid(unsigned(ceil_div(p.Tq, Tile::kBr)), unsigned(B * p.H));
  const float scale_log2 = kLog2e / sqrtf(float(D));
  with_bool(p.doc_start != nullptr, [&](auto doc) {
    allow_dynamic_smem(attention_fwd_sm90_kernel<D, decltype(doc)::value>, Tile::kSmemBytes);
    LOOM_LAUNCH((attention_fwd_sm90_kernel<D, decltype(doc)::value>), grid, Tile::kThreads, Tile::kSmemBytes, s, mq,
                mk, mv, p, out, lse, scale_log2);
  });
}
