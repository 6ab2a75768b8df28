// What the data-parallel tests share: a small conditional MLP model in double, a data source that
// fills any rows of a batch from counters (as ImageBatcher does), and the tolerance of "the same
// steps up to the summation order".
#pragma once
#include <cmath>
#include <vector>

#include "shortcut/shortcut.hpp"

namespace disttest {
using namespace shortcut;
using Be = cpu::Backend<double>;
using Model = ShortcutModel<nn::MlpNet<Be>>;
// float: checkpoints hold float32, so bit-exact resume is a float property
using FBe = cpu::Backend<float>;
using FModel = ShortcutModel<nn::MlpNet<FBe>>;

inline nn::MlpNetConfig net() {
  nn::MlpNetConfig c;
  c.hidden = 16;
  c.depth = 2;
  c.classes = 3;  // labels, dropped labels and guided bootstrap rows all take part
  return c;
}

// Row r of a batch: a point near one of three centres, its label the centre; from counters
// (stream, r) of one stream, so any rows come out as in the whole batch.
template <class T>
void rows(Rng& rng, const BatchSlice& s, std::vector<T>& x, std::vector<int32_t>& y) {
  const uint64_t seed = rng.seed(), stream = rng.next_stream();
  x.resize(size_t(s.rows()) * 2);
  y.resize(size_t(s.rows()));
  for (int i = 0; i < s.rows(); ++i) {
    const int r = s.global_row(i);
    const int32_t c = int32_t(philox_uniform(seed, stream, 3 * uint64_t(r)) * 3) % 3;
    y[i] = c;
    x[2 * i] = T(2.0 * std::cos(2.1 * c) + 0.3 * philox_normal(seed, stream, 3 * uint64_t(r) + 1));
    x[2 * i + 1] = T(2.0 * std::sin(2.1 * c) + 0.3 * philox_normal(seed, stream, 3 * uint64_t(r) + 2));
  }
}

template <class T>
double max_abs_diff(const std::vector<T>& a, const std::vector<T>& b) {
  double m = a.size() == b.size() ? 0 : INFINITY;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::abs(double(a[i]) - double(b[i])));
  return m;
}

// Two runs that differ only in how the batch's gradient is summed (one GEMM over B rows, or N GEMMs
// over B/N rows and an all-reduce) see gradients that differ by about B u |g| (u = 2^-53 in double).
// AdamW divides by sqrt(v) + eps, so a step moves a weight by at most lr * B u |g|max / eps more: with
// B <= 64 and |g| <= 10 that is lr * 64 * 1.1e-16 * 10 / 1e-8 = lr * 7e-6 per step. The bound is
// loose by orders of magnitude where v is not tiny, and still orders of magnitude below what a
// wrong row, label or noise draw does (a change of order lr per step).
inline double weight_tolerance(int64_t steps, double lr) { return double(steps) * lr * 1e-5; }
// The same in float (u = 6e-8, 5e8 times double's): the bound is then above lr, so it is replaced by
// 1e-3 lr per step: measured differences stay 100x below (6e-8 after 4 steps at lr 3e-3), a wrong
// row, label or noise draw moves weights by about lr.
inline double float_weight_tolerance(int64_t steps, double lr) { return double(steps) * lr * 1e-3; }
}  // namespace disttest
