// gpt2_io.h: GPT-2 checkpoints in safetensors <-> loom's gpt parameters.
//
// The names and layouts of the usual GPT-2 files (OpenAI's weights as Hugging Face ships them,
// GPT2Model or GPT2LMHeadModel): an optional "transformer." prefix, "wte.weight"/"wpe.weight",
// per block h.{l}.{ln_1,ln_2}.{weight,bias}, h.{l}.attn.{c_attn,c_proj}.{weight,bias},
// h.{l}.mlp.{c_fc,c_proj}.{weight,bias}, then ln_f. GPT-2's projections are Conv1D modules
// whose weights are stored [in, out]; loom's linear weights are [out, in], so those four
// matrices are transposed both ways. The causal-mask buffers (attn.bias, attn.masked_bias) are
// ignored and lm_head.weight, when present, must equal wte (loom ties the classifier).
// GPT-2 files do not store the head count: it comes from a metadata key, a flag, or GPT-2's
// own 12 for a width of 768.
#pragma once
#include <string>
#include <vector>

#include "engine/io/safetensors.h"
#include "models/model.h"

namespace loom {

// One parameter under both names. transpose: GPT-2 stores it as the transpose of loom's.
struct Gpt2Name {
  std::string loom, gpt2;
  bool transpose = false;
};
// Every parameter of a gpt of n_layer blocks, in loom's layout order, with GPT-2's bare name
// (no "transformer." prefix).
std::vector<Gpt2Name> gpt2_name_map(int n_layer);

struct Gpt2ImportOptions {
  int n_head = 0;         // 0: the file's metadata ("n_head"), else 12 when d_model == 768
  int seq_len = 0;        // 0: wpe's rows; fewer keeps the first seq_len positions
  std::string tokenizer;  // empty: metadata "tokenizer", else gpt2 for 50257 tokens, byte for 256
};

struct Gpt2Model {
  ModelConfig model;
  std::string tokenizer;      // a make_tokenizer spec
  std::vector<float> params;  // flat, in loom's layout (param_layout(model))
};

// Reads a GPT-2 safetensors file (F32, F16 or BF16 tensors, converted to f32). Every problem
// (not safetensors, missing / unknown / misshapen tensor, untied lm_head, unknown head count)
// is a one-line UserError naming the file.
Gpt2Model read_gpt2_safetensors(const std::string& path, const Gpt2ImportOptions& opt);
// loom's gpt parameters as a GPT-2 file in memory: bare GPT-2 names, F32, Conv1D layout, no
// lm_head (tied), metadata format=pt (what Hugging Face expects) plus n_head, n_layer and
// tokenizer so that loom can read its own exports back without flags.
StFile gpt2_safetensors(const ModelConfig& model, const std::string& tokenizer, const std::vector<float>& params);

// `loom import --from gpt2-safetensors`: writes a run folder at out_dir holding one checkpoint
// (step 0, zero AdamW moments, config.toml with the model's shape and a data.path placeholder)
// that `loom sample/eval --checkpoint out_dir` and `loom train --resume` load. out_dir must be
// missing or empty. Returns the checkpoint's step folder.
std::string import_gpt2(const std::string& file, const std::string& out_dir, const Gpt2ImportOptions& opt);
// `loom export --to gpt2-safetensors`: a gpt checkpoint (step, run folder or latest) to a file.
void export_gpt2(const std::string& checkpoint, const std::string& out_file);

// The data.path an imported checkpoint's config carries until fine-tuning names real data.
inline constexpr const char* kImportDataPlaceholder = "<set --data.path>";

}  // namespace loom
