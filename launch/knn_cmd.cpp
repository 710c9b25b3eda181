// knn_cmd.cpp: `loom knn --checkpoint DIR [--data DIR] [--out FILE] [--max-pairs N]`: the kNN
// datastore of a sequence-to-sequence checkpoint (launch/run/knn.h): its decoder's state at
// every target token of the train pairs, teacher-forced, with that token. `loom sample
// --source ... --knn FILE` then mixes the nearest ones into each decoding step.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>

#include "core/check.h"
#include "engine/data/tokenizer.h"
#include "launch/command.h"
#include "launch/run/checkpoint.h"
#include "launch/run/knn.h"
#include "launch/run/progress.h"

namespace loom {

namespace {

class KnnCommand final : public Command {
 public:
  explicit KnnCommand(CLI::App& app)
      : Command(app.add_subcommand("knn", "the kNN datastore of a sequence-to-sequence checkpoint, for sample --knn")) {
    cmd_->add_option("--checkpoint", ckpt_, "checkpoint folder, run folder or its latest")->required();
    cmd_->add_option("--data", data_, "pair folder whose train split it reads (default: the run's data.path)");
    cmd_->add_option("--out", out_, "the datastore (default: knn.safetensors in the checkpoint folder)");
    cmd_->add_option("--max-pairs", o_.max_pairs, "the first N train pairs (0 = all)")->capture_default_str();
    cmd_->add_option("--batch-size", o_.batch, "pairs per batch")->capture_default_str();
    cmd_->add_option("--device", o_.device, "auto | cpu | cuda")->capture_default_str();
  }
  int run() override {
    LOOM_USER_CHECK(o_.batch >= 1, "--batch-size: must be >= 1");
    LOOM_USER_CHECK(o_.max_pairs >= 0, "--max-pairs: must be >= 0 (0 = all)");
    CheckpointData ck = load_checkpoint(ckpt_, false);
    LOOM_USER_CHECK(model_kind(ck.model.kind).learns_pairs(), ckpt_, ": the checkpoint's kind ", ck.model.kind,
                    " does not learn pairs; a kNN datastore is for sequence-to-sequence checkpoints");
    const std::string data = checkpoint_data_path(ck, data_);
    const std::string out = out_.empty() ? ck.dir + "/knn.safetensors" : out_;
    const auto tok = make_tokenizer(ck.tokenizer);
    const auto t0 = std::chrono::steady_clock::now();
    ProgressReport report("train pairs", "loom knn:", "train pairs");
    o_.progress = [&](int64_t done, int64_t total) { report(done, total); };
    const KnnStore store = KnnStore::build(ck.model, ck.params, *tok, data, o_);
    report.finish();
    store.save(out, ck.model, ck.params);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("wrote %s: %lld keys of width %d (every target token of %lld train pairs of %s), %.1f MiB, %.1f s\n"
                "use: loom sample --checkpoint %s --source TEXT --knn %s\n",
                out.c_str(), static_cast<long long>(store.size()), store.dim(), static_cast<long long>(store.pairs()),
                data.c_str(), static_cast<double>(store.size()) * (store.dim() + 1) * 4 / (1 << 20), s,
                ck.dir.c_str(), out.c_str());
    return 0;
  }

 private:
  std::string ckpt_, data_, out_;
  KnnBuildOptions o_;
};

}  // namespace

std::unique_ptr<Command> add_knn_command(CLI::App& app) { return std::make_unique<KnnCommand>(app); }

}  // namespace loom
