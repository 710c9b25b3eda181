// evaluate.cpp: see evaluate.h.
#include "launch/run/evaluate.h"

#include <functional>
#include <span>

#include "engine/backend/device.h"
#include "engine/optim/weights.h"

namespace loom {

double eval_graph(Executor& ex, const ModelGraph& mg, const Shard& val, uint64_t seed, int batches, Comm& comm) {
  WindowLoader loader(val, mg.T, seed);
  const int B = mg.B;
  std::vector<int32_t> x(static_cast<size_t>(B) * mg.T), y(x.size());
  double total = 0;
  for (int i = 0; i < batches; ++i) {
    loader.next_batch(B * comm.world(), comm.rank(), comm.world(), x.data(), y.data());
    ex.set_input(mg.tokens, x.data(), x.size() * 4);
    ex.set_input(mg.targets, y.data(), y.size() * 4);
    ex.forward();
    total += ex.fetch_f32(mg.loss)[0];
  }
  return comm.allreduce_scalar(total / batches) / comm.world();
}

double eval_counts(const CountingModel& model, const Shard& val, int T, int B, int batches, uint64_t seed) {
  WindowLoader loader(val, T, seed);
  std::vector<int32_t> x(static_cast<size_t>(B) * T), y(x.size());
  double total = 0;
  for (int i = 0; i < batches; ++i) {
    loader.next_batch(B, 0, 1, x.data(), y.data());
    double sum = 0;
#pragma omp parallel for reduction(+ : sum) schedule(static)
    for (int64_t r = 0; r < static_cast<int64_t>(B) * T; ++r) {
      const int64_t row = r / T, t = r % T;
      sum -= model.log_prob(std::span<const int32_t>(x.data() + row * T, static_cast<size_t>(t + 1)), y[r]);
    }
    total += sum / (static_cast<double>(B) * T);
  }
  return total / batches;
}

double evaluate(const ModelConfig& model, const std::string& data_dir, const std::vector<float>& params,
                const StFile& tensors, const std::string& device, int batch, int batches, uint64_t seed) {
  const ModelKind& kind = model_kind(model.kind);
  // The Eval graph on `device` with the weights bound, handed to `run`.
  auto on_graph = [&](const std::function<double(Executor&, const ModelGraph&)>& run) {
    auto be = make_backend(device);
    ModelGraph eg = build_model(model, GraphMode::Eval, batch, model.seq_len, be->float_dtype());
    DeviceWeights w(*be, static_cast<int64_t>(params.size()));
    w.upload(params);
    Executor ex(eg.g, *be);
    ex.bind_params(w.graph_params(), nullptr);
    for (int v : eg.state_in) be->zero(ex.view(v).data, eg.g.values[v].bytes());
    return run(ex, eg);
  };
  SingleComm comm;
  // Pair kinds are evaluated on their val pairs by pair_eval.h (loss, exact match, BLEU, ...).
  LOOM_CHECK(!kind.learns_pairs(), "evaluate: ", model.kind, " learns pairs: use evaluate_pairs");
  DataFolder data = open_data_folder(data_dir);
  LOOM_USER_CHECK(static_cast<int>(data.vocab_size) == model.vocab, data_dir, ": vocabulary ", data.vocab_size,
                  " does not match the checkpoint's ", model.vocab);
  Shard val(data.val_files);
  if (kind.counts()) {
    auto counts = kind.load_counts(tensors, "checkpoint");
    counts->finalize();
    return eval_counts(*counts, val, model.seq_len, batch, batches, seed);
  }
  return on_graph([&](Executor& ex, const ModelGraph& eg) { return eval_graph(ex, eg, val, seed, batches, comm); });
}

}  // namespace loom
