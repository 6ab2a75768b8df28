// Data-parallel training over MPI, run by CTest under mpiexec with 1, 2 and 3 ranks (oversubscribed
// on a 2-core machine): every rank runs every test case in the same order, so the collectives inside
// them line up. Each rank also trains the one-process reference itself, so no result crosses ranks
// except through the code under test.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "dist_common.hpp"
#include "shortcut/dist/mpi.hpp"
#include "test_util.hpp"

using namespace disttest;
namespace fs = std::filesystem;
using Mpi = dist::MpiCommunicator;

namespace {
Mpi* world = nullptr;

struct Setup {
  ShortcutConfig sc;
  AdamWConfig oc;
  TrainerConfig tc;
  uint64_t seed = 0;
  Setup() {
    oc.lr = 3e-3;
    oc.warmup_steps = 2;
    tc.batch = 48;  // 1, 2 and 3 ranks split it evenly
    tc.steps = 8;
    tc.ema_tau = 0.9;
    tc.progress = false;
    // the same fresh seed on every rank
    int64_t s = int64_t(testutil::gen()() >> 2);
    world->broadcast(&s, sizeof s, 0);
    seed = uint64_t(s);
    tc.seed = seed;
  }
};

// Trains `m` with the trainer `t`, returning the loss of every step.
template <class Tr>
std::vector<double> losses_of(Tr& t) {
  std::vector<double> l;
  t.run(typename Tr::RowsFn(rows<typename Tr::T>), [&](int64_t) { l.push_back(t.last().loss); });
  return l;
}

// The same bits on every rank (weights after all-reduced steps must not drift apart).
template <class T>
bool same_on_all_ranks(const std::vector<T>& v) {
  int64_t f = int64_t(dist::fingerprint(v.data(), v.size() * sizeof(T)) >> 1), lo = f, hi = f;
  world->all_reduce(&lo, 1, dist::ReduceOp::Min);
  world->all_reduce(&hi, 1, dist::ReduceOp::Max);
  return lo == hi;
}

// The message of the DistributedError that f throws ("" if none): collective calls run once on every
// rank whatever the outcome.
template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const dist::DistributedError& e) {
    return e.what();
  }
  return "";
}

// A folder every rank sees (rank 0 makes it; same machine).
fs::path shared_dir(const std::string& name) {
  std::string d;
  if (world->rank() == 0) {
    d = (testutil::scratch_dir("shortcut_mpi_test") / name).string();
    fs::remove_all(d);
  }
  dist::broadcast_string(*world, d);
  return d;
}
}  // namespace

TEST_CASE("N ranks with B/N rows each take the steps of one process with batch B", "[mpi][equivalence]") {
  Be be;
  Setup s;
  INFO("ranks " << world->size() << ", seed " << s.seed);
  Model dist_model(be, net(), s.seed % 1000);
  Trainer<Model, Mpi> dt(dist_model, s.sc, s.oc, s.tc, *world);
  const std::vector<double> dist_loss = losses_of(dt);

  Model ref_model(be, net(), s.seed % 1000);
  Trainer<Model> rt(ref_model, s.sc, s.oc, s.tc);
  const std::vector<double> ref_loss = losses_of(rt);

  const double tol = weight_tolerance(s.tc.steps, s.oc.lr);
  for (Role r : {Role::Param, Role::Ema, Role::AdamM, Role::AdamV}) {
    const auto d = dist_model.arena().to_host(r), ref = ref_model.arena().to_host(r);
    const double diff = max_abs_diff(d, ref);
    INFO(role_name(r) << ": max |distributed - one process| = " << diff << ", tolerance " << tol);
    if (r == Role::Param || r == Role::Ema) CHECK(diff <= tol);
    if (world->size() == 1) CHECK(d == ref);  // one rank: the one-process code path, bit for bit
    CHECK(same_on_all_ranks(d));
  }
  REQUIRE(dist_loss.size() == ref_loss.size());
  for (size_t i = 0; i < ref_loss.size(); ++i) CHECK(std::abs(dist_loss[i] - ref_loss[i]) <= 1e-9 * ref_loss[i]);
  if (world->rank() == 0)
    WARN(world->size() << " ranks: max |w - w_ref| = " << max_abs_diff(dist_model.arena().to_host(Role::Param),
                                                                          ref_model.arena().to_host(Role::Param))
                       << " after " << s.tc.steps << " steps (tolerance " << tol << ")");
}

TEST_CASE("the whole-batch data callback (BatchFn) trains the same steps as per-row data", "[mpi][equivalence]") {
  Be be;
  Setup s;
  s.tc.steps = 4;
  Model a(be, net(), 7), b(be, net(), 7);
  Trainer<Model, Mpi> ta(a, s.sc, s.oc, s.tc, *world);
  ta.run(typename Trainer<Model, Mpi>::RowsFn(rows<double>));
  Trainer<Model, Mpi> tb(b, s.sc, s.oc, s.tc, *world);
  tb.run([](Rng& rng, int B, std::vector<double>& x, std::vector<int32_t>& y) { rows(rng, BatchSlice::all(B), x, y); });
  CHECK(a.arena().to_host(Role::Param) == b.arena().to_host(Role::Param));
}

TEST_CASE("ranks that disagree on the configuration or the resume point stop at the start", "[mpi][agreement]") {
  if (world->size() == 1) return;  // nothing to disagree with
  Be be;
  Setup s;
  const int last = world->size() - 1;
  const std::string who = cat("rank ", last, " of ", world->size(), " disagrees with rank 0 on ");
  {
    AdamWConfig oc = s.oc;
    if (world->rank() == last) oc.lr *= 2;
    Model m(be, net(), 1);
    Trainer<Model, Mpi> t(m, s.sc, oc, s.tc, *world);
    const std::string msg = error_of([&] { losses_of(t); });
    CHECK_THAT(msg, Catch::Contains(who + "the training configuration"));
    CHECK_THAT(msg, Catch::Contains("adamw"));  // where they differ
  }
  // checkpoints at steps 2 and 3 of one run
  const fs::path dir = shared_dir("agreement");
  if (world->rank() == 0) {
    Model m(be, net(), 1);
    TrainerConfig tc = s.tc;
    tc.steps = 3;
    tc.checkpoint_every = 1;
    tc.out_dir = dir.string();
    Trainer<Model>(m, s.sc, s.oc, tc).run(typename Trainer<Model>::RowsFn(rows<double>));
  }
  world->barrier();
  {
    Model m(be, net(), 1);
    Trainer<Model, Mpi> t(m, s.sc, s.oc, s.tc, *world);
    t.resume((dir / "checkpoints" / (world->rank() == last ? "step_3" : "step_2")).string());
    CHECK_THAT(error_of([&] { losses_of(t); }), Catch::Contains(who + "the resume point"));
  }
  {
    Model m(be, net(), 1);
    Trainer<Model, Mpi> t(m, s.sc, s.oc, s.tc, *world);
    t.resume((dir / "checkpoints" / "step_2").string());
    if (world->rank() == last) {  // the same step and RNG position, other weights
      auto w = m.arena().to_host(Role::Param);
      w[5] += 1e-9;
      m.arena().from_host(Role::Param, w);
    }
    CHECK_THAT(error_of([&] { losses_of(t); }), Catch::Contains(who + "the resume point"));
  }
  {  // agreeing ranks, after the failures: the communicator is still in step
    Model m(be, net(), 1);
    Trainer<Model, Mpi> t(m, s.sc, s.oc, s.tc, *world);
    t.resume((dir / "checkpoints" / "step_2").string());
    CHECK_NOTHROW(losses_of(t));
    CHECK(t.step() == s.tc.steps);
  }
}

TEST_CASE("a global batch that does not split evenly over the ranks is refused", "[mpi][agreement]") {
  if (world->size() == 1) return;
  Be be;
  Setup s;
  s.tc.batch = 16 * world->size() + 1;
  Model m(be, net(), 1);
  CHECK_THROWS_WITH((Trainer<Model, Mpi>(m, s.sc, s.oc, s.tc, *world)),
                    Catch::Contains(cat("cannot be split evenly over ", world->size(), " ranks")));
}

TEST_CASE("a checkpoint written by N ranks resumes on N ranks bit for bit and on one process", "[mpi][resume]") {
  FBe be;  // float, as checkpoints are
  Setup s;
  const fs::path dir = shared_dir("resume");
  FModel straight(be, net(), 3);
  {
    TrainerConfig tc = s.tc;
    tc.checkpoint_every = 4;
    tc.out_dir = dir.string();  // rank 0 writes
    Trainer<FModel, Mpi> t(straight, s.sc, s.oc, tc, *world);
    losses_of(t);
  }
  const std::string half = (dir / "checkpoints" / "step_4").string();
  REQUIRE(fs::exists(half));  // every rank sees it once run() returned
  FModel again(be, net(), 99);  // other init: everything comes from the checkpoint
  Trainer<FModel, Mpi> t2(again, s.sc, s.oc, s.tc, *world);
  t2.resume(half);
  CHECK(t2.step() == 4);
  losses_of(t2);
  for (Role r : {Role::Param, Role::Ema, Role::AdamM, Role::AdamV}) {
    INFO(role_name(r));
    CHECK(again.arena().to_host(r) == straight.arena().to_host(r));
  }
  FModel alone(be, net(), 99);  // one process continues the N-rank run
  Trainer<FModel> t1(alone, s.sc, s.oc, s.tc);
  t1.resume(half);
  losses_of(t1);
  const double tol = float_weight_tolerance(s.tc.steps - 4, s.oc.lr);
  CHECK(max_abs_diff(alone.arena().to_host(Role::Param), straight.arena().to_host(Role::Param)) <= tol);
  CHECK(max_abs_diff(alone.arena().to_host(Role::Ema), straight.arena().to_host(Role::Ema)) <= tol);
}

int main(int argc, char** argv) {
  dist::MpiSession session(argc, argv);
  int rc = 0;
  {
    Mpi comm;
    world = &comm;
    // Rank 0 reports on stdout; the other ranks (which assert the same on their own numbers) into a
    // file, shown only when they failed, so that one report is read, not N interleaved.
    std::vector<char*> args(argv, argv + argc);
    std::string out = (fs::temp_directory_path() / cat("shortcut_mpi_test_rank", comm.rank(), "_", ::getpid())).string();
    std::string flag = "--out";
    if (comm.rank() != 0) {
      args.push_back(flag.data());
      args.push_back(out.data());
    }
    Catch::Session catch_session;
    rc = catch_session.run(int(args.size()), args.data());
    if (comm.rank() != 0 && rc != 0) {
      std::ifstream f(out);
      std::fprintf(stderr, "---- rank %d ----\n%s\n", comm.rank(),
                   std::string(std::istreambuf_iterator<char>(f), {}).c_str());
    }
    if (comm.rank() != 0) fs::remove(out);
    int64_t worst = rc;
    comm.all_reduce(&worst, 1, dist::ReduceOp::Max);  // a failure on any rank fails the test
    rc = int(worst);
    world = nullptr;
  }
  return rc;
}
