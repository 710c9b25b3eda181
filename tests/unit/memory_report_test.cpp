// memory_report_test.cpp: the memory report behind `loom train`'s start and `loom plan`
// (launch/run/memory_report.h): each category is the size of the buffer the gradient learner
// allocates, the largest micro-batch is the last that fits (and grows with recomputation), a
// run that does not fit names the fixes that were computed to fit, and `--device` keys.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/backend/peak.h"
#include "engine/graph/planner.h"
#include "launch/run/memory_report.h"
#include "launch/run/plan.h"
#include "tests/support/helpers.h"

namespace loom {
namespace {

using test::expect_user_error;

ModelConfig small_gpt() {
  ModelConfig m;  // a GPT (the default kind), two layers of width 32
  m.n_layer = m.n_head = 2;
  m.d_model = m.seq_len = 32;
  m.vocab = 61;
  return m;
}

MemoryTarget host_target(double free_bytes) {
  MemoryTarget t;
  t.device = "test host";
  t.free_what = "set by the test";
  t.free_bytes = free_bytes;
  return t;
}

TEST(MemoryReport, CategoriesAreTheLearnersBuffers) {
  const ModelConfig m = small_gpt();
  const double n = static_cast<double>(count_params(m));
  const MemoryUse u = memory_use(m, 4, Recompute::None, host_target(1e15));
  EXPECT_EQ(u.weights, 4 * n);  // the f32 weights are the master copy
  EXPECT_EQ(u.master, 0);
  EXPECT_EQ(u.gradients, 4 * n);
  EXPECT_EQ(u.moments, 8 * n);
  EXPECT_EQ(u.decay_mask, n);
  EXPECT_EQ(u.snapshot, 12 * n);  // the checkpoint's host copies: weights, m and v
  EXPECT_EQ(u.gather, 0);
  EXPECT_EQ(u.library, 0);
  const ModelGraph tg = build_model(m, GraphMode::Train, 4, m.seq_len, DType::F32);
  EXPECT_EQ(u.activations, static_cast<double>(plan_memory(tg.g).arena_bytes));
  EXPECT_GT(u.activations, 0);
  EXPECT_GT(u.activations_no_reuse, u.activations);
  EXPECT_GT(u.inputs, 0);
  EXPECT_EQ(u.total(), u.weights + u.master + u.gradients + u.moments + u.activations + u.eval_arena + u.inputs +
                           u.decay_mask + u.gather + u.library + u.snapshot);

  // A GPU with bf16 working weights, 8 ranks, ZeRO-1.
  MemoryTarget g = memory_target("h200", 8, true);
  const MemoryUse v = memory_use(m, 4, Recompute::None, g);
  EXPECT_EQ(v.weights, 2 * n);
  EXPECT_EQ(v.master, 4 * n);
  EXPECT_EQ(v.gradients, 4 * n);
  EXPECT_EQ(v.moments, 8 * std::ceil(n / 8));
  EXPECT_EQ(v.gather, 4 * n);
  EXPECT_EQ(v.snapshot, 0);  // host memory, not the GPU's
  EXPECT_EQ(v.library, static_cast<double>(kGpuLibraryWorkspaceBytes));
  EXPECT_LT(v.activations, u.activations);  // bf16 activations
  g.zero = false;
  EXPECT_EQ(memory_use(m, 4, Recompute::None, g).moments, 8 * n);
}

TEST(MemoryReport, LargestMicroBatchIsTheLastThatFitsAndGrowsWithRecompute) {
  const ModelConfig m = small_gpt();
  const MemoryTarget t = host_target(memory_use(m, 6, Recompute::None, host_target(0)).total());
  auto fits = [&](int b, Recompute r) { return memory_use(m, b, r, t).total() <= t.free_bytes; };
  int prev = 0;
  for (Recompute r : kRecomputeSettings) {
    const int b = largest_micro_batch(m, r, t, kPlanBatchCap);
    EXPECT_TRUE(fits(b, r)) << recompute_name(r);
    EXPECT_FALSE(fits(b + 1, r)) << recompute_name(r);
    if (r == Recompute::None) {
      EXPECT_EQ(b, 6);
      prev = b;
    }
    if (r == Recompute::Block) {
      EXPECT_GT(b, prev) << "block keeps less than none";
    }
  }
  EXPECT_EQ(largest_micro_batch(m, Recompute::None, t, 3), 3);  // the cap
  EXPECT_EQ(largest_micro_batch(m, Recompute::None, host_target(1000), kPlanBatchCap), 0);
}

TEST(MemoryReport, RequireFitsNamesTheFixesItComputed) {
  Config cfg;
  cfg.model = small_gpt();
  cfg.train.batch_size = 16;
  const MemoryTarget t = host_target(memory_use(cfg.model, 4, Recompute::None, host_target(0)).total());
  const int b = largest_micro_batch(cfg.model, Recompute::None, t, 15);
  ASSERT_GE(b, 4);
  ASSERT_LT(b, 16);
  const MemoryUse use = memory_use(cfg.model, 16, Recompute::None, t);
  std::vector<std::string> needles = {"needs " + bytes_str(use.total()), "to fit: train.batch_size = " +
                                      std::to_string(b) + " with train.grad_accum = " + std::to_string((16 + b - 1) / b)};
  if (memory_use(cfg.model, 16, Recompute::Block, t).total() <= t.free_bytes) needles.emplace_back("train.recompute = block");
  expect_user_error([&] { require_fits(cfg, use, t); }, needles, "train.batch_size: ");
  EXPECT_NO_THROW(require_fits(cfg, use, host_target(use.total())));

  // On a GPU more devices are an option: the fewest that fit, computed the same way.
  MemoryTarget g = memory_target("h100", 1, false);
  MemoryTarget four = g;
  four.world = 4;
  g.free_bytes = memory_use(cfg.model, 4, Recompute::None, four).total();
  cfg.train.recompute = "block";  // so that recomputation is no fix of its own
  const MemoryUse on_one = memory_use(cfg.model, 16, Recompute::Block, g);
  ASSERT_GT(on_one.total(), g.free_bytes);
  expect_user_error([&] { require_fits(cfg, on_one, g); }, {" GPUs", "NVIDIA H100"}, "train.batch_size: ");
}

TEST(MemoryReport, DeviceKeys) {
  const MemoryTarget h200 = memory_target("H200", 1, false);
  EXPECT_EQ(h200.device, "NVIDIA H200 SXM");
  EXPECT_EQ(h200.free_bytes, 143771.0 * 1048576 - kCudaContextBytes);
  EXPECT_EQ(h200.float_dtype, DType::BF16);
  EXPECT_FALSE(h200.host);
  EXPECT_EQ(memory_target("a100-40gb", 1, false).free_bytes, 40960.0 * 1048576 - kCudaContextBytes);
  const MemoryTarget cpu = memory_target("cpu", 2, false);
  EXPECT_EQ(cpu.float_dtype, DType::F32);
  EXPECT_GT(cpu.free_bytes, 0);
  EXPECT_TRUE(cpu.host);
  for (const std::string& k : gpu_keys()) EXPECT_NE(find_gpu(k), nullptr) << k;
  expect_user_error([] { memory_target("tpu-v5", 1, false); }, {"unknown device 'tpu-v5'", "known: cpu, b200", "h200"},
                    "--device: ");
}

TEST(MemoryReport, BytesAndParameters) {
  EXPECT_EQ(bytes_str(0), "0 B");
  EXPECT_EQ(bytes_str(1023), "1023 B");
  EXPECT_EQ(bytes_str(1536), "1.5 KiB");
  EXPECT_EQ(bytes_str(3.0 * (1 << 30)), "3.0 GiB");
  const ModelConfig m = small_gpt();
  EXPECT_EQ(non_embedding_params(m), count_params(m) - int64_t{61} * 32 - int64_t{32} * 32);  // wte, wpe
}

}  // namespace
}  // namespace loom
