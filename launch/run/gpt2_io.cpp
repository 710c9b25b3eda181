// gpt2_io.cpp: the GPT-2 <-> loom name map, GPT-2 safetensors import and export (see
// gpt2_io.h for the layouts).
//
// Import trusts nothing in the file: every name must be a GPT-2 parameter or one of the
// buffers we knowingly drop, every parameter must be there with the shape the model's width,
// vocabulary and context imply, and the shape itself comes only from the tensors (wte gives
// vocab x d_model, wpe the context, the h.{l} indices the depth). A checkpoint imported and
// exported again is bit-identical for F32 files: the only arithmetic is the exact widening of
// F16 / BF16 values and transposes.
#include "launch/run/gpt2_io.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <utility>

#include "core/check.h"
#include "core/dtype.h"
#include "core/rng.h"
#include "engine/data/bpe.h"
#include "engine/data/tokenizer.h"
#include "engine/io/atomic_file.h"
#include "engine/io/json_guard.h"
#include "models/gpt/gpt.h"
#include "launch/run/checkpoint.h"
#include "launch/run/config.h"

namespace fs = std::filesystem;

namespace loom {

namespace {

constexpr int kGpt2Vocab = 50257;
constexpr const char* kPrefix = "transformer.";

// IEEE half to float, exactly (every half is a float).
float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
  if (exp == 0x1f) {
    u = sign | 0x7f800000u | (man << 13);  // inf / NaN
  } else if (exp != 0) {
    u = sign | ((exp + 112) << 23) | (man << 13);  // rebias 15 -> 127
  } else if (man == 0) {
    u = sign;  // +-0
  } else {     // subnormal: normalise the mantissa
    exp = 113;
    while (!(man & 0x400u)) man <<= 1, --exp;
    u = sign | (exp << 23) | ((man & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// A tensor's values as f32, whatever of F32 / F16 / BF16 it is stored in.
std::vector<float> to_f32(const StTensor& t, const std::string& name, const std::string& path) {
  const size_t n = t.data.size() / std::max<size_t>(1, st_dtype_size(t.dtype));
  std::vector<float> r(n);
  if (t.dtype == "F32") {
    std::memcpy(r.data(), t.data.data(), n * 4);
  } else if (t.dtype == "F16" || t.dtype == "BF16") {
    for (size_t i = 0; i < n; ++i) {
      uint16_t b;
      std::memcpy(&b, t.data.data() + 2 * i, 2);
      r[i] = t.dtype == "F16" ? half_to_float(b) : from_bf16(bf16{b});
    }
  } else {
    user_error(path, ": tensor '", name, "' is ", t.dtype, " (GPT-2 import reads F32, F16 or BF16)");
  }
  return r;
}

std::string shape_text(const std::vector<int64_t>& s) { return shape_str(Shape(s.begin(), s.end())); }

// "h.{l}.rest" -> l, else -1.
int block_index(const std::string& name) {
  if (name.rfind("h.", 0) != 0) return -1;
  const size_t dot = name.find('.', 2);
  if (dot == std::string::npos || dot == 2) return -1;
  int l = 0;
  for (size_t i = 2; i < dot; ++i) {
    if (name[i] < '0' || name[i] > '9' || l > 1000000) return -1;
    l = 10 * l + (name[i] - '0');
  }
  return l;
}

// Buffers of Hugging Face's GPT2Attention (the causal mask and its fill value), not weights.
bool is_ignored_buffer(const std::string& name) {
  const int l = block_index(name);
  if (l < 0) return false;
  const std::string rest = name.substr(name.find('.', 2) + 1);
  return rest == "attn.bias" || rest == "attn.masked_bias";
}

// The tokenizer spec an imported checkpoint carries, checked against its vocabulary.
std::string choose_tokenizer(const std::string& asked, const StFile& f, int vocab, const std::string& path) {
  std::string spec = asked, where = "--tokenizer";
  const bool from_file = spec.empty() && f.metadata.count("tokenizer");
  if (from_file) spec = f.metadata.at("tokenizer"), where = path + ": metadata 'tokenizer'";
  if (spec.empty()) {
    if (vocab == kGpt2Vocab) return "gpt2";
    if (vocab == 256) return "byte";
    user_error(path, ": a vocabulary of ", vocab, " tokens is neither GPT-2's (", kGpt2Vocab,
               ") nor bytes (256); name its tokenizer with --tokenizer NAME (byte, gpt2 or a file from `loom tokenizer "
               "train`)");
  }
  // byte and gpt2 by name: their sizes are known, and gpt2's vocabulary files are only needed
  // once something is encoded. A padded vocabulary (GPT-2's 50257 tokens in 50304 rows, as
  // nanoGPT pads it) is allowed: encoding never produces the extra ids.
  int tok_vocab = 0;
  if (spec == "byte" || spec == "gpt2") {
    tok_vocab = spec == "byte" ? 256 : kGpt2Vocab;
  } else if (from_file) {
    // From the file: only a vocabulary written inline, never a name of a file to go and read.
    LOOM_USER_CHECK(is_inline_tokenizer_spec(spec), where, " is '", brief(spec, 40),
                    "', not byte, gpt2 or an inline BPE vocabulary (pass --tokenizer to name a file)");
    const BpeMerges merges = parse_bpe(spec, where);
    tok_vocab = static_cast<int>(256 + merges.merges.size());
    spec = serialize_bpe(merges);  // the form Tokenizer::spec() gives, as for a file
  } else {
    auto tok = make_tokenizer(spec);
    tok_vocab = tok->vocab_size();
    spec = tok->spec();  // self-contained: a BPE file's text travels inside the checkpoint
  }
  LOOM_USER_CHECK(tok_vocab <= vocab, where, ": the tokenizer has ", tok_vocab, " tokens, more than the ", vocab,
                  " rows of ", path, "'s wte");
  return spec;
}

}  // namespace

std::vector<Gpt2Name> gpt2_name_map(int n_layer) {
  std::vector<Gpt2Name> m = {{"wte", "wte.weight", false}, {"wpe", "wpe.weight", false}};
  for (int l = 0; l < n_layer; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    // In build_gpt's order; true marks the Conv1D weights ([in, out] in GPT-2, [out, in] here).
    static const std::pair<const char*, bool> block[] = {
        {"ln_1.weight", false},       {"ln_1.bias", false},       {"attn.c_attn.weight", true},
        {"attn.c_attn.bias", false},  {"attn.c_proj.weight", true}, {"attn.c_proj.bias", false},
        {"ln_2.weight", false},       {"ln_2.bias", false},       {"mlp.c_fc.weight", true},
        {"mlp.c_fc.bias", false},     {"mlp.c_proj.weight", true}, {"mlp.c_proj.bias", false}};
    for (const auto& [s, conv] : block) m.push_back({p + s, p + s, conv});
  }
  m.push_back({"ln_f.weight", "ln_f.weight", false});
  m.push_back({"ln_f.bias", "ln_f.bias", false});
  return m;
}

Gpt2Model read_gpt2_safetensors(const std::string& path, const Gpt2ImportOptions& opt) {
  const StFile f = read_safetensors(path);

  // Bare names (the "transformer." prefix of GPT2LMHeadModel dropped), buffers set aside.
  std::map<std::string, const StTensor*> by_name;
  const StTensor* lm_head = nullptr;
  int n_layer = 0;
  for (const StTensor& t : f.tensors) {
    std::string n = t.name;
    if (n == "lm_head.weight") {
      lm_head = &t;
      continue;
    }
    if (n.rfind(kPrefix, 0) == 0) n = n.substr(std::strlen(kPrefix));
    if (is_ignored_buffer(n)) continue;
    LOOM_USER_CHECK(by_name.emplace(n, &t).second, path, ": tensor '", n, "' appears twice (with and without '",
                    kPrefix, "')");
    n_layer = std::max(n_layer, block_index(n) + 1);
  }
  LOOM_USER_CHECK(!f.tensors.empty(), path, ": holds no tensors (expected GPT-2 weights)");
  LOOM_USER_CHECK(n_layer <= kMaxLayers, path, ": a block index of ", n_layer - 1, " (at most ", kMaxLayers,
                  " blocks)");
  const auto names = gpt2_name_map(n_layer);
  std::set<std::string> known;
  for (const auto& nm : names) known.insert(nm.gpt2);
  for (const auto& [n, t] : by_name)
    LOOM_USER_CHECK(known.count(n), path, ": unknown tensor '", brief(t->name), "' (not a GPT-2 parameter name)");
  LOOM_USER_CHECK(by_name.count("wte.weight"), path, ": missing tensor 'wte.weight' (not a GPT-2 checkpoint?)");
  LOOM_USER_CHECK(n_layer >= 1, path, ": no transformer blocks (no 'h.0.*' tensors)");
  // The depth is the highest block index the names claim; every block below it must be there
  // before the model is sized from it.
  for (const auto& nm : names)
    LOOM_USER_CHECK(by_name.count(nm.gpt2), path, ": missing tensor '", nm.gpt2, "' (the file names blocks up to h.",
                    n_layer - 1, ")");

  // The shape, from the tensors: wte [vocab, d_model], wpe [positions, d_model].
  const StTensor& wte = *by_name.at("wte.weight");
  LOOM_USER_CHECK(wte.shape.size() == 2 && wte.shape[0] >= 2 && wte.shape[1] >= 1, path, ": tensor '", wte.name,
                  "' has shape ", shape_text(wte.shape), ", expected [vocab, d_model]");
  LOOM_USER_CHECK(by_name.count("wpe.weight"), path, ": missing tensor 'wpe.weight'");
  const StTensor& wpe = *by_name.at("wpe.weight");
  LOOM_USER_CHECK(wpe.shape.size() == 2 && wpe.shape[0] >= 1 && wpe.shape[1] == wte.shape[1], path, ": tensor '",
                  wpe.name, "' has shape ", shape_text(wpe.shape), ", expected [positions, ", wte.shape[1], "]");
  LOOM_USER_CHECK(wte.shape[0] <= (int64_t{1} << 30) && wte.shape[1] <= (int64_t{1} << 20) &&
                      wpe.shape[0] <= (int64_t{1} << 30),
                  path, ": implausible sizes wte ", shape_text(wte.shape), ", wpe ", shape_text(wpe.shape));

  Gpt2Model r;
  ModelConfig& m = r.model;
  m.kind = gpt_kind().name();
  m.n_layer = n_layer;
  m.d_model = static_cast<int>(wte.shape[1]);
  m.vocab = static_cast<int>(wte.shape[0]);
  m.seq_len = static_cast<int>(wpe.shape[0]);
  if (opt.seq_len > 0) {
    LOOM_USER_CHECK(opt.seq_len <= m.seq_len, "--seq-len: ", opt.seq_len, " is longer than the ", m.seq_len,
                    " positions of ", path, "'s wpe");
    m.seq_len = opt.seq_len;
  }
  int meta_heads = metadata_positive_int(f, "n_head", path);  // written by loom export
  if (meta_heads == 0) meta_heads = metadata_positive_int(f, "model.n_head", path);
  m.n_head = opt.n_head > 0 ? opt.n_head : meta_heads > 0 ? meta_heads : m.d_model == 768 ? 12 : 0;
  LOOM_USER_CHECK(m.n_head > 0, path, ": the head count is not stored (GPT-2 files carry no config) and d_model ",
                  m.d_model, " is not GPT-2's 768; pass --n-head N");
  LOOM_USER_CHECK(m.d_model % m.n_head == 0, opt.n_head > 0 ? std::string("--n-head") : path, ": d_model ",
                  m.d_model, " is not a multiple of ", m.n_head, " heads");
  validate_model(m, path);
  r.tokenizer = choose_tokenizer(opt.tokenizer, f, m.vocab, path);

  // Every parameter is checked against the shape loom's model has for it before the flat
  // buffer is allocated (the tensors are already bounded by the file's size), then placed.
  const auto layout = param_layout(m);
  LOOM_CHECK(layout.size() == names.size(), "the GPT-2 name map and build_gpt disagree on the parameter count");
  int64_t total = 0;
  for (size_t i = 0; i < layout.size(); ++i) {
    const ParamInfo& p = layout[i];
    const Gpt2Name& nm = names[i];
    LOOM_CHECK(p.name == nm.loom, "name map out of order at ", p.name, " vs ", nm.loom);
    const StTensor& t = *by_name.at(nm.gpt2);
    std::vector<int64_t> want(p.shape.begin(), p.shape.end());
    if (nm.transpose) std::swap(want[0], want[1]);
    if (nm.loom == "wpe") want[0] = wpe.shape[0];  // the file may hold more positions than kept
    LOOM_USER_CHECK(t.shape == want, path, ": tensor '", brief(t.name), "' has shape ", shape_text(t.shape),
                    ", expected ", shape_text(want), nm.transpose ? " (GPT-2 Conv1D layout [in, out])" : "");
    LOOM_USER_CHECK(t.dtype == "F32" || t.dtype == "F16" || t.dtype == "BF16", path, ": tensor '", brief(t.name),
                    "' is ", t.dtype, " (GPT-2 import reads F32, F16 or BF16)");
    total = std::max(total, p.offset + p.count());
  }
  r.params.assign(total, 0.0f);
  for (size_t i = 0; i < layout.size(); ++i) {
    const ParamInfo& p = layout[i];
    const Gpt2Name& nm = names[i];
    const StTensor& t = *by_name.at(nm.gpt2);
    const std::vector<float> v = to_f32(t, t.name, path);
    float* dst = r.params.data() + p.offset;
    if (nm.transpose) {  // [in, out] -> [out, in]
      const int64_t out = p.shape[0], in = p.shape[1];
      for (int64_t o = 0; o < out; ++o)
        for (int64_t k = 0; k < in; ++k) dst[o * in + k] = v[k * out + o];
    } else {
      std::copy(v.begin(), v.begin() + p.count(), dst);  // wpe: its first seq_len rows
    }
  }
  if (lm_head) {
    const float* w = r.params.data() + layout[0].offset;
    bool same = lm_head->shape == wte.shape;
    if (same) {
      const std::vector<float> v = to_f32(*lm_head, lm_head->name, path);
      same = std::memcmp(v.data(), w, v.size() * 4) == 0;
    }
    LOOM_USER_CHECK(same, path, ": 'lm_head.weight' differs from 'wte.weight' (an untied output head; loom's GPT ties "
                    "the classifier to the token embedding)");
  }
  return r;
}

StFile gpt2_safetensors(const ModelConfig& model, const std::string& tokenizer, const std::vector<float>& params) {
  LOOM_USER_CHECK(find_model_kind(model.kind) == &gpt_kind(), "export: a ", model.kind, " model has no GPT-2 form (only gpt checkpoints)");
  StFile f;
  f.metadata = {{"format", "pt"},
                {"n_head", std::to_string(model.n_head)},
                {"n_layer", std::to_string(model.n_layer)},
                {"tokenizer", tokenizer}};
  const auto layout = param_layout(model);
  const auto names = gpt2_name_map(model.n_layer);
  LOOM_CHECK(layout.size() == names.size(), "the GPT-2 name map and build_gpt disagree on the parameter count");
  for (size_t i = 0; i < layout.size(); ++i) {
    const ParamInfo& p = layout[i];
    LOOM_CHECK(p.name == names[i].loom, "name map out of order at ", p.name, " vs ", names[i].loom);
    StTensor t;
    t.name = names[i].gpt2;
    t.dtype = "F32";
    t.shape.assign(p.shape.begin(), p.shape.end());
    t.data.resize(static_cast<size_t>(p.count()) * 4);
    const float* src = params.data() + p.offset;
    if (names[i].transpose) {  // [out, in] -> [in, out]
      const int64_t out = p.shape[0], in = p.shape[1];
      std::swap(t.shape[0], t.shape[1]);
      std::vector<float> tr(static_cast<size_t>(p.count()));
      for (int64_t o = 0; o < out; ++o)
        for (int64_t k = 0; k < in; ++k) tr[k * out + o] = src[o * in + k];
      std::memcpy(t.data.data(), tr.data(), t.data.size());
    } else {
      std::memcpy(t.data.data(), src, t.data.size());
    }
    f.tensors.push_back(std::move(t));
  }
  return f;
}

std::string import_gpt2(const std::string& file, const std::string& out_dir, const Gpt2ImportOptions& opt) {
  LOOM_USER_CHECK(!out_dir.empty(), "--out: empty path");
  std::error_code ec;
  // Never write into an existing run: its checkpoints and `latest` would be replaced.
  LOOM_USER_CHECK(!fs::exists(out_dir, ec) || (fs::is_directory(out_dir, ec) && fs::is_empty(out_dir, ec)), out_dir,
                  ": already exists and is not an empty folder (import writes a new run folder)");
  Gpt2Model g = read_gpt2_safetensors(file, opt);

  Config cfg;
  cfg.model = g.model;
  cfg.data.path = kImportDataPlaceholder;
  cfg.log.run_dir = fs::absolute(out_dir).lexically_normal().string();
  TrainProgress prog;  // step 0; the loader where a fresh run with this config would start
  prog.loader_rng = Rng(static_cast<uint64_t>(cfg.train.seed) + 1).state();
  const std::vector<float> zeros(g.params.size(), 0.0f);
  const std::string step = save_checkpoint(out_dir, cfg, g.tokenizer, g.params, zeros, zeros, prog, 0);
  // The run folder's own config, as `loom train` leaves one: what fine-tuning starts from.
  write_file_atomic((fs::path(out_dir) / "config.toml").string(), config_to_toml(cfg));
  return step;
}

void export_gpt2(const std::string& checkpoint, const std::string& out_file) {
  LOOM_USER_CHECK(!out_file.empty(), "--out: empty path");
  const CheckpointData ck = load_checkpoint(checkpoint, false);
  LOOM_USER_CHECK(find_model_kind(ck.model.kind) == &gpt_kind(), ck.dir, ": a ", ck.model.kind,
                  " checkpoint has no GPT-2 form (only model.kind gpt exports)");
  if (ck.model.lora_rank > 0) {
    // A LoRA fine-tune exports with its adapters folded into the weights (GPT-2 has no adapters).
    ModelConfig merged;
    const std::vector<float> params = gpt_kind().merge_lora(ck.model, ck.params, &merged);
    write_safetensors(out_file, gpt2_safetensors(merged, ck.tokenizer, params));
    return;
  }
  write_safetensors(out_file, gpt2_safetensors(ck.model, ck.tokenizer, ck.params));
}

}  // namespace loom
