// checkpoint.cpp: save / load / resolve checkpoints (see checkpoint.h for the layout).
#include "launch/run/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/check.h"
#include "engine/data/bpe.h"
#include "engine/data/tokenizer.h"
#include "engine/io/atomic_file.h"
#include "engine/io/json_guard.h"
#include "engine/io/safetensors.h"

namespace fs = std::filesystem;

namespace loom {

namespace {

std::string step_name(int64_t step) {
  char b[32];
  std::snprintf(b, sizeof b, "step_%08lld", static_cast<long long>(step));
  return b;
}

// memcpy that allows n == 0 with null pointers (an empty vector's data() may be null, and
// memcpy's arguments must never be).
void copy_bytes(void* dst, const void* src, size_t n) {
  if (n) std::memcpy(dst, src, n);
}

StTensor f32_tensor(const std::string& name, const Shape& shape, const float* data) {
  StTensor t;
  t.name = name;
  t.dtype = "F32";
  t.shape.assign(shape.begin(), shape.end());
  t.data.resize(numel(shape) * 4);
  copy_bytes(t.data.data(), data, t.data.size());
  return t;
}

std::string fmt_double(double v) {
  char b[64];
  std::snprintf(b, sizeof b, "%.17g", v);
  return b;
}

std::map<std::string, std::string> model_metadata(const ModelConfig& m, const std::string& tokenizer, int64_t step) {
  std::map<std::string, std::string> meta = {{"format", "loom"},
          {"model.kind", m.kind},
          {"model.n_layer", std::to_string(m.n_layer)},
          {"model.n_head", std::to_string(m.n_head)},
          {"model.d_model", std::to_string(m.d_model)},
          {"model.d_hidden", std::to_string(m.d_hidden)},
          {"model.context", std::to_string(m.context)},
          {"model.order", std::to_string(m.order)},
          {"lora.rank", std::to_string(m.lora_rank)},
          {"lora.alpha", fmt_double(m.lora_alpha)},
          {"lora.targets", m.lora_targets},
          {"model.seq_len", std::to_string(m.seq_len)},
          {"model.vocab", std::to_string(m.vocab)},
          {"tokenizer", tokenizer},
          {"step", std::to_string(step)}};
  // Only the sequence-to-sequence kinds' checkpoints carry their keys.
  if (model_kind(m.kind).learns_pairs()) {
    meta["model.src_len"] = std::to_string(m.src_len);
    meta["model.n_enc_layer"] = std::to_string(m.n_enc_layer);
    meta["model.n_dec_layer"] = std::to_string(m.n_dec_layer);
    meta["model.tie_embeddings"] = m.tie_embeddings ? "true" : "false";
    meta["model.positions"] = m.positions;
    meta["model.cell"] = m.cell;
    meta["model.bidirectional"] = m.bidirectional ? "true" : "false";
    meta["model.attention"] = m.attention;
  }
  return meta;
}

// A positive int that must be there, in decimal digits and nothing else.
int meta_int(const StFile& f, const std::string& key, const std::string& path) {
  LOOM_USER_CHECK(f.metadata.count(key), path, ": metadata has no '", key, "' (not a loom checkpoint?)");
  return metadata_positive_int(f, key, path);
}

// A non-negative integer that older checkpoints may lack (then 0).
int meta_int0(const StFile& f, const std::string& key, const std::string& path) {
  auto it = f.metadata.find(key);
  if (it == f.metadata.end() || it->second == "0") return 0;
  return meta_int(f, key, path);
}

// state.json and config.toml of a checkpoint: a few hundred bytes each as loom writes them.
std::string read_text(const std::string& path) {
  constexpr uintmax_t kMaxBytes = uintmax_t{1} << 20;
  std::error_code ec;
  const uintmax_t bytes = fs::file_size(path, ec);
  LOOM_USER_CHECK(!ec, path, ": cannot open: ", ec.message());
  LOOM_USER_CHECK(bytes <= kMaxBytes, path, ": ", bytes, " bytes, larger than a checkpoint's file of this kind can be");
  std::ifstream f(path, std::ios::binary);
  LOOM_USER_CHECK(f, path, ": cannot open");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

std::string save_checkpoint(const std::string& run_dir, const Config& cfg, const std::string& tokenizer,
                            const std::vector<float>& params, const std::vector<float>& m,
                            const std::vector<float>& v, const TrainProgress& p, int64_t keep,
                            const CheckpointExtra& extra) {
  const fs::path root(run_dir);
  const fs::path ckdir = root / "checkpoints";
  std::error_code ec;
  fs::create_directories(ckdir, ec);
  LOOM_USER_CHECK(!ec, ckdir.string(), ": cannot create folder: ", ec.message());
  const std::string name = step_name(p.step);
  const fs::path tmp = temp_sibling((ckdir / name).string(), ".tmp-");
  LOOM_USER_CHECK(fs::create_directory(tmp, ec) && !ec, tmp.string(), ": cannot create folder: ",
                  ec ? ec.message() : std::string("it exists"));
  // Whatever fails below (a full disk, say) leaves nothing behind: the previous checkpoint
  // stays whole and the temporary folder with its partial model file goes.
  struct RemoveUnlessCommitted {
    const fs::path& dir;
    bool committed = false;
    ~RemoveUnlessCommitted() {
      std::error_code e;
      if (!committed) fs::remove_all(dir, e);
    }
  } guard{tmp};

  StFile model;
  model.metadata = model_metadata(cfg.model, tokenizer, p.step);
  // Evaluation keeps the mask the model was trained with (the key is absent without one).
  if (cfg.model.document_mask) model.metadata["data.eot_id"] = std::to_string(cfg.model.eot_id);
  for (const auto& info : param_layout(cfg.model))
    model.tensors.push_back(f32_tensor(info.name, info.shape, params.data() + info.offset));
  for (const auto& t : extra.counts) model.tensors.push_back(t);
  write_safetensors((tmp / "model.safetensors").string(), model);

  StFile optim;
  optim.metadata = {{"format", "loom-adamw"}, {"step", std::to_string(p.step)}};
  const Shape flat{static_cast<int64_t>(m.size())};
  optim.tensors.push_back(f32_tensor("m", flat, m.data()));
  optim.tensors.push_back(f32_tensor("v", flat, v.data()));
  if (!extra.rnn_state.empty())
    optim.tensors.push_back(f32_tensor("rnn_state", {static_cast<int64_t>(extra.rnn_state.size())}, extra.rnn_state.data()));
  write_safetensors((tmp / "optim.safetensors").string(), optim);

  nlohmann::json st;
  st["step"] = p.step;
  st["tokens_seen"] = p.tokens_seen;
  st["skipped_steps"] = p.skipped_steps;
  // u64 as strings: JSON numbers are not guaranteed to carry 64 bits exactly.
  for (auto w : p.loader_rng) st["loader_rng"].push_back(std::to_string(w));
  write_file_atomic((tmp / "state.json").string(), st.dump(2) + "\n");
  write_file_atomic((tmp / "config.toml").string(), config_to_toml(cfg));
  fsync_dir(tmp.string());

  const fs::path final_dir = ckdir / name;
  commit_dir(tmp.string(), final_dir.string());
  guard.committed = true;
  replace_symlink((root / "latest").string(), (fs::path("checkpoints") / name).string());
  fsync_dir(root.string());

  if (keep > 0) {
    // Oldest first by step number (names sort as text only up to 8 digits).
    std::vector<std::pair<int64_t, fs::path>> steps;
    for (const auto& e : fs::directory_iterator(ckdir, ec)) {
      const std::string n = e.path().filename().string();
      int64_t s = -1;
      const char* b = n.data() + 5;
      const auto r = n.rfind("step_", 0) == 0 ? std::from_chars(b, n.data() + n.size(), s) : std::from_chars_result{};
      if (e.is_directory(ec) && r.ec == std::errc() && r.ptr == n.data() + n.size()) steps.emplace_back(s, e.path());
    }
    std::sort(steps.begin(), steps.end());
    for (size_t i = 0; i + keep < steps.size(); ++i)
      if (steps[i].second != final_dir) fs::remove_all(steps[i].second, ec);
  }
  return final_dir.string();
}

std::string resolve_checkpoint(const std::string& path) {
  LOOM_USER_CHECK(!path.empty(), "--checkpoint: empty path");
  fs::path p(path);
  std::error_code ec;
  // Never the throwing forms: a symlink loop (latest -> latest) is bad input, not a crash.
  const bool here = fs::exists(p, ec);
  LOOM_USER_CHECK(!ec || ec == std::errc::no_such_file_or_directory, path, ": cannot resolve: ", ec.message());
  LOOM_USER_CHECK(here, path, ": no such checkpoint");
  for (const fs::path& c : {p, p / "latest"}) {
    if (!fs::exists(c / "model.safetensors", ec)) continue;
    const fs::path real = fs::canonical(c, ec);
    LOOM_USER_CHECK(!ec, c.string(), ": cannot resolve: ", ec.message());
    return real.string();
  }
  LOOM_USER_CHECK(!ec || ec == std::errc::no_such_file_or_directory || ec == std::errc::not_a_directory, path,
                  ": cannot resolve: ", ec.message());
  user_error(path, ": not a checkpoint (no model.safetensors, no latest)");
}

CheckpointData load_checkpoint(const std::string& path, bool with_optim) {
  CheckpointData ck;
  ck.dir = resolve_checkpoint(path);
  const std::string mpath = ck.dir + "/model.safetensors";
  StFile model = read_safetensors(mpath);
  auto fmt = model.metadata.find("format");
  LOOM_USER_CHECK(fmt != model.metadata.end() && fmt->second == "loom", mpath,
                  ": not a loom checkpoint (metadata format != loom)");
  ck.model.kind = model.metadata.count("model.kind") ? model.metadata["model.kind"] : "";
  LOOM_USER_CHECK(find_model_kind(ck.model.kind), mpath, ": unknown model kind '", brief(ck.model.kind), "'");
  ck.model.n_layer = meta_int(model, "model.n_layer", mpath);
  ck.model.n_head = meta_int(model, "model.n_head", mpath);
  ck.model.d_model = meta_int(model, "model.d_model", mpath);
  ck.model.d_hidden = meta_int0(model, "model.d_hidden", mpath);
  ck.model.context = meta_int0(model, "model.context", mpath);
  ck.model.order = meta_int0(model, "model.order", mpath);
  ck.model.lora_rank = meta_int0(model, "lora.rank", mpath);
  if (ck.model.lora_rank > 0) {
    auto alpha = model.metadata.find("lora.alpha");
    auto targets = model.metadata.find("lora.targets");
    const std::string a = alpha == model.metadata.end() ? std::string() : alpha->second;
    const auto r = std::from_chars(a.data(), a.data() + a.size(), ck.model.lora_alpha);
    LOOM_USER_CHECK(targets != model.metadata.end() && !a.empty() && r.ec == std::errc() && r.ptr == a.data() + a.size(),
                    mpath, ": LoRA checkpoint without a valid lora.alpha / lora.targets");
    ck.model.lora_targets = targets->second;
  }
  ck.model.seq_len = meta_int(model, "model.seq_len", mpath);
  ck.model.vocab = meta_int(model, "model.vocab", mpath);
  if (model_kind(ck.model.kind).learns_pairs()) {
    ck.model.src_len = meta_int(model, "model.src_len", mpath);
    ck.model.n_enc_layer = meta_int0(model, "model.n_enc_layer", mpath);
    ck.model.n_dec_layer = meta_int0(model, "model.n_dec_layer", mpath);
    const auto tie = model.metadata.find("model.tie_embeddings");
    LOOM_USER_CHECK(tie != model.metadata.end() && (tie->second == "true" || tie->second == "false"), mpath,
                    ": metadata 'model.tie_embeddings' must be true or false");
    ck.model.tie_embeddings = tie->second == "true";
    const auto pos = model.metadata.find("model.positions");
    LOOM_USER_CHECK(pos != model.metadata.end(), mpath, ": metadata has no 'model.positions'");
    ck.model.positions = pos->second;  // validate_model checks it
    // Absent from checkpoints written before the recurrent kind: the defaults.
    if (const auto cell = model.metadata.find("model.cell"); cell != model.metadata.end()) ck.model.cell = cell->second;
    if (const auto att = model.metadata.find("model.attention"); att != model.metadata.end())
      ck.model.attention = att->second;
    if (const auto bi = model.metadata.find("model.bidirectional"); bi != model.metadata.end()) {
      LOOM_USER_CHECK(bi->second == "true" || bi->second == "false", mpath,
                      ": metadata 'model.bidirectional' must be true or false");
      ck.model.bidirectional = bi->second == "true";
    }
  }
  if (model.metadata.count("data.eot_id")) {
    ck.model.document_mask = true;
    ck.model.eot_id = meta_int0(model, "data.eot_id", mpath);
    LOOM_USER_CHECK(ck.model.eot_id < ck.model.vocab, mpath, ": metadata 'data.eot_id' ", ck.model.eot_id,
                    " is outside the vocabulary of ", ck.model.vocab);
  }
  validate_model(ck.model, mpath);
  // The vocabulary travels inside the checkpoint; a name of a file is never followed (whoever
  // made the checkpoint does not choose what loom reads on the user's machine).
  ck.tokenizer = model.metadata.count("tokenizer") ? model.metadata["tokenizer"] : "byte";
  LOOM_USER_CHECK(is_inline_tokenizer_spec(ck.tokenizer), mpath, ": metadata 'tokenizer' is '", brief(ck.tokenizer, 40),
                  "', not byte, gpt2 or an inline BPE vocabulary (a checkpoint never names a tokenizer file)");
  if (ck.tokenizer.front() == '{') (void)parse_bpe(ck.tokenizer, mpath + ": metadata 'tokenizer'");
  std::vector<ParamInfo> layout;
  try {
    layout = param_layout(ck.model);
  } catch (const UserError& e) {
    user_error(mpath, ": ", e.what());
  }
  // Every tensor is checked against the model before the flat buffer is allocated: the sizes
  // in the metadata are only claims, the tensors (already bounded by the file) are the proof.
  int64_t n = 0;
  for (const auto& p : layout) {
    const StTensor* t = model.find(p.name);
    LOOM_USER_CHECK(t, mpath, ": missing tensor '", p.name, "'");
    LOOM_USER_CHECK(t->dtype == "F32", mpath, ": tensor '", p.name, "' is ", t->dtype, ", expected F32");
    LOOM_USER_CHECK(Shape(t->shape.begin(), t->shape.end()) == p.shape, mpath, ": tensor '", p.name, "' has shape ",
                    shape_str(Shape(t->shape.begin(), t->shape.end())), ", the model needs ", shape_str(p.shape));
    n = std::max(n, p.offset + p.count());
  }
  ck.params.resize(n);
  for (const auto& p : layout) {
    const StTensor* t = model.find(p.name);
    copy_bytes(ck.params.data() + p.offset, t->data.data(), t->data.size());
  }
  if (model_kind(ck.model.kind).counts())
    ck.counts = std::move(model);  // validated by the kind when it loads them
  else
    LOOM_USER_CHECK(model.tensors.size() == layout.size(), mpath, ": ", model.tensors.size(),
                    " tensors, the model has ", layout.size());
  const std::string cpath = ck.dir + "/config.toml";
  if (fs::exists(cpath)) ck.config_toml = read_text(cpath);
  if (!with_optim) return ck;

  const std::string opath = ck.dir + "/optim.safetensors";
  StFile optim = read_safetensors(opath);
  // The moments cover the trainable prefix of the flat buffer (all of it unless a model
  // freezes weights, e.g. LoRA's base).
  const int64_t n_opt = trainable_prefix(layout, n);
  for (auto* dst : {&ck.m, &ck.v}) {
    const std::string nm = dst == &ck.m ? "m" : "v";
    const StTensor* t = optim.find(nm);
    LOOM_USER_CHECK(t && t->dtype == "F32" && t->shape == std::vector<int64_t>{n_opt}, opath, ": tensor '", nm,
                    "' missing or not F32[", n_opt, "]");
    dst->resize(n_opt);
    copy_bytes(dst->data(), t->data.data(), n_opt * 4);
  }
  if (const StTensor* t = optim.find("rnn_state")) {
    LOOM_USER_CHECK(t->dtype == "F32" && t->shape.size() == 1, opath, ": tensor 'rnn_state' is not F32[n]");
    ck.rnn_state.resize(t->shape[0]);
    copy_bytes(ck.rnn_state.data(), t->data.data(), t->data.size());
  }
  const std::string spath = ck.dir + "/state.json";
  const std::string state_text = read_text(spath);
  check_json_depth(state_text, spath, "invalid state file");
  const auto st = nlohmann::json::parse(state_text, nullptr, false);
  LOOM_USER_CHECK(!st.is_discarded() && st.is_object(), spath, ": invalid state file: not a JSON object");
  // Counters: integers in range (a float such as 1e30 would be an undefined cast).
  auto counter = [&](const char* key, int64_t lo, int64_t hi) {
    LOOM_USER_CHECK(st.contains(key) && st[key].is_number_integer(), spath, ": invalid state file: '", key,
                    "' missing or not an integer");
    const int64_t v = st[key].get<int64_t>();
    LOOM_USER_CHECK(v >= lo && v <= hi, spath, ": invalid state file: '", key, "' = ", v, " is outside [", lo, ", ",
                    hi, "]");
    return v;
  };
  ck.progress.step = counter("step", 0, int64_t{1} << 50);
  ck.progress.tokens_seen = counter("tokens_seen", 0, INT64_MAX);
  ck.progress.skipped_steps = counter("skipped_steps", 0, ck.progress.step);
  const auto* r = st.contains("loader_rng") ? &st["loader_rng"] : nullptr;
  LOOM_USER_CHECK(r && r->is_array() && r->size() == 4, spath, ": invalid state file: loader_rng must hold 4 words");
  for (int i = 0; i < 4; ++i) {
    const auto& w = (*r)[static_cast<size_t>(i)];
    const std::string s = w.is_string() ? w.get<std::string>() : std::string();
    uint64_t v = 0;
    const auto res = std::from_chars(s.data(), s.data() + s.size(), v);
    LOOM_USER_CHECK(!s.empty() && res.ec == std::errc() && res.ptr == s.data() + s.size(), spath,
                    ": invalid state file: loader_rng words are decimal strings of 64-bit integers");
    ck.progress.loader_rng[static_cast<size_t>(i)] = v;
  }
  return ck;
}

void check_same_model(const CheckpointData& ck, const ModelConfig& e) {
  const ModelConfig& m = ck.model;
  auto s = [](const ModelConfig& c) {
    return c.kind + " n_layer=" + std::to_string(c.n_layer) + " n_head=" + std::to_string(c.n_head) + " d_model=" +
           std::to_string(c.d_model) + " d_hidden=" + std::to_string(c.d_hidden) + " context=" +
           std::to_string(c.context) + " order=" + std::to_string(c.order) + " seq_len=" + std::to_string(c.seq_len) +
           " vocab=" + std::to_string(c.vocab) +
           (c.src_len ? " src_len=" + std::to_string(c.src_len) + " n_enc_layer=" + std::to_string(c.n_enc_layer) +
                            " n_dec_layer=" + std::to_string(c.n_dec_layer) + " tie_embeddings=" +
                            (c.tie_embeddings ? "true" : "false") + " positions=" + c.positions + " cell=" + c.cell +
                            " bidirectional=" + (c.bidirectional ? "true" : "false") + " attention=" + c.attention
                      : "") +
           (c.lora_rank ? " lora.rank=" + std::to_string(c.lora_rank) + " lora.targets=" + c.lora_targets : "");
  };
  LOOM_USER_CHECK(m.kind == e.kind && m.n_layer == e.n_layer && m.n_head == e.n_head && m.d_model == e.d_model &&
                      m.d_hidden == e.d_hidden && m.context == e.context && m.order == e.order &&
                      m.lora_rank == e.lora_rank && (m.lora_rank == 0 || (m.lora_targets == e.lora_targets &&
                                                                            m.lora_alpha == e.lora_alpha)) &&
                      m.seq_len == e.seq_len && m.vocab == e.vocab && m.src_len == e.src_len &&
                      m.n_enc_layer == e.n_enc_layer && m.n_dec_layer == e.n_dec_layer &&
                      m.tie_embeddings == e.tie_embeddings && m.positions == e.positions && m.cell == e.cell &&
                      m.bidirectional == e.bidirectional && m.attention == e.attention,
                  ck.dir, ": checkpoint of another shape (", s(m), "), the config asks for ", s(e));
}

}  // namespace loom
