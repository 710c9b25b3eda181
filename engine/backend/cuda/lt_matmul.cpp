// lt_matmul.cpp: the cuBLASLt plan cache (lt_matmul.h). bf16 or f32 operands, f32 compute and
// scale type; the heuristic's first algorithm within the workspace, once per key.
#include "engine/backend/cuda/lt_matmul.h"

#include <cuda_runtime.h>

#include "kernels/common/cuda_check.h"

namespace loom {

LtMatmul::LtMatmul() {
  CUBLAS_CHECK(cublasLtCreate(&lt_));
  CUDA_CHECK(cudaMalloc(&workspace_, kWorkspaceBytes));
}

LtMatmul::~LtMatmul() {
  for (auto& [key, p] : plans_) {
    cublasLtMatmulDescDestroy(p.op);
    cublasLtMatrixLayoutDestroy(p.a);
    cublasLtMatrixLayoutDestroy(p.b);
    cublasLtMatrixLayoutDestroy(p.c);
  }
  cudaFree(workspace_);  // synchronizes the device: no product still reads it
  cublasLtDestroy(lt_);
}

LtMatmul::Plan LtMatmul::make_plan(cublasLtHandle_t lt, const LtProduct& p) {
  Plan plan;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t opa = p.ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = p.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
  if (p.epilogue != LtEpilogue::None) {
    const cublasLtEpilogue_t epi = p.epilogue == LtEpilogue::Bias          ? CUBLASLT_EPILOGUE_BIAS
                                   : p.epilogue == LtEpilogue::GeluAuxBias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS
                                                                           : CUBLASLT_EPILOGUE_GELU_AUX;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi));
  }
  if (p.epilogue == LtEpilogue::Bias || p.epilogue == LtEpilogue::GeluAuxBias) {
    const cudaDataType_t bt = CUDA_R_16BF;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt));
  }
  if (p.epilogue == LtEpilogue::GeluAux || p.epilogue == LtEpilogue::GeluAuxBias) {
    const int64_t ld = p.ldc;
    const cudaDataType_t at = CUDA_R_16BF;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, sizeof ld));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE, &at, sizeof at));
  }
  // cuBLASLt layouts are (rows, cols, ld) of the stored, untransposed matrix.
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.a, p.a_type, p.ta ? p.k : p.m, p.ta ? p.m : p.k, p.lda));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.b, p.b_type, p.tb ? p.n : p.k, p.tb ? p.k : p.n, p.ldb));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan.c, p.c_type, p.m, p.n, p.ldc));
  cublasLtMatmulPreference_t pref = nullptr;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const size_t ws = kWorkspaceBytes;
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
  cublasLtMatmulHeuristicResult_t h{};
  int found = 0;
  CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(lt, plan.op, plan.a, plan.b, plan.c, plan.c, pref, 1, &h, &found));
  cublasLtMatmulPreferenceDestroy(pref);
  LOOM_CHECK(found > 0, "cuBLASLt has no algorithm for ", p.m, "x", p.n, "x", p.k);
  plan.algo = h.algo;
  return plan;
}

LtMatmul::Plan& LtMatmul::plan(const LtProduct& p) {
  const Key key{p.ta, p.tb, p.m, p.n, p.k, p.lda, p.ldb, p.ldc, p.a_type, p.b_type, p.c_type, p.epilogue, p.beta};
  auto it = plans_.find(key);
  if (it == plans_.end()) it = plans_.emplace(key, make_plan(lt_, p)).first;
  return it->second;
}

void LtMatmul::run(const LtProduct& p, cudaStream_t s) {
  const bool has_bias = p.epilogue == LtEpilogue::Bias || p.epilogue == LtEpilogue::GeluAuxBias;
  const bool has_aux = p.epilogue == LtEpilogue::GeluAux || p.epilogue == LtEpilogue::GeluAuxBias;
  LOOM_CHECK(!has_bias || p.bias, "LtMatmul: the epilogue needs a bias");
  LOOM_CHECK(!has_aux || p.aux, "LtMatmul: the epilogue needs an aux buffer");
  Plan& plan = this->plan(p);
  // The epilogue's pointers change from call to call; the rest of the descriptor is the key's.
  if (has_bias)
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &p.bias, sizeof p.bias));
  if (has_aux)
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(plan.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &p.aux, sizeof p.aux));
  CUBLAS_CHECK(cublasLtMatmul(lt_, plan.op, &p.alpha, p.A, plan.a, p.B, plan.b, &p.beta, p.C, plan.c, p.C, plan.c,
                              &plan.algo, workspace_, kWorkspaceBytes, s));
}

}  // namespace loom
