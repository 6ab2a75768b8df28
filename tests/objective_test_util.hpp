// Shared by the objectives' hand-computation tests: one step of an objective on fresh random data.
#pragma once
#include <shortcut/shortcut.hpp>

#include <vector>

#include "test_util.hpp"

namespace objtest {

struct StepData {
  std::vector<double> x1;     // [B, dim], sd 2
  std::vector<int32_t> y;     // labels cycling over the classes
  uint64_t seed = 0;          // the Rng seed the step's noise came from
  shortcut::LossResult result;
};

// One step of `obj` on model m over a whole batch of B fresh rows (gradients zeroed first).
template <class Obj, class Model>
StepData run_step(Obj& obj, Model& m, int B, int dim, int classes) {
  StepData d;
  d.x1 = testutil::randn(size_t(B) * dim, 2.0);
  d.y.resize(size_t(B));
  for (int i = 0; i < B; ++i) d.y[i] = i % classes;
  shortcut::Rng rng(uint64_t(testutil::gen()()));
  d.seed = rng.seed();
  m.arena().zero_grad();
  d.result = obj.step(m, shortcut::upload(m.backend(), d.x1), d.y, shortcut::BatchSlice::all(B), rng);
  return d;
}

}  // namespace objtest
