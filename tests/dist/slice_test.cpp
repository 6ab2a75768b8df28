// The pieces of data parallelism that need no second process: a rank's slice of the batch plan, of
// the noise and of the data is exactly the whole batch's, and the gradients of the slices add up to
// the whole batch's gradient.
#include <catch2/catch.hpp>

#include "dist_common.hpp"
#include "shortcut/data/batcher.hpp"
#include "shortcut/dist/reduce_buffer.hpp"
#include "test_util.hpp"

using namespace disttest;

TEST_CASE("a rank's batch plan is the whole batch's plan restricted to its rows", "[dist][plan]") {
  const uint64_t seed = testutil::gen()();
  INFO("seed " << seed);
  for (double cfg_scale : {1.5, 0.0}) {
    ShortcutConfig sc;
    sc.cfg_scale = cfg_scale;  // guided rows and dropped labels, or unconditional
    sc.class_dropout_prob = 0.3;
    const int B = 96, classes = 5;
    std::vector<int32_t> labels(B);
    for (int i = 0; i < B; ++i) labels[i] = int32_t(testutil::gen()() % classes);
    Rng whole_rng(seed, 3);
    const BatchPlan whole = plan_batch(sc, labels.data(), B, classes, whole_rng);
    for (int ranks : {2, 3, 4, 8}) {
      int bootstrap_rows = 0, guided_rows = 0;
      std::vector<int> seen(B, 0);
      for (int rank = 0; rank < ranks; ++rank) {
        const BatchSlice s = BatchSlice::of_rank(B, whole.Bb, rank, ranks);
        std::vector<int32_t> mine(s.rows());
        for (int i = 0; i < s.rows(); ++i) mine[i] = labels[s.global_row(i)];
        Rng rng(seed, 3);
        const BatchPlan p = plan_batch(sc, mine.data(), s, classes, rng);
        INFO("cfg " << cfg_scale << ", rank " << rank << " of " << ranks);
        CHECK(rng.position() == whole_rng.position());  // every rank's RNG stays in step
        CHECK(p.noise_stream == whole.noise_stream);
        REQUIRE(p.B == s.rows());
        CHECK(p.B == B / ranks);
        // its share of the bootstrap rows (which cost two extra forward passes each)
        CHECK(std::abs(p.Bb - whole.Bb / ranks) <= 1);
        bootstrap_rows += p.Bb;
        guided_rows += p.n_cfg;
        for (int i = 0; i < p.B; ++i) {
          const int g = s.global_row(i);
          ++seen[g];
          CHECK((i < p.Bb) == (g < whole.Bb));  // bootstrap rows first, here too
          CHECK((i < p.n_cfg) == (g < whole.n_cfg));
          CHECK(p.t[i] == whole.t[g]);
          CHECK(p.k[i] == whole.k[g]);
          CHECK(p.y[i] == whole.y[g]);
          if (i < p.Bb) CHECK((p.k_b[i] == whole.k_b[g] && p.half_d[i] == whole.half_d[g]));
        }
      }
      CHECK(bootstrap_rows == whole.Bb);
      CHECK(guided_rows == whole.n_cfg);
      CHECK(std::all_of(seen.begin(), seen.end(), [](int c) { return c == 1; }));  // every row on one rank
    }
  }
}

TEST_CASE("a global batch that does not split evenly over the ranks is a clear error", "[dist][plan]") {
  CHECK_THROWS_WITH(BatchSlice::of_rank(10, 2, 0, 3),
                    Catch::Contains("batch of 10 rows cannot be split evenly over 3 ranks") &&
                        Catch::Contains("multiple of 3 (e.g. 12)"));
  CHECK_THROWS_WITH(BatchSlice::of_rank(12, 3, 3, 3), Catch::Contains("rank 3 of 3 does not exist"));
  const BatchSlice s = BatchSlice::of_rank(12, 3, 2, 3);  // bootstrap rows 0..2: row 2; flow 3..11: 9..11
  CHECK((s.boot_begin == 2 && s.boot_end == 3 && s.flow_begin == 9 && s.flow_end == 12 && s.batch == 12));
  CHECK((s.rows() == 4 && s.global_row(0) == 2 && s.global_row(1) == 9 && s.global_row(3) == 11));
}

TEST_CASE("normal(first) draws numbers [first, first + n) of the stream", "[dist][noise]") {
  Be be;
  const uint64_t seed = testutil::gen()(), stream = testutil::gen()() >> 4;
  std::vector<double> whole(1000), tail(613);
  be.normal(whole.data(), whole.size(), seed, stream);
  be.normal(tail.data(), tail.size(), seed, stream, 387);
  CHECK(std::equal(tail.begin(), tail.end(), whole.begin() + 387));
  be.normal(tail.data(), tail.size(), seed, stream, 386);
  CHECK_FALSE(std::equal(tail.begin(), tail.end(), whole.begin() + 387));
}

TEST_CASE("ImageBatcher::rows_into writes the rows of next_into's batch", "[dist][data]") {
  data::ImageDataset ds;
  ds.n = 37; ds.h = 3; ds.w = 2; ds.c = 1; ds.classes = 4;
  ds.images = testutil::randn<float>(size_t(ds.n) * 6);
  for (int i = 0; i < ds.n; ++i) ds.labels.push_back(i % 4);
  data::ImageBatcher batcher(ds, true);
  const uint64_t seed = testutil::gen()();
  Rng a(seed), b(seed);
  std::vector<float> whole(20 * 6), part(7 * 6);
  std::vector<int32_t> wl(20), pl(7);
  batcher.next_into(20, a, whole.data(), wl.data());
  const BatchSlice s{20, 2, 4, 9, 14};  // rows 2, 3 and 9..13
  batcher.rows_into(s, b, part.data(), pl.data());
  CHECK(a.position() == b.position());
  for (int i = 0; i < 7; ++i) {
    const int g = s.global_row(i);
    CHECK(std::equal(part.begin() + i * 6, part.begin() + (i + 1) * 6, whole.begin() + g * 6));
    CHECK(pl[i] == wl[g]);
  }
  CHECK_THROWS_WITH(batcher.rows_into(BatchSlice{20, 0, 0, 15, 21}, b, part.data(), pl.data()),
                    Catch::Contains("outside the batch"));
}

TEST_CASE("the gradients and loss sums of a batch's slices add up to the whole batch's", "[dist][loss]") {
  Be be;
  const uint64_t seed = testutil::gen()();
  INFO("seed " << seed);
  ShortcutConfig sc;
  const int B = 48;
  Model whole(be, net(), seed % 1000);
  whole.arena().copy_role(Role::Ema, Role::Param);
  SelfConsistencyLoss<Model> loss(sc);
  Rng rng(seed, 11);
  std::vector<double> x;
  std::vector<int32_t> y;
  Rng data_rng = rng;
  rows<double>(data_rng, BatchSlice::all(B), x, y);
  whole.arena().zero_grad();
  Rng step_rng = data_rng;
  const auto ref = loss.step(whole, upload(be, x), y, BatchSlice::all(B), step_rng);
  const std::vector<double> g_ref = whole.arena().to_host(Role::Grad);
  for (int ranks : {2, 3}) {
    Model part(be, net(), seed % 1000);
    part.arena().copy_role(Role::Ema, Role::Param);
    part.arena().zero_grad();
    std::vector<double> g_sum(g_ref.size(), 0.0);
    double loss_sum = 0, boot_sum = 0, flow_sum = 0;
    for (int rank = 0; rank < ranks; ++rank) {
      const BatchSlice s = BatchSlice::of_rank(B, sc.bootstrap_rows(B), rank, ranks);
      Rng r2 = rng;
      rows<double>(r2, s, x, y);
      part.arena().zero_grad();
      const auto res = loss.step(part, upload(be, x), y, s, r2);
      CHECK(r2.position() == step_rng.position());
      const std::vector<double> g = part.arena().to_host(Role::Grad);
      for (size_t i = 0; i < g.size(); ++i) g_sum[i] += g[i];
      loss_sum += res.loss_sum; boot_sum += res.bootstrap_sum; flow_sum += res.flow_sum;
    }
    INFO(ranks << " slices");
    double gmax = 0;
    for (double v : g_ref) gmax = std::max(gmax, std::abs(v));
    CHECK(max_abs_diff(g_sum, g_ref) <= 64 * 1.1e-16 * B * std::max(gmax, 1.0));
    CHECK(std::abs(loss_sum - ref.loss_sum) <= 1e-12 * std::abs(ref.loss_sum));
    CHECK(std::abs(boot_sum - ref.bootstrap_sum) <= 1e-12 * std::abs(ref.bootstrap_sum));
    CHECK(std::abs(flow_sum - ref.flow_sum) <= 1e-12 * std::abs(ref.flow_sum));
  }
}

namespace {
// Two ranks whose other rank holds the same values: a sum doubles the buffer. Records what it got.
struct TwoEqualRanks {
  bool device = false;
  const void* last = nullptr;
  int rank() const { return 0; }
  int size() const { return 2; }
  bool device_memory() const { return device; }
  template <class T>
  void all_reduce(T* p, size_t n, dist::ReduceOp) {
    last = p;
    for (size_t i = 0; i < n; ++i) p[i] += p[i];
  }
  void broadcast(void*, size_t, int) {}
  void barrier() {}
  void abort(std::string_view, int) { std::abort(); }
};
static_assert(dist::Communicator<TwoEqualRanks>);
}  // namespace

TEST_CASE("BufferReducer sums host-memory buffers in place", "[dist][reduce]") {
  Be be;
  std::vector<double> v = {1, -2, 3.5};
  TwoEqualRanks comm;
  dist::BufferReducer<Be> r;
  r.sum(comm, be, v.data(), v.size());
  CHECK(v == std::vector<double>{2, -4, 7});
  CHECK(comm.last == v.data());
  CHECK_FALSE(r.staged());
}
