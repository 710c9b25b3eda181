// memory_report.h: what a training run of a graph kind holds in memory, per rank and by
// category, whether that fits the device, and the largest micro-batch that would. `loom train`
// prints the report at start and stops a run that cannot fit before it allocates anything,
// with one line saying what to change; `loom plan` prints the same report for a device it need
// not have. Both go through these functions, so their numbers agree.
//
// The categories follow what the gradient learner allocates (gradient_learner.cpp): the weights
// graphs read (DeviceWeights: with mixed precision a bf16 working copy beside the f32 master
// weights), the flat f32 gradients of the trainable prefix, AdamWState's moments (this rank's
// shard under ZeRO-1), the training graph's arena at its peak (engine/graph/planner.h), and the
// workspace: the validation graph's arena, both graphs' input buffers, the weight-decay mask,
// ZeRO-1's gather buffer at checkpoints, the matrix-product library's workspace on a GPU and,
// on the CPU, where the device is the host, the checkpoint's host copies of weights and moments.
// Not counted: the CUDA backend's kernel scratch (grown to the largest an op asks for; at most
// attention backward's B*T*C floats) and NCCL's buffers.
#pragma once
#include <string>

#include "engine/backend/backend.h"
#include "launch/run/config.h"

namespace loom {

// The device a run is planned for: what one rank of it may take.
struct MemoryTarget {
  std::string device;              // for reports: "cpu", "NVIDIA H200", ...
  std::string free_what;           // where free_bytes comes from, for reports
  DType float_dtype = DType::F32;  // activations and working weights (bf16 on a GPU)
  bool host = true;                // the device's memory is the host's (CPU, the emulator)
  double library_workspace = 0;    // bytes the matrix-product library holds (cuBLASLt on a GPU)
  double free_bytes = 0;           // what one rank may take
  int world = 1;                   // ranks, one device each
  bool zero = false;               // dist.zero = 1 (shards the AdamW moments when world > 1)
};
// The device of backend `be` now (its free memory) for a run of `world` ranks. On the host the
// ranks of one machine share MemAvailable, so each may take its world-th part.
MemoryTarget memory_target(Backend& be, int world, bool zero);
// A device by `loom plan --device` key: "cpu" (this host, measured now) or a GPU of the peak
// table (engine/backend/peak.h: its memory less the CUDA context). UserError listing the keys
// when unknown.
MemoryTarget memory_target(const std::string& device_key, int world, bool zero);

// Bytes on one rank.
struct MemoryUse {
  double weights = 0;      // what the graphs read: the bf16 working copy with mixed precision, else the f32 weights
  double master = 0;       // f32 master weights beside a working copy; 0 when the weights are the master copy
  double gradients = 0;    // f32, trainable parameters
  double moments = 0;      // AdamW m and v, f32 (this rank's shard under ZeRO-1)
  double activations = 0;  // the training arena at its peak
  double activations_no_reuse = 0;  // the same values, each in its own bytes
  double eval_arena = 0, inputs = 0, decay_mask = 0, gather = 0, library = 0, snapshot = 0;  // the workspace
  double workspace() const { return eval_arena + inputs + decay_mask + gather + library + snapshot; }
  double total() const { return weights + master + gradients + moments + activations + workspace(); }
};
// From a run's graphs (Train and Eval at the run's per-rank micro-batch).
MemoryUse memory_use(const Graph& train, const Graph& eval, const MemoryTarget& t);
// Builds the graphs of `model` (vocab resolved) at per-rank micro-batch `batch` with `recompute`.
MemoryUse memory_use(const ModelConfig& model, int batch, Recompute recompute, const MemoryTarget& t);
// The training arena alone (the activations line's comparison).
double activation_bytes(const ModelConfig& model, int batch, Recompute recompute, DType float_dtype);
// The largest per-rank micro-batch in [1, cap] whose run fits t.free_bytes; 0 if none does.
int largest_micro_batch(const ModelConfig& model, Recompute recompute, const MemoryTarget& t, int cap);
// The per-rank micro-batch of `cfg` on `world` ranks; UserError when the ranks do not divide it.
int per_rank_batch(const Config& cfg, int world);

// "12.3 GiB", "512.0 MiB", "64.0 KiB", "12 B".
std::string bytes_str(double bytes);

// The report for `cfg` (model.vocab resolved) at its per-rank micro-batch and train.recompute:
// a headline, one line a category, the total against t.free_bytes. For kinds that have
// segments the activations line also gives the arena at the other recompute setting (block
// when the run recomputes nothing, else none).
std::string memory_report(const Config& cfg, const MemoryUse& use, const MemoryTarget& t);
// What would make a run that does not fit t.free_bytes fit -- the largest micro-batch,
// recomputation, ZeRO-1, more GPUs, each computed -- as "train.batch_size = 8 with
// train.grad_accum = 2, or train.recompute = block"; "" when `use` fits.
std::string fit_fixes(const Config& cfg, const MemoryUse& use, const MemoryTarget& t);
// Throws a one-line UserError with the sizes and fit_fixes unless `use` fits t.free_bytes.
void require_fits(const Config& cfg, const MemoryUse& use, const MemoryTarget& t);

}  // namespace loom
