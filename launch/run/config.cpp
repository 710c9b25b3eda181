// config.cpp: the one table of configuration keys, and TOML / override handling on it.
#include "launch/run/config.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <toml++/toml.h>
#include <variant>

#include "core/check.h"
#include "engine/data/corpus.h"
#include "engine/io/json_guard.h"

namespace loom {

namespace {

using Ref = std::variant<int64_t*, int*, double*, std::string*, bool*, std::vector<std::string>*>;

// required: nullptr (optional unless the model kind requires it: ModelKind::required_keys)
// or kAll (every kind).
struct Key {
  const char* name;
  const char* required;
  std::string help;
  std::function<Ref(Config&)> ref;
};

constexpr const char* kAll = "*";
constexpr const char* kKind = nullptr;  // required by the kinds that list it

// Whether `key` is one of the kind's (an entry "section.*" covers the section).
bool kind_reads(const ModelKind& mk, const std::string& key) {
  for (const char* r : mk.keys()) {
    const std::string e = r;
    if (e == key || (e.size() > 2 && e.ends_with(".*") && key.rfind(e.substr(0, e.size() - 1), 0) == 0)) return true;
  }
  return false;
}

// Keys every kind reads, and the ones the config's kind reads (all of them for an unknown kind).
bool applies(const Key& k, const std::string& kind) {
  const std::string name = k.name;
  const bool kind_specific = name.rfind("optim.", 0) == 0 || name.rfind("lora.", 0) == 0 || name == "train.state_reset" ||
                             name == "data.document_mask" || name == "data.eot_id" ||
                             name == "train.recompute" || name == "train.init_from" || name == "train.length_buckets" ||
                             (name.rfind("model.", 0) == 0 && name != "model.kind" && name != "model.seq_len");
  if (!kind_specific) return true;
  const ModelKind* mk = find_model_kind(kind);
  if (name == "train.length_buckets") return !mk || mk->learns_pairs();
  return !mk || kind_reads(*mk, name);
}

bool required_for(const Key& k, const std::string& kind) {
  if (k.required) return true;
  const ModelKind* mk = find_model_kind(kind);
  if (!mk) return false;  // validate() names the unknown kind
  for (const char* r : mk->required_keys())
    if (std::string(r) == k.name) return true;
  return false;
}

// The table. Required keys have no silent default: a config must state them.
const std::vector<Key>& keys() {
  static const std::vector<Key> k = {
      {"device", nullptr, "auto | cpu | cuda", [](Config& c) -> Ref { return &c.device; }},
      {"model.kind", kAll, model_kind_names(), [](Config& c) -> Ref { return &c.model.kind; }},
      {"model.n_layer", kKind, "transformer blocks / recurrent layers / ffnn hidden layers", [](Config& c) -> Ref { return &c.model.n_layer; }},
      {"model.n_head", kKind, "attention heads", [](Config& c) -> Ref { return &c.model.n_head; }},
      {"model.d_model", kKind, "width (recurrent: hidden size; ffnn: embedding size)", [](Config& c) -> Ref { return &c.model.d_model; }},
      {"model.d_hidden", nullptr, "ffnn hidden width (0: 4 * d_model)", [](Config& c) -> Ref { return &c.model.d_hidden; }},
      {"model.context", kKind, "ffnn: previous tokens seen (n - 1)", [](Config& c) -> Ref { return &c.model.context; }},
      {"model.order", kKind, "ngram: order n", [](Config& c) -> Ref { return &c.model.order; }},
      {"model.seq_len", kAll, "context length T (sequence-to-sequence: target length)", [](Config& c) -> Ref { return &c.model.seq_len; }},
      {"model.src_len", kKind, "sequence-to-sequence: source length S (EOS included)",
       [](Config& c) -> Ref { return &c.model.src_len; }},
      {"model.n_enc_layer", kKind, "encoder-decoder: encoder layers", [](Config& c) -> Ref { return &c.model.n_enc_layer; }},
      {"model.n_dec_layer", kKind, "encoder-decoder: decoder layers", [](Config& c) -> Ref { return &c.model.n_dec_layer; }},
      {"model.tie_embeddings", nullptr, "encoder-decoder: source, target embeddings and classifier one matrix",
       [](Config& c) -> Ref { return &c.model.tie_embeddings; }},
      {"model.positions", nullptr, "encoder-decoder: sinusoidal | learned", [](Config& c) -> Ref { return &c.model.positions; }},
      {"model.cell", nullptr, "rnn-seq2seq: lstm | gru", [](Config& c) -> Ref { return &c.model.cell; }},
      {"model.bidirectional", nullptr, "rnn-seq2seq: a bidirectional encoder",
       [](Config& c) -> Ref { return &c.model.bidirectional; }},
      {"model.attention", nullptr, "rnn-seq2seq: dot | general | additive",
       [](Config& c) -> Ref { return &c.model.attention; }},
      {"data.path", kAll, "folder written by `loom prepare`", [](Config& c) -> Ref { return &c.data.path; }},
      {"data.document_mask", nullptr, "attention only within each document (gpt)",
       [](Config& c) -> Ref { return &c.model.document_mask; }},
      {"data.eot_id", nullptr, "end-of-text token that starts a document (-1: the tokenizer's)",
       [](Config& c) -> Ref { return &c.model.eot_id; }},
      {"train.steps", kAll, "optimizer steps", [](Config& c) -> Ref { return &c.train.steps; }},
      {"train.batch_size", kAll, "sequences per micro-batch", [](Config& c) -> Ref { return &c.train.batch_size; }},
      {"train.grad_accum", nullptr, "micro-batches per step", [](Config& c) -> Ref { return &c.train.grad_accum; }},
      {"train.seed", nullptr, "seed of init and data order", [](Config& c) -> Ref { return &c.train.seed; }},
      {"train.eval_every", nullptr, "steps between validations", [](Config& c) -> Ref { return &c.train.eval_every; }},
      {"train.eval_steps", nullptr, "batches per validation", [](Config& c) -> Ref { return &c.train.eval_steps; }},
      {"train.max_bad_steps", nullptr, "non-finite steps in a row before abort",
       [](Config& c) -> Ref { return &c.train.max_bad_steps; }},
      {"train.state_reset", nullptr, "recurrent: zero the carried state every N steps (0: each epoch)",
       [](Config& c) -> Ref { return &c.train.state_reset; }},
      {"train.eval_tasks", nullptr, "multiple-choice task files (JSONL) scored during the run",
       [](Config& c) -> Ref { return &c.train.eval_tasks; }},
      {"train.eval_tasks_every", nullptr, "steps between scores of train.eval_tasks (0: with each validation)",
       [](Config& c) -> Ref { return &c.train.eval_tasks_every; }},
      {"train.recompute", nullptr, "activations re-run in backward: none | attention | mlp | block (gpt)",
       [](Config& c) -> Ref { return &c.train.recompute; }},
      {"train.deterministic", nullptr, "bit-identical GPU gradients run to run (attention's dQ summed in order)",
       [](Config& c) -> Ref { return &c.train.deterministic; }},
      {"train.length_buckets", nullptr, "pair kinds: batches padded to the nearest of k source and k target lengths (1: to src_len, seq_len)",
       [](Config& c) -> Ref { return &c.train.length_buckets; }},
      {"train.init_from", nullptr, "a fresh run starts from this checkpoint's weights (encdec: a gpt's; \"\": seeded init)",
       [](Config& c) -> Ref { return &c.train.init_from; }},
      {"optim.lr", kKind, "peak learning rate", [](Config& c) -> Ref { return &c.optim.lr; }},
      {"optim.min_lr", nullptr, "final learning rate (cosine)", [](Config& c) -> Ref { return &c.optim.min_lr; }},
      {"optim.warmup_steps", nullptr, "linear warmup steps", [](Config& c) -> Ref { return &c.optim.warmup_steps; }},
      {"optim.weight_decay", nullptr, "AdamW decay (weight matrices)", [](Config& c) -> Ref { return &c.optim.weight_decay; }},
      {"optim.beta1", nullptr, "AdamW beta1", [](Config& c) -> Ref { return &c.optim.beta1; }},
      {"optim.beta2", nullptr, "AdamW beta2", [](Config& c) -> Ref { return &c.optim.beta2; }},
      {"optim.eps", nullptr, "AdamW epsilon", [](Config& c) -> Ref { return &c.optim.eps; }},
      {"optim.grad_clip", nullptr, "global norm clip (0 = off)", [](Config& c) -> Ref { return &c.optim.grad_clip; }},
      {"checkpoint.every", nullptr, "steps between checkpoints", [](Config& c) -> Ref { return &c.checkpoint.every; }},
      {"checkpoint.keep", nullptr, "newest checkpoints kept (0 = all)", [](Config& c) -> Ref { return &c.checkpoint.keep; }},
      {"log.run_dir", nullptr, "run folder", [](Config& c) -> Ref { return &c.log.run_dir; }},
      {"log.every", nullptr, "steps between log lines", [](Config& c) -> Ref { return &c.log.every; }},
      {"log.tensorboard", nullptr, "write TensorBoard event files into <run_dir>/tb", [](Config& c) -> Ref { return &c.log.tensorboard; }},
      {"dist.zero", nullptr, "ZeRO stage (0 or 1)", [](Config& c) -> Ref { return &c.dist.zero; }},
      {"lora.rank", nullptr, "LoRA rank (0: none; gpt only)", [](Config& c) -> Ref { return &c.model.lora_rank; }},
      {"lora.alpha", nullptr, "LoRA alpha (the adapters are scaled by alpha / rank)",
       [](Config& c) -> Ref { return &c.model.lora_alpha; }},
      {"lora.targets", nullptr, "LoRA targets: attn, mlp or attn,mlp", [](Config& c) -> Ref { return &c.model.lora_targets; }},
  };
  return k;
}

const Key* find_key(const std::string& name) {
  for (const auto& k : keys())
    if (name == k.name) return &k;
  return nullptr;
}

const char* type_name(const Ref& r) {
  if (std::holds_alternative<std::vector<std::string>*>(r)) return "an array of strings";
  return std::holds_alternative<std::string*>(r) ? "a string"
         : std::holds_alternative<double*>(r)    ? "a number"
         : std::holds_alternative<bool*>(r)      ? "true or false"
                                                 : "an integer";
}

// Config strings end up in file names, messages and the config.toml a run folder keeps, which
// holds UTF-8 only: a value that would not read back from there is refused up front.
void check_text(const std::string& where, const char* key, const std::string& v) {
  const bool control = std::any_of(v.begin(), v.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
  LOOM_USER_CHECK(!control && first_invalid_utf8(v) == std::string::npos, where, ": ", key,
                  ": must be UTF-8 text without control characters");
}

// Sets a key from a TOML node (file) — types must match exactly, except that an integer is
// accepted for a float key.
void set_from_node(Config& c, const Key& k, const toml::node& n, const std::string& where) {
  Ref r = k.ref(c);
  const std::string bad = where + ": " + k.name + ": expected " + type_name(r);
  if (auto* p = std::get_if<std::string*>(&r)) {
    auto v = n.value_exact<std::string>();
    LOOM_USER_CHECK(v, bad);
    check_text(where, k.name, *v);
    **p = *v;
  } else if (auto* p = std::get_if<bool*>(&r)) {
    auto v = n.value_exact<bool>();
    LOOM_USER_CHECK(v, bad);
    **p = *v;
  } else if (auto* p = std::get_if<std::vector<std::string>*>(&r)) {
    const toml::array* a = n.as_array();
    LOOM_USER_CHECK(a, bad);
    (*p)->clear();
    for (const toml::node& e : *a) {
      auto v = e.value_exact<std::string>();
      LOOM_USER_CHECK(v, bad);
      check_text(where, k.name, *v);
      (*p)->push_back(*v);
    }
  } else if (auto* p = std::get_if<double*>(&r)) {
    auto v = n.value<double>();
    LOOM_USER_CHECK(v && (n.is_floating_point() || n.is_integer()), bad);
    **p = *v;
  } else {
    auto v = n.value_exact<int64_t>();
    LOOM_USER_CHECK(v, bad);
    if (auto* q = std::get_if<int*>(&r)) {
      LOOM_USER_CHECK(*v >= INT32_MIN && *v <= INT32_MAX, where, ": ", k.name, ": ", *v, " out of range");
      **q = static_cast<int>(*v);
    } else {
      *std::get<int64_t*>(r) = *v;
    }
  }
}

// Sets a key from command-line text.
void set_from_text(Config& c, const Key& k, const std::string& text) {
  Ref r = k.ref(c);
  const std::string where = std::string("--") + k.name;
  if (auto* p = std::get_if<std::string*>(&r)) {
    check_text(where, k.name, text);
    **p = text;
    return;
  }
  if (auto* p = std::get_if<bool*>(&r)) {
    LOOM_USER_CHECK(text == "true" || text == "false", where, ": expected true or false, got '", text, "'");
    **p = text == "true";
    return;
  }
  if (auto* p = std::get_if<std::vector<std::string>*>(&r)) {  // comma-separated; "" is none
    check_text(where, k.name, text);
    (*p)->clear();
    for (size_t at = 0; !text.empty() && at <= text.size();) {
      const size_t comma = std::min(text.find(',', at), text.size());
      (*p)->push_back(text.substr(at, comma - at));
      at = comma + 1;
    }
    return;
  }
  const char* b = text.data();
  const char* e = b + text.size();
  if (auto* p = std::get_if<double*>(&r)) {
    double v = 0;
    auto res = std::from_chars(b, e, v);
    LOOM_USER_CHECK(!text.empty() && res.ec == std::errc() && res.ptr == e, where, ": expected a number, got '", text, "'");
    **p = v;
    return;
  }
  int64_t v = 0;
  auto res = std::from_chars(b, e, v);
  LOOM_USER_CHECK(!text.empty() && res.ec == std::errc() && res.ptr == e, where, ": expected an integer, got '", text, "'");
  if (auto* q = std::get_if<int*>(&r)) {
    LOOM_USER_CHECK(v >= INT32_MIN && v <= INT32_MAX, where, ": ", v, " out of range");
    **q = static_cast<int>(v);
  } else {
    *std::get<int64_t*>(r) = v;
  }
}

void validate(const Config& c, const std::string& where) {
  auto req = [&](bool ok, const char* key, const std::string& what) {
    LOOM_USER_CHECK(ok, where, ": ", key, ": ", what);
  };
  req(c.device == "auto" || c.device == "cpu" || c.device == "cuda", "device",
      "'" + c.device + "' is not one of auto, cpu, cuda");
  validate_model(c.model, where);
  req(!c.data.path.empty(), "data.path", "must not be empty");
  // Bounds far above any real run, so that a typo (1e9 layers, a batch of 2^32) is one line
  // naming the key instead of an allocation failure or an overflow deep inside a step.
  constexpr int64_t kMaxSteps = int64_t{1} << 40, kMaxBatch = 1 << 20, kMaxLengthBuckets = 64;
  auto in = [&](int64_t v, int64_t lo, int64_t hi, const char* key) {
    req(v >= lo && v <= hi, key, "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                                     std::to_string(v));
  };
  in(c.train.steps, 1, kMaxSteps, "train.steps");
  in(c.train.batch_size, 1, kMaxBatch, "train.batch_size");
  in(c.train.grad_accum, 1, kMaxBatch, "train.grad_accum");
  in(c.train.eval_every, 1, kMaxSteps, "train.eval_every");
  in(c.train.eval_steps, 1, kMaxBatch, "train.eval_steps");
  in(c.train.max_bad_steps, 1, kMaxSteps, "train.max_bad_steps");
  in(c.train.state_reset, 0, kMaxSteps, "train.state_reset");
  in(c.train.eval_tasks_every, 0, kMaxSteps, "train.eval_tasks_every");
  in(c.train.length_buckets, 1, kMaxLengthBuckets, "train.length_buckets");
  const std::optional<Recompute> recompute = parse_recompute(c.train.recompute);
  req(recompute.has_value(), "train.recompute", "'" + brief(c.train.recompute) + "' is not one of none, attention, mlp, block");
  req(*recompute == Recompute::None || model_kind(c.model.kind).has_recompute_segments(), "train.recompute",
      "model.kind = " + c.model.kind + " has no segments to recompute (only none)");
  if (!c.train.init_from.empty()) {
    std::string can;
    for (const ModelKind* k : model_kinds())
      if (kind_reads(*k, "train.init_from")) can += std::string(can.empty() ? "" : ", ") + k->name();
    req(kind_reads(model_kind(c.model.kind), "train.init_from"), "train.init_from",
        "model.kind = " + c.model.kind + " cannot start from another model's weights (" + can + " can)");
  }
  req(static_cast<double>(c.train.batch_size) * static_cast<double>(c.train.grad_accum) * c.model.seq_len <=
          static_cast<double>(int64_t{1} << 40),
      "train.batch_size", "x train.grad_accum x model.seq_len: more than 2^40 tokens a step");
  // Floats: finite only (inf and NaN compare false or pass "> 0" where they must not).
  auto real = [&](double v, bool ok, const char* key, const char* what) {
    req(std::isfinite(v) && ok, key, std::string(what) + (std::isfinite(v) ? "" : " (and finite)"));
  };
  real(c.optim.lr, c.optim.lr > 0, "optim.lr", "must be > 0");
  real(c.optim.min_lr, c.optim.min_lr >= 0 && c.optim.min_lr <= c.optim.lr, "optim.min_lr", "must be in [0, optim.lr]");
  in(c.optim.warmup_steps, 0, kMaxSteps, "optim.warmup_steps");
  real(c.optim.weight_decay, c.optim.weight_decay >= 0, "optim.weight_decay", "must be >= 0");
  real(c.optim.beta1, c.optim.beta1 >= 0 && c.optim.beta1 < 1, "optim.beta1", "must be in [0, 1)");
  real(c.optim.beta2, c.optim.beta2 >= 0 && c.optim.beta2 < 1, "optim.beta2", "must be in [0, 1)");
  real(c.optim.eps, c.optim.eps > 0, "optim.eps", "must be > 0");
  real(c.optim.grad_clip, c.optim.grad_clip >= 0, "optim.grad_clip", "must be >= 0");
  in(c.checkpoint.every, 1, kMaxSteps, "checkpoint.every");
  in(c.checkpoint.keep, 0, kMaxBatch, "checkpoint.keep");
  req(!c.log.run_dir.empty(), "log.run_dir", "must not be empty");
  in(c.log.every, 1, kMaxSteps, "log.every");
  req(c.dist.zero == 0 || c.dist.zero == 1, "dist.zero", "must be 0 or 1");
}

// toml++ builds (and destroys) nested tables recursively: a line "a.a.a...a = 1" or a header
// "[a.a...a]" of some 50,000 parts overflows the stack. Depth grows only through the dots of a
// key or header on one line (arrays and inline tables toml++ caps itself), and no loom key has
// more than one, so a line with more dots outside strings and comments than any config needs
// is refused before parsing. Strings are skipped as TOML lexes them (basic, literal and their
// multi-line forms), so dots in paths and floats do not count.
void check_toml_nesting(const std::string& text, const std::string& name) {
  constexpr int kMaxDots = 32;
  enum { kNone, kBasic, kLiteral, kMultiBasic, kMultiLiteral } in = kNone;
  bool comment = false;
  int dots = 0;
  size_t line = 1;
  auto at = [&](size_t i, const char* s) { return text.compare(i, std::strlen(s), s) == 0; };
  // A multi-line string ends at 3 to 5 quotes in a row (up to two of them belong to it).
  auto run_of = [&](size_t i) {
    size_t n = 0;
    while (n < 5 && i + n < text.size() && text[i + n] == text[i]) ++n;
    return n;
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\n') {
      ++line;
      dots = 0;
      comment = false;
      if (in == kBasic || in == kLiteral) in = kNone;  // unterminated: toml++ reports it
      continue;
    }
    if (comment) continue;
    switch (in) {
      case kNone:
        if (c == '#') {
          comment = true;
        } else if (at(i, "\"\"\"")) {
          in = kMultiBasic, i += 2;
        } else if (at(i, "'''")) {
          in = kMultiLiteral, i += 2;
        } else if (c == '"') {
          in = kBasic;
        } else if (c == '\'') {
          in = kLiteral;
        } else if (c == '.' && ++dots > kMaxDots) {
          user_error(name, ":", line, ": keys nested deeper than ", kMaxDots, " levels (no loom config key is)");
        }
        break;
      case kBasic:
        if (c == '\\' && i + 1 < text.size() && text[i + 1] != '\n') ++i;
        else if (c == '"') in = kNone;
        break;
      case kLiteral:
        if (c == '\'') in = kNone;
        break;
      case kMultiBasic:
      case kMultiLiteral:
        if (in == kMultiBasic && c == '\\' && i + 1 < text.size() && text[i + 1] != '\n') {
          ++i;
        } else if (c == (in == kMultiBasic ? '"' : '\'')) {
          const size_t n = run_of(i);
          if (n >= 3) in = kNone;
          i += n - 1;
        }
        break;
    }
  }
}

void walk(const toml::table& t, const std::string& prefix, const std::function<void(const std::string&, const toml::node&)>& f) {
  for (auto&& [k, v] : t) {
    const std::string name = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (auto* sub = v.as_table())
      walk(*sub, name, f);
    else
      f(name, v);
  }
}

}  // namespace

Config parse_config_text(const std::string& text, const std::string& name, const Overrides& overrides) {
  Config c;
  std::set<std::string> given;
  if (!text.empty() || !name.empty()) {
    check_toml_nesting(text, name);
    toml::table tbl;
    try {
      tbl = toml::parse(text, name);
    } catch (const toml::parse_error& e) {
      const auto& s = e.source().begin;
      user_error(name, ":", s.line, ":", s.column, ": invalid TOML: ", brief(e.description(), 200));
    }
    walk(tbl, "", [&](const std::string& key, const toml::node& n) {
      const Key* k = find_key(key);
      LOOM_USER_CHECK(k, name, ": unknown key '", brief(key), "'");
      set_from_node(c, *k, n, name);
      given.insert(key);
    });
  }
  for (const auto& [key, value] : overrides) {
    const Key* k = find_key(key);
    LOOM_USER_CHECK(k, "--", brief(key), ": unknown config key");
    set_from_text(c, *k, value);
    given.insert(key);
  }
  for (const auto& k : keys())
    LOOM_USER_CHECK(!required_for(k, c.model.kind) || given.count(k.name), (name.empty() ? std::string("config") : name),
                    ": missing required key '", k.name, "' (", k.help, ")");
  validate(c, name.empty() ? "config" : name);
  return c;
}

Config load_config(const std::string& path, const Overrides& overrides) {
  if (path.empty()) return parse_config_text("", "", overrides);
  // A config is a few KiB; reading a huge file whole (a device, a mistaken path) is not useful.
  constexpr uintmax_t kMaxBytes = uintmax_t{1} << 20;
  std::error_code ec;
  const uintmax_t bytes = std::filesystem::file_size(path, ec);
  LOOM_USER_CHECK(ec || bytes <= kMaxBytes, path, ": ", bytes, " bytes, larger than a config file can be (",
                  kMaxBytes, ")");
  std::ifstream f(path);
  LOOM_USER_CHECK(f, path, ": cannot open config file");
  std::stringstream ss;
  ss << f.rdbuf();
  return parse_config_text(ss.str(), path, overrides);
}

std::string config_to_toml(const Config& cc) {
  Config c = cc;
  std::ostringstream os;
  std::string section;
  for (const auto& k : keys()) {
    if (!applies(k, c.model.kind)) continue;
    std::string name = k.name;
    const auto dot = name.find('.');
    const std::string sec = dot == std::string::npos ? "" : name.substr(0, dot);
    if (sec != section) {
      os << (os.tellp() > 0 ? "\n" : "") << "[" << sec << "]\n";
      section = sec;
    }
    os << (dot == std::string::npos ? name : name.substr(dot + 1)) << " = ";
    Ref r = k.ref(c);
    if (auto* p = std::get_if<std::string*>(&r))
      os << toml::value<std::string>(**p);
    else if (auto* p = std::get_if<std::vector<std::string>*>(&r)) {
      toml::array a;
      for (const std::string& v : **p) a.push_back(v);
      os << a;
    } else if (auto* p = std::get_if<double*>(&r)) {
      // The shortest text that reads back as the same double (0.0002, not
      // 0.00020000000000000001); TOML wants a '.' or an exponent in a float.
      char b[64];
      const auto res = std::to_chars(b, b + sizeof b, **p);
      std::string s(b, res.ptr);
      if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
      os << s;
    } else if (auto* p = std::get_if<int*>(&r))
      os << **p;
    else if (auto* p = std::get_if<bool*>(&r))
      os << (**p ? "true" : "false");
    else
      os << *std::get<int64_t*>(r);
    os << "\n";
  }
  return os.str();
}

void resolve_eot_id(ModelConfig& m, std::optional<uint32_t> data_eot_id, const std::string& tokenizer_spec) {
  if (!m.document_mask) return;
  // The data's own id (DataFolder::eot_id, from its tokenizer: Tokenizer::eot_id()) unless the
  // config names one.
  if (m.eot_id < 0 && data_eot_id) m.eot_id = static_cast<int>(*data_eot_id);
  const std::string name = tokenizer_spec.size() > 40 ? "bpe" : tokenizer_spec;
  LOOM_USER_CHECK(m.eot_id >= 0, "data.eot_id: data.document_mask needs the end-of-text id, and the data's tokenizer (",
                  name, ") has none: set data.eot_id, or prepare the data with one (docs/data.md)");
  LOOM_USER_CHECK(m.eot_id < m.vocab, "data.eot_id: ", m.eot_id, " is outside the vocabulary of ", m.vocab);
}

Recompute train_recompute(const Config& c) {
  const std::optional<Recompute> r = parse_recompute(c.train.recompute);
  LOOM_CHECK(r.has_value(), "train.recompute not validated: ", c.train.recompute);
  return *r;
}

std::vector<std::string> config_keys() {
  std::vector<std::string> r;
  for (const auto& k : keys()) r.push_back(k.name);
  return r;
}

}  // namespace loom
