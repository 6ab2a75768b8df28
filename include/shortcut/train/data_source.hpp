// Where the Trainer's batches come from. A data source fills this rank's rows of each batch (the rows
// of a BatchSlice, in its order: local row i is global row s.global_row(i)), either
//   - into host vectors:   void fill(Rng&, const BatchSlice&, std::vector<T>& x1, std::vector<int32_t>& y)
//     (x1 left with s.rows() * sample values, y with s.rows() labels; the trainer uploads x1), or
//   - on the device:       void fill_device(Rng&, const BatchSlice&, DeviceSpan<T, Be> x1, std::vector<int32_t>& y)
//     (x1 is exactly s.rows() * sample values of the backend's memory, to be written in place: data
//     that already lives on the accelerator skips the host round trip).
// Labels stay on the host in both cases: the batch plan (which rows are dropped, which are bootstrap
// rows) is drawn on the host from them. y arrives sized s.rows().
//
// A source draws its random choices only from the Rng it is given, and draws for the whole batch
// whatever the slice (ImageBatcher::rows_into does): the Rng's position is what a checkpoint stores,
// so exact resume and equal steps on any number of ranks depend on it.
//
// A source may keep state of its own (a sequential loader's position, an epoch counter): with
//   nlohmann::json state() const;  void restore(const nlohmann::json&);
// the Trainer writes state() into every checkpoint and restores it on resume. With N ranks the state
// must be the same on every rank (every rank sees the same Rng draws and global batch), which the
// trainer checks at the start of a run.
#pragma once
#include <concepts>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <vector>

#include "shortcut/core/batch_slice.hpp"
#include "shortcut/core/rng.hpp"
#include "shortcut/core/span.hpp"

namespace shortcut {

template <class S, class T>
concept HostDataSource = requires(S& s, Rng& rng, const BatchSlice& slice, std::vector<T>& x1, std::vector<int32_t>& y) {
  s.fill(rng, slice, x1, y);
};

template <class S, class T, class Be>
concept DeviceDataSource =
    requires(S& s, Rng& rng, const BatchSlice& slice, DeviceSpan<T, Be> x1, std::vector<int32_t>& y) {
      s.fill_device(rng, slice, x1, y);
    };

// The Trainer's contract for data of element type T on backend Be (a source with both members is
// used on the device).
template <class S, class T, class Be>
concept DataSource = HostDataSource<S, T> || DeviceDataSource<S, T, Be>;

template <class S>
concept StatefulDataSource = requires(const S& cs, S& s, const nlohmann::json& j) {
  { cs.state() } -> std::convertible_to<nlohmann::json>;
  s.restore(j);
};

// The callback forms, as sources (what Trainer::run(RowsFn) and run(BatchFn) wrap).

// Fills the slice's rows itself.
template <class T>
struct RowsSource {
  std::function<void(Rng&, const BatchSlice&, std::vector<T>&, std::vector<int32_t>&)> fn;
  void fill(Rng& rng, const BatchSlice& s, std::vector<T>& x1, std::vector<int32_t>& y) { fn(rng, s, x1, y); }
};

// Fills the whole batch [B, sample] and keeps the slice's rows: simple, and wasteful with N ranks
// where loading a row costs much (then fill the rows alone).
template <class T>
struct BatchSource {
  std::function<void(Rng&, int B, std::vector<T>&, std::vector<int32_t>&)> fn;
  size_t sample = 0;  // values per row

  void fill(Rng& rng, const BatchSlice& s, std::vector<T>& x1, std::vector<int32_t>& y) {
    const size_t n = sample;
    fn(rng, s.batch, x1, y);
    if (x1.size() != size_t(s.batch) * n || y.size() != size_t(s.batch))
      throw ShapeError(cat("batch function returned ", x1.size(), " values and ", y.size(), " labels; expected ",
                           size_t(s.batch) * n, " and ", s.batch));
    if (s.whole()) return;
    for (int i = 0; i < s.rows(); ++i) {  // local row i <- global row g >= i
      const size_t g = size_t(s.global_row(i));
      std::copy(x1.begin() + ptrdiff_t(g * n), x1.begin() + ptrdiff_t((g + 1) * n), x1.begin() + ptrdiff_t(i * n));
      y[size_t(i)] = y[g];
    }
    x1.resize(size_t(s.rows()) * n);
    y.resize(size_t(s.rows()));
  }
};

}  // namespace shortcut
