// checkpoint_fuzz.cpp: load_checkpoint (model metadata, tensors against the model, optimizer
// state, state.json) on a checkpoint folder made of the input's four parts: model.safetensors,
// optim.safetensors, state.json, config.toml. An accepted checkpoint must then give what
// `loom sample` and `--resume` take from it next: its tokenizer, and a counting kind's tables.
#include "engine/data/tokenizer.h"
#include "fuzz_support.h"
#include "launch/run/checkpoint.h"
#include "models/model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loom;
  const std::string dir =
      fuzz::put_folder(data, size, "ck", {"model.safetensors", "optim.safetensors", "state.json", "config.toml"});
  CheckpointData ck;
  if (!fuzz::accepts([&] { ck = load_checkpoint(dir, true); })) return 0;
  fuzz::require(static_cast<int64_t>(ck.params.size()) == count_params(ck.model), "params do not fit the model");
  // gpt2 would read GPT-2's vocabulary files: the gpt2_vocab harness covers those.
  if (ck.tokenizer != "gpt2")
    fuzz::require(fuzz::accepts([&] { make_tokenizer(ck.tokenizer); }), "an accepted checkpoint's tokenizer fails");
  const ModelKind& kind = model_kind(ck.model.kind);
  if (kind.counts()) fuzz::accepts([&] { kind.load_counts(ck.counts, "fuzz checkpoint"); });
  return 0;
}
