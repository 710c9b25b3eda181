// pair_tasks.h: synthetic sequence-to-sequence tasks for the tests of the pair kinds and of
// their decoding and evaluation: sorting or reversing short strings of letters, written as TSV,
// prepared by `loom prepare --pairs`, a CPU config over them, and a small encdec run's.
#pragma once
#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>

#include "core/rng.h"
#include "tests/support/helpers.h"

namespace loom::test {

// `n` pairs of `task` (reverse or sort) over letters a..h, 3 to 7 of them, as a TSV file.
inline std::string synthetic_pairs(const std::string& path, const std::string& task, int n, uint64_t seed) {
  Rng r(seed);
  std::ofstream f(path);
  for (int i = 0; i < n; ++i) {
    std::string s(3 + r.below(5), 'a');
    for (char& c : s) c = static_cast<char>('a' + r.below(8));
    std::string t = s;
    if (task == "reverse") std::reverse(t.begin(), t.end());
    else std::sort(t.begin(), t.end());
    f << s << '\t' << t << '\n';
  }
  return path;
}

// The pairs prepared into <d>/<task>_pairs (the last 10% of them val, in file order).
inline std::string prepare_pairs(const TempDir& d, const std::string& task, int n = 4000) {
  const std::string out = d / (task + "_pairs");
  const RunResult r = run_loom({"prepare", "--pairs", synthetic_pairs(d / (task + ".tsv"), task, n, 5), "--out", out,
                                "--val-fraction", "0.1"});
  EXPECT_EQ(r.rc, 0) << r.err;
  return out;
}

// A CPU config for the synthetic pairs (S = T = 8, batches of 32): `model` holds the kind's
// [model] keys, `optim` its [optim] keys, `extra` more [model] keys.
inline std::string pair_config(const std::string& model, const std::string& optim, const std::string& data,
                               const std::string& run, int steps, const std::string& extra) {
  std::ostringstream s;
  s << "device = \"cpu\"\n[model]\n" << model << "src_len = 8\nseq_len = 8\n" << extra << "[data]\npath = \"" << data
    << "\"\n[train]\nsteps = " << steps << "\nbatch_size = 32\nseed = 7\neval_every = 50\neval_steps = 2\n[optim]\n"
    << optim << "[checkpoint]\nevery = 1000\nkeep = 0\n[log]\nrun_dir = \"" << run << "\"\nevery = 50\n";
  return s.str();
}

// The [model] keys of the tests' encdec: 2+2 layers of width 64.
inline constexpr const char* kEncDecModel = "kind = \"encdec\"\nn_enc_layer = 2\nn_dec_layer = 2\nn_head = 4\nd_model = 64\n";

// That encdec on `data` (sources and targets of up to 7 letters), `steps` steps of 32 pairs;
// `extra` adds [model] keys.
inline std::string encdec_config(const std::string& data, const std::string& run, int steps,
                                 const std::string& extra = "") {
  return pair_config(kEncDecModel,
                     "lr = 3e-3\nmin_lr = 3e-4\nwarmup_steps = 20\nweight_decay = 0.0\n", data, run, steps, extra);
}

}  // namespace loom::test
