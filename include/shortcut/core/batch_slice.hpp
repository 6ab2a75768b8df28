// BatchSlice: the rows of a global batch that one data-parallel rank computes. A shortcut batch
// holds its bootstrap rows first ([0, Bb)) and its flow rows after ([Bb, B)); bootstrap rows cost two
// extra forward passes each, so every rank takes its share of both parts (contiguous blocks would
// leave all bootstrap rows to the first ranks, and the others waiting for them at the all-reduce).
// Local row i is global row global_row(i); local rows keep the global order, so a rank's bootstrap
// rows come first in its rows too.
#pragma once
#include "shortcut/core/error.hpp"

namespace shortcut {

struct BatchSlice {
  int batch = 0;                     // rows of the global batch
  int boot_begin = 0, boot_end = 0;  // this rank's bootstrap rows (global indices)
  int flow_begin = 0, flow_end = 0;  // this rank's other rows (global indices)

  int boot_rows() const { return boot_end - boot_begin; }
  int rows() const { return boot_rows() + flow_end - flow_begin; }
  bool whole() const { return rows() == batch; }
  int global_row(int i) const { return i < boot_rows() ? boot_begin + i : flow_begin + (i - boot_rows()); }

  // The whole batch: local row i is global row i.
  static BatchSlice all(int batch) { return {batch, 0, 0, 0, batch}; }
  // Rank `rank` of `ranks`, for a batch whose first `bootstrap` rows are bootstrap rows.
  static BatchSlice of_rank(int batch, int bootstrap, int rank, int ranks) {
    if (ranks < 1 || rank < 0 || rank >= ranks) throw ConfigError(cat("rank ", rank, " of ", ranks, " does not exist"));
    if (batch % ranks != 0)
      throw ConfigError(cat("the global batch of ", batch, " rows cannot be split evenly over ", ranks,
                            " ranks; use a batch that is a multiple of ", ranks, " (e.g. ",
                            (batch / ranks + 1) * ranks, ")"));
    if (bootstrap < 0 || bootstrap > batch)
      throw ConfigError(cat("batch slice: ", bootstrap, " bootstrap rows in a batch of ", batch));
    if (ranks == 1) return all(batch);
    const int flow = batch - bootstrap;
    auto cut = [&](int n, int r) { return int(int64_t(n) * r / ranks); };
    return {batch, cut(bootstrap, rank), cut(bootstrap, rank + 1), bootstrap + cut(flow, rank),
            bootstrap + cut(flow, rank + 1)};
  }
  void check() const {
    if (batch < 1 || boot_begin < 0 || boot_begin > boot_end || boot_end > flow_begin || flow_begin > flow_end ||
        flow_end > batch || rows() < 1)
      throw ShapeError(cat("batch slice (bootstrap rows [", boot_begin, ", ", boot_end, "), other rows [", flow_begin,
                           ", ", flow_end, ") of a batch of ", batch, ") is empty or outside the batch"));
  }
};

}  // namespace shortcut
