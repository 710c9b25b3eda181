// gpt2_parity_test.cpp: GPT-2 checkpoints in and out of loom.
//  - Parity: tests/e2e/gpt2_reference.py builds a random GPT-2-shaped model in PyTorch, saves
//    it as Hugging Face-named safetensors and writes its logits, loss and every gradient (in
//    float64) for given tokens; `loom import` reads the file and loom's CPU graphs in f32 must
//    agree on all of them, gradients mapped back through the same name map and transposes.
//  - Round trip: export -> import -> export is bit-exact, and so is import -> export against
//    the original file; BF16 / F16 files import to the exactly widened values.
//  - An imported checkpoint samples and fine-tunes (`loom train --resume`).
//  - Bad files and flags: exit 2 and one line naming the file.
// python3 with torch is a dependency (scripts/install_deps.sh): without it the parity test
// fails, it does not skip.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "engine/backend/backend.h"
#include "core/dtype.h"
#include "engine/graph/executor.h"
#include "launch/run/checkpoint.h"
#include "launch/run/gpt2_io.h"
#include "tests/support/helpers.h"

namespace loom::test {
namespace {

constexpr int kLayers = 2, kHeads = 2, kWidth = 32, kVocab = 256, kT = 16, kB = 2;

ModelConfig tiny_gpt(int vocab = kVocab) {
  ModelConfig c;
  c.kind = "gpt";
  c.n_layer = kLayers;
  c.n_head = kHeads;
  c.d_model = kWidth;
  c.seq_len = kT;
  c.vocab = vocab;
  return c;
}

std::string join(const std::vector<int32_t>& v) {
  std::string s;
  for (int32_t x : v) {
    if (!s.empty()) s += ',';
    s += std::to_string(x);
  }
  return s;
}

std::vector<double> f64_of(const StFile& f, const std::string& name) {
  const StTensor* t = f.find(name);
  EXPECT_TRUE(t && t->dtype == "F64") << "reference has no F64 tensor " << name;
  if (!t || t->dtype != "F64") return {};
  std::vector<double> r(t->data.size() / 8);
  std::memcpy(r.data(), t->data.data(), t->data.size());
  return r;
}

// Worst element of |got - ref| <= atol + rtol * |ref|, as a multiple of its allowance.
struct Worst {
  double err = 0, ratio = 0;
  std::string where;
  void add(double got, double ref, double atol, double rtol, const std::string& what) {
    const double e = std::fabs(got - ref), allow = atol + rtol * std::fabs(ref);
    const double r = std::isnan(got) || std::isnan(ref) ? INFINITY : e / allow;
    err = std::max(err, e);
    if (r > ratio || where.empty()) ratio = r, where = what + " got " + std::to_string(got) + " ref " + std::to_string(ref);
  }
};

// A GPT-2 file written by loom itself (no torch needed), for the tests of flags and bad input.
StFile loom_made_gpt2(const ModelConfig& c, uint64_t seed = 3) {
  return gpt2_safetensors(c, "byte", init_params(c, seed));
}

// The first python3 that imports torch: the one on PATH, else Debian's (python3-torch
// installs into /usr/bin/python3's packages, which a pyenv or venv python3 on PATH hides).
std::string torch_python() {
  for (const char* py : {"python3", "/usr/bin/python3"})
    if (std::system((std::string(py) + " -c 'import torch' >/dev/null 2>&1").c_str()) == 0) return py;
  return "";
}

TEST(Gpt2, TorchParityAndBitExactRoundTrip) {
  const std::string python = torch_python();
  ASSERT_FALSE(python.empty())
      << "python3 with PyTorch is missing: run scripts/install_deps.sh (it installs Debian's python3-torch)";
  TempDir d;
  Rng rng(29);
  std::vector<int32_t> tokens(kB * kT), targets(kB * kT);
  for (auto& t : tokens) t = static_cast<int32_t>(rng.below(kVocab));
  for (auto& t : targets) t = static_cast<int32_t>(rng.below(kVocab));
  const std::string py = python + " '" + LOOM_SOURCE_DIR + "/tests/e2e/gpt2_reference.py' --out '" +
                         d.str() + "' --seed 5 --n-layer 2 --n-head 2 --d-model 32 --vocab 256 --positions 16" +
                         " --batch 2 --tokens " + join(tokens) + " --targets " + join(targets) + " 2>'" +
                         (d / "py.err") + "'";
  ASSERT_EQ(std::system(py.c_str()), 0) << "gpt2_reference.py failed: " << read_bytes(d / "py.err");

  // The file has the "transformer." prefix, the attention buffers and a tied lm_head; no head
  // count (Hugging Face keeps it in config.json), so --n-head.
  RunResult im = run_loom({"import", "--from", "gpt2-safetensors", d / "model.safetensors", "--out", d / "run",
                           "--n-head", "2"});
  ASSERT_EQ(im.rc, 0) << im.err;
  const CheckpointData ck = load_checkpoint(d / "run", true);
  EXPECT_EQ(ck.model.n_layer, kLayers);
  EXPECT_EQ(ck.model.n_head, kHeads);
  EXPECT_EQ(ck.model.d_model, kWidth);
  EXPECT_EQ(ck.model.vocab, kVocab);
  EXPECT_EQ(ck.model.seq_len, kT);
  EXPECT_EQ(ck.tokenizer, "byte");
  EXPECT_EQ(ck.progress.step, 0);
  ASSERT_EQ(ck.m.size(), ck.params.size());
  for (float x : ck.m) ASSERT_EQ(x, 0.0f);

  const StFile ref = read_safetensors(d / "reference.safetensors");
  auto be = make_cpu_backend();
  // Logits from the eval graph (the train graph need not keep them).
  ModelGraph eg = build_model(ck.model, GraphMode::Eval, kB, kT, DType::F32, true);
  Executor ex(eg.g, *be);
  std::vector<float> params = ck.params;
  ex.bind_params(params.data(), nullptr);
  ex.set_input(eg.tokens, tokens.data(), tokens.size() * 4);
  ex.set_input(eg.targets, targets.data(), targets.size() * 4);
  ex.forward();
  const auto logits = ex.fetch<float>(eg.logits);
  // Loss and gradients from the train graph, seeded with dloss = 1 (the mean over B*T).
  ModelGraph tg = build_model(ck.model, GraphMode::Train, kB, kT, DType::F32);
  Executor tx(tg.g, *be);
  std::vector<float> grads(params.size(), 0.0f);  // parameter gradients accumulate: start at 0
  tx.bind_params(params.data(), grads.data());
  tx.set_input(tg.tokens, tokens.data(), tokens.size() * 4);
  tx.set_input(tg.targets, targets.data(), targets.size() * 4);
  const float one = 1.0f;
  tx.set_input(tg.dloss, &one, 4);
  tx.run();
  const float loss = tx.fetch<float>(tg.loss)[0];

  // fp32 against a float64 reference: logits and loss are O(1), gradients up to O(0.1).
  // Measured: logits 3e-6, loss 1e-7, gradients 1.4e-7 at most.
  constexpr double kAtol = 1e-5, kGradAtol = 1e-6, kRtol = 1e-5;
  const auto ref_logits = f64_of(ref, "logits");
  ASSERT_EQ(ref_logits.size(), logits.size());
  Worst wl, wloss, wg;
  for (size_t i = 0; i < logits.size(); ++i) wl.add(logits[i], ref_logits[i], kAtol, kRtol, "logits[" + std::to_string(i) + "]");
  const auto ref_loss = f64_of(ref, "loss");
  ASSERT_EQ(ref_loss.size(), 1u);
  wloss.add(loss, ref_loss[0], kAtol, kRtol, "loss");
  // Every gradient, through the name map (GPT-2 layout -> loom layout).
  const auto layout = param_layout(ck.model);
  const auto names = gpt2_name_map(kLayers);
  ASSERT_EQ(layout.size(), names.size());
  double grad_max = 0;
  for (size_t i = 0; i < layout.size(); ++i) {
    const ParamInfo& p = layout[i];
    const auto r = f64_of(ref, "grad." + names[i].gpt2);
    ASSERT_EQ(static_cast<int64_t>(r.size()), p.count()) << names[i].gpt2;
    const int64_t rows = p.shape[0], cols = p.shape.size() == 2 ? p.shape[1] : 1;
    for (int64_t a = 0; a < rows; ++a)
      for (int64_t b = 0; b < cols; ++b) {
        const double want = names[i].transpose ? r[b * rows + a] : r[a * cols + b];
        grad_max = std::max(grad_max, std::fabs(want));
        wg.add(grads[p.offset + a * cols + b], want, kGradAtol, kRtol, p.name + "[" + std::to_string(a * cols + b) + "]");
      }
  }
  std::printf("parity vs PyTorch (f64 reference), tolerance atol + %.0e * |ref|, atol %.0e (grads %.0e):\n"
              "  logits   max |err| %.3g (worst at %.2f of the allowance: %s)\n"
              "  loss     %.7f vs %.7f, |err| %.3g\n"
              "  grads    max |err| %.3g over %zu tensors, max |grad| %.3g (worst at %.2f: %s)\n",
              kRtol, kAtol, kGradAtol, wl.err, wl.ratio, wl.where.c_str(), loss, ref_loss[0], wloss.err, wg.err, layout.size(),
              grad_max, wg.ratio, wg.where.c_str());
  EXPECT_LE(wl.ratio, 1.0) << wl.where;
  EXPECT_LE(wloss.ratio, 1.0) << wloss.where;
  EXPECT_LE(wg.ratio, 1.0) << wg.where;
  EXPECT_GT(grad_max, 1e-3) << "gradients too small for the comparison to mean anything";

  // Export, then import the export: the same weights bit for bit, and the exported tensors are
  // the original file's bytes (exact transposes, no rounding anywhere).
  RunResult exr = run_loom({"export", "--to", "gpt2-safetensors", "--checkpoint", d / "run", "--out", d / "exp.safetensors"});
  ASSERT_EQ(exr.rc, 0) << exr.err;
  RunResult im2 = run_loom({"import", "--from", "gpt2-safetensors", d / "exp.safetensors", "--out", d / "run2"});
  ASSERT_EQ(im2.rc, 0) << im2.err << " (the export's n_head metadata should make --n-head unnecessary)";
  const CheckpointData ck2 = load_checkpoint(d / "run2", false);
  EXPECT_EQ(ck2.model.n_head, kHeads);
  EXPECT_EQ(ck2.tokenizer, "byte");
  ASSERT_EQ(ck2.params.size(), ck.params.size());
  EXPECT_EQ(std::memcmp(ck2.params.data(), ck.params.data(), ck.params.size() * 4), 0) << "re-import changed weights";
  const StFile orig = read_safetensors(d / "model.safetensors"), exp = read_safetensors(d / "exp.safetensors");
  EXPECT_EQ(exp.tensors.size(), layout.size()) << "export must hold the parameters only (no lm_head, no buffers)";
  EXPECT_EQ(exp.metadata.at("format"), "pt");
  for (const auto& nm : names) {
    const StTensor *a = exp.find(nm.gpt2), *b = orig.find("transformer." + nm.gpt2);
    ASSERT_TRUE(a && b) << nm.gpt2;
    EXPECT_EQ(a->shape, b->shape) << nm.gpt2;
    EXPECT_TRUE(a->data == b->data) << nm.gpt2 << " differs from the original file";
  }
  RunResult exr2 = run_loom({"export", "--to", "gpt2-safetensors", "--checkpoint", d / "run2", "--out", d / "exp2.safetensors"});
  ASSERT_EQ(exr2.rc, 0) << exr2.err;
  EXPECT_EQ(read_bytes(d / "exp.safetensors"), read_bytes(d / "exp2.safetensors"));

  // BF16 and F16 files (bare GPT2Model names, no metadata): exactly the rounded values,
  // widened. torch rounds to nearest even, as to_bf16 and _Float16 do.
  Gpt2ImportOptions o;
  o.n_head = kHeads;
  const Gpt2Model hb = read_gpt2_safetensors(d / "model_bf16.safetensors", o);
  const Gpt2Model hh = read_gpt2_safetensors(d / "model_f16.safetensors", o);
  ASSERT_EQ(hb.params.size(), ck.params.size());
  ASSERT_EQ(hh.params.size(), ck.params.size());
  size_t changed_b = 0, changed_h = 0, bad_b = 0, bad_h = 0;
  for (size_t i = 0; i < ck.params.size(); ++i) {
    const float w = ck.params[i];
    const float wb = from_bf16(to_bf16(w)), wh = static_cast<float>(static_cast<_Float16>(w));
    bad_b += hb.params[i] != wb;
    bad_h += hh.params[i] != wh;
    changed_b += wb != w;
    changed_h += wh != w;
  }
  EXPECT_EQ(bad_b, 0u) << "BF16 import differs from the rounded weights";
  EXPECT_EQ(bad_h, 0u) << "F16 import differs from the rounded weights";
  EXPECT_GT(changed_b, ck.params.size() / 2) << "the BF16 file should hold rounded weights";
  EXPECT_GT(changed_h, ck.params.size() / 2) << "the F16 file should hold rounded weights";
}

TEST(Gpt2, ImportedCheckpointSamplesAndFineTunes) {
  TempDir d;
  const ModelConfig c = tiny_gpt();
  write_safetensors(d / "gpt2.safetensors", loom_made_gpt2(c));
  RunResult im = run_loom({"import", "--from", "gpt2-safetensors", d / "gpt2.safetensors", "--out", d / "ft",
                           "--n-head", "2", "--seq-len", "8"});
  ASSERT_EQ(im.rc, 0) << im.err;
  const CheckpointData ck = load_checkpoint(d / "ft", false);
  EXPECT_EQ(ck.model.seq_len, 8);  // wpe cut to its first 8 rows
  EXPECT_EQ(ck.tokenizer, "byte");

  RunResult s = run_loom({"sample", "--checkpoint", d / "ft", "--prompt", "The", "--max-new-tokens", "6", "--greedy",
                          "--device", "cpu"});
  ASSERT_EQ(s.rc, 0) << s.err;
  EXPECT_EQ(s.out.rfind("The", 0), 0u) << s.out;

  // Fine-tuning continues the imported run: its config.toml with real data and fewer steps.
  const std::string data = prepare_tiny_data(d.str(), 60000);
  RunResult t = run_loom({"train", "--config", d / "ft/config.toml", "--data.path", data, "--train.steps", "4",
                          "--train.batch_size", "2", "--train.eval_every", "4", "--train.eval_steps", "1",
                          "--checkpoint.every", "4", "--device", "cpu", "--resume"});
  ASSERT_EQ(t.rc, 0) << t.err << t.out;
  EXPECT_NE(t.out.find("resuming from"), std::string::npos) << t.out;
  const CheckpointData after = load_checkpoint(d / "ft", false);
  EXPECT_EQ(fs::path(after.dir).filename().string(), "step_00000004");
  EXPECT_NE(std::memcmp(after.params.data(), ck.params.data(), ck.params.size() * 4), 0) << "fine-tuning changed nothing";
}

TEST(Gpt2, BadInputIsOneLineNamingTheFile) {
  TempDir d;
  const ModelConfig c = tiny_gpt();
  const StFile good = loom_made_gpt2(c);
  auto import = [&](const std::string& file, std::vector<std::string> extra = {"--n-head", "2"}) {
    static int n = 0;
    std::vector<std::string> args = {"import", "--from", "gpt2-safetensors", file, "--out", d / ("out" + std::to_string(n++))};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_loom(args);
  };
  auto variant = [&](const std::string& name, auto&& edit) {
    StFile f = good;
    edit(f);
    write_safetensors(d / name, f);
    return d / name;
  };
  auto erase = [](StFile& f, const std::string& n) {
    std::erase_if(f.tensors, [&](const StTensor& t) { return t.name == n; });
  };
  auto at = [](StFile& f, const std::string& n) -> StTensor& {
    for (auto& t : f.tensors)
      if (t.name == n) return t;
    throw std::runtime_error("no " + n);
  };

  // The good file imports (so every failure below is the edit's doing).
  const std::string ok = variant("ok.safetensors", [](StFile&) {});
  ASSERT_EQ(import(ok).rc, 0);

  std::ofstream(d / "text.safetensors") << "this is not a safetensors file at all";
  expect_user_error(import(d / "text.safetensors"), d / "text.safetensors");

  // A copy of tensor `of` under the name `as`, added to the file.
  auto add_copy = [&](StFile& f, const std::string& of, const std::string& as) -> StTensor& {
    StTensor t = at(f, of);
    t.name = as;
    return f.tensors.emplace_back(std::move(t));
  };
  // Refused with one line that names `file` and says `what`.
  auto refused = [](const RunResult& r, const std::string& file, const std::string& what) {
    expect_user_error(r, file);
    EXPECT_NE(r.err.find(what), std::string::npos) << r.err;
  };

  const std::string missing = variant("missing.safetensors", [&](StFile& f) { erase(f, "h.1.mlp.c_fc.bias"); });
  refused(import(missing), missing, "h.1.mlp.c_fc.bias");

  // A [3C, C] c_attn (loom's layout, not GPT-2's Conv1D [C, 3C]).
  const std::string shape = variant("shape.safetensors", [&](StFile& f) {
    StTensor& t = at(f, "h.0.attn.c_attn.weight");
    std::swap(t.shape[0], t.shape[1]);
  });
  refused(import(shape), shape, "Conv1D");

  const std::string unknown =
      variant("unknown.safetensors", [&](StFile& f) { add_copy(f, "h.0.ln_1.bias", "h.0.attn.rotary_emb"); });
  refused(import(unknown), unknown, "h.0.attn.rotary_emb");

  const std::string untied =
      variant("untied.safetensors", [&](StFile& f) { add_copy(f, "wte.weight", "lm_head.weight").data[5] ^= 1; });
  refused(import(untied), untied, "lm_head.weight");
  // ... while an equal lm_head is accepted.
  const std::string tied = variant("tied.safetensors", [&](StFile& f) { add_copy(f, "wte.weight", "lm_head.weight"); });
  EXPECT_EQ(import(tied).rc, 0);

  const std::string ints = variant("ints.safetensors", [&](StFile& f) { at(f, "ln_f.bias").dtype = "I32"; });
  refused(import(ints), ints, "I32");

  // No head count anywhere and d_model != 768.
  const std::string nohead = variant("nohead.safetensors", [](StFile& f) { f.metadata.clear(); });
  refused(import(nohead, {}), nohead, "--n-head");
  expect_user_error(import(nohead, {"--n-head", "5"}), "--n-head");  // 32 is not a multiple of 5

  // A vocabulary that is neither GPT-2's nor bytes needs --tokenizer.
  StFile odd = loom_made_gpt2(tiny_gpt(100));
  odd.metadata.erase("tokenizer");
  write_safetensors(d / "odd.safetensors", odd);
  refused(import(d / "odd.safetensors"), d / "odd.safetensors", "--tokenizer");
  expect_user_error(import(d / "odd.safetensors", {"--n-head", "2", "--tokenizer", "byte"}), "--tokenizer");

  expect_user_error(import(ok, {"--n-head", "2", "--seq-len", "17"}), "--seq-len");

  // An existing non-empty --out is never written into.
  fs::create_directories(d / "busy");
  std::ofstream(d / "busy/keep.txt") << "x";
  expect_user_error(run_loom({"import", "--from", "gpt2-safetensors", ok, "--out", d / "busy", "--n-head", "2"}),
                    d / "busy");

  // A loom checkpoint is not a GPT-2 file (bare loom names), and vice versa.
  refused(import(d / "out0/latest/model.safetensors"), "model.safetensors", "unknown tensor");
  expect_user_error(run_loom({"export", "--to", "gpt2-safetensors", "--checkpoint", ok, "--out", d / "x.safetensors"}),
                    ok);

  const RunResult r = run_loom({"import", "--from", "gguf", ok, "--out", d / "g"});
  EXPECT_EQ(r.rc, 2) << r.err;
  EXPECT_NE(r.err.find("--from"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace loom::test
