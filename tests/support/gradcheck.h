// gradcheck.h: finite-difference gradient checking of graphs in double precision.
//
// For a graph output y and a random cotangent r, L = sum(y * r). The analytic gradients come
// from the graph's own backward nodes (autodiff + the CPU backend in double); the numeric
// ones from central differences of L. Sampled elements of every float input and parameter
// are compared with |analytic - numeric| <= atol + rtol * |numeric|; NaN fails.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/backend/backend.h"
#include "core/rng.h"
#include "engine/graph/executor.h"

namespace loom::test {

struct GradCheckOptions {
  double h = 1e-5, atol = 1e-7, rtol = 1e-5;
  int samples = 24;  // elements checked per tensor (all of them if fewer)
  uint64_t seed = 1;
};

// Fills every parameter with N(0, scale) noise (plus 1 for gains so norms stay well
// conditioned), float inputs with N(0,1); `fill_int` fills integer inputs. Float inputs not
// in `float_inputs` (a recurrent layer's initial state) are held constant at N(0, 0.5).
inline void check_graph_grads(Graph& g, int out, const std::vector<int>& float_inputs,
                              const std::function<void(int value, std::vector<int32_t>&)>& fill_int,
                              const GradCheckOptions& o = {}) {
  Rng rng(o.seed);
  const int seed = g.input("seed", g.values[out].shape, DType::F64);
  g.mark_output(out);
  auto grads = build_backward(g, {{out, seed}}, float_inputs);
  auto be = make_cpu_backend(DType::F64);
  Executor ex(g, *be);
  std::vector<double> params(g.param_count), pgrads(g.param_count, 0.0);
  for (const auto& p : g.params)
    for (int64_t i = 0; i < p.count(); ++i)
      params[p.offset + i] = (p.init == Init::Ones ? 1.0 : 0.0) + 0.5 * rng.normal();
  ex.bind_params(params.data(), pgrads.data());
  std::map<int, std::vector<double>> fin;
  for (int v : float_inputs) {
    auto& d = fin[v];
    d.resize(numel(g.values[v].shape));
    for (auto& x : d) x = rng.normal();
    ex.set_input(v, d.data(), d.size() * 8);
  }
  for (size_t v = 0; v < g.values.size(); ++v)
    if (g.values[v].kind == ValueKind::Input && g.values[v].dtype == DType::F64 && static_cast<int>(v) != seed &&
        !fin.count(static_cast<int>(v))) {
      std::vector<double> d(numel(g.values[v].shape));
      for (auto& x : d) x = 0.5 * rng.normal();
      ex.set_input(static_cast<int>(v), d.data(), d.size() * 8);
    }
  for (size_t v = 0; v < g.values.size(); ++v)
    if (g.values[v].kind == ValueKind::Input && g.values[v].dtype == DType::I32) {
      std::vector<int32_t> d(numel(g.values[v].shape));
      fill_int(static_cast<int>(v), d);
      ex.set_input(static_cast<int>(v), d.data(), d.size() * 4);
    }
  std::vector<double> r(numel(g.values[out].shape));
  for (auto& x : r) x = rng.normal();
  ex.set_input(seed, r.data(), r.size() * 8);
  ex.run();
  auto loss = [&]() {
    ex.forward();
    auto y = ex.fetch<double>(out);
    double s = 0;
    for (size_t i = 0; i < y.size(); ++i) s += y[i] * r[i];
    return s;
  };
  auto compare = [&](const std::string& what, int64_t count, const std::function<double(int64_t)>& analytic,
                     const std::function<void(int64_t, double)>& nudge) {
    std::vector<int64_t> idx;
    if (count <= o.samples) {
      for (int64_t i = 0; i < count; ++i) idx.push_back(i);
    } else {
      for (int k = 0; k < o.samples; ++k) idx.push_back(static_cast<int64_t>(rng.below(count)));
    }
    double worst = 0;
    for (int64_t i : idx) {
      nudge(i, o.h);
      const double lp = loss();
      nudge(i, -2 * o.h);
      const double lm = loss();
      nudge(i, o.h);
      const double num = (lp - lm) / (2 * o.h), ana = analytic(i);
      const double err = std::fabs(ana - num);
      ASSERT_FALSE(std::isnan(ana) || std::isnan(num)) << what << "[" << i << "] is NaN";
      EXPECT_LE(err, o.atol + o.rtol * std::fabs(num)) << what << "[" << i << "]: analytic " << ana << " numeric " << num;
      worst = std::max(worst, err);
    }
    ::testing::Test::RecordProperty(what, std::to_string(worst));
  };
  for (int v : float_inputs) {
    ASSERT_TRUE(grads.count(v)) << "no gradient for input " << g.values[v].name;
    auto ga = ex.fetch<double>(grads[v]);
    auto& d = fin[v];
    compare(g.values[v].name, d.size(), [&](int64_t i) { return ga[i]; },
            [&](int64_t i, double dx) {
              d[i] += dx;
              ex.set_input(v, d.data(), d.size() * 8);
            });
  }
  const std::vector<double> pg = pgrads;
  for (const auto& p : g.params)
    compare(p.name, p.count(), [&](int64_t i) { return pg[p.offset + i]; },
            [&](int64_t i, double dx) { params[p.offset + i] += dx; });
}

}  // namespace loom::test
