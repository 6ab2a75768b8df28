// The trainer loop: exact resume, metrics and checkpoints on disk, and a short checkerboard run in
// which the shortcut model's one-step samples beat plain flow matching's one-step samples.
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>
#include <csignal>
#include <cstdlib>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <random>

#include "shortcut/data/toy2d.hpp"
#include "shortcut/metrics/distribution.hpp"
#include "shortcut/shortcut.hpp"
#include "test_util.hpp"

using namespace shortcut;
namespace fs = std::filesystem;
using Be = cpu::Backend<float>;
using Model = ShortcutModel<nn::MlpNet<Be>>;

static nn::MlpNetConfig small_net() {
  nn::MlpNetConfig c;
  c.hidden = 16; c.depth = 2; c.classes = 3;
  return c;
}
static void toy_batch(Rng& rng, int B, std::vector<float>& x, std::vector<int32_t>& y) {
  x = data::sample_toy2d("8gaussians", B, rng);
  y.resize(B);
  for (int i = 0; i < B; ++i) y[i] = int32_t(rng.randint(3));
}
static fs::path temp_dir(const std::string& name) {
  fs::path d = testutil::scratch_dir("shortcut_trainer_test") / name;
  fs::remove_all(d);
  return d;
}

TEST_CASE("exact resume: N steps straight equal N/2 + resume + N/2", "[trainer][resume]") {
  Be be;
  const uint64_t seed = testutil::gen()() % 1000;
  ShortcutConfig sc;
  AdamWConfig oc;
  oc.lr = 3e-3; oc.warmup_steps = 3; oc.cosine_steps = 12;
  TrainerConfig tc;
  tc.batch = 32; tc.seed = seed; tc.progress = false; tc.ema_tau = 0.9;
  fs::path dir = temp_dir("resume");

  Model straight(be, small_net(), seed);
  tc.steps = 12;
  Trainer<Model>(straight, sc, oc, tc).run(toy_batch);

  Model first(be, small_net(), seed);
  tc.steps = 6;
  tc.out_dir = (dir / "half").string();
  Trainer<Model>(first, sc, oc, tc).run(toy_batch);

  Model second(be, small_net(), seed + 1);  // different init: everything must come from the checkpoint
  tc.steps = 12;
  tc.out_dir = "";
  Trainer<Model> t2(second, sc, oc, tc);
  t2.resume((dir / "half" / "checkpoints" / "last").string());
  CHECK(t2.step() == 6);
  t2.run(toy_batch);
  for (Role r : {Role::Param, Role::Ema, Role::AdamM, Role::AdamV}) {
    INFO("role " << role_name(r));
    CHECK(straight.arena().to_host(r) == second.arena().to_host(r));  // bit for bit
  }
  // and the resumed run differs from a run that did not resume (the check can fail)
  Model fresh(be, small_net(), seed + 1);
  tc.steps = 6;
  Trainer<Model>(fresh, sc, oc, tc).run(toy_batch);
  CHECK(fresh.arena().to_host(Role::Param) != straight.arena().to_host(Role::Param));
  fs::remove_all(dir);
}

TEST_CASE("trainer writes metrics lines and periodic checkpoints", "[trainer][files]") {
  Be be;
  Model m(be, small_net(), 1);
  TrainerConfig tc;
  tc.batch = 32; tc.steps = 10; tc.log_every = 5; tc.checkpoint_every = 4; tc.progress = false;
  fs::path dir = temp_dir("files");
  tc.out_dir = dir.string();
  Trainer<Model>(m, ShortcutConfig{}, AdamWConfig{}, tc).run(toy_batch);
  std::ifstream f(dir / "metrics.jsonl");
  std::string line;
  std::vector<nlohmann::json> lines;
  while (std::getline(f, line)) lines.push_back(nlohmann::json::parse(line));
  REQUIRE(lines.size() == 2);
  CHECK(lines[0]["step"] == 5);
  CHECK(lines[1]["step"] == 10);
  for (auto& j : lines)
    for (const char* k : {"loss", "flow_loss", "bootstrap_loss", "lr", "steps_per_s"}) CHECK(j.contains(k));
  for (const char* d : {"step_4", "step_8", "last"})
    for (const char* file : {"ema.safetensors", "model.safetensors", "optimizer.safetensors"})
      CHECK(fs::exists(dir / "checkpoints" / d / file));
  // the checkpoint's EMA weights load into a fresh model and equal the trained EMA
  Model back(be, small_net(), 99);
  io::load_sampling_weights(dir / "checkpoints" / "last", back.net(), back.arena());
  CHECK(back.arena().to_host(Role::Ema) == m.arena().to_host(Role::Ema));
  fs::remove_all(dir);
}

// The step_N folders present under dir/checkpoints, sorted.
static std::vector<std::string> step_folders(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir / "checkpoints"))
    if (e.path().filename().string().rfind("step_", 0) == 0) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

TEST_CASE("keep_checkpoints keeps the newest step folders, 'last' and the folder a run resumed from",
          "[trainer][files]") {
  Be be;
  TrainerConfig tc;
  tc.batch = 32; tc.steps = 6; tc.checkpoint_every = 1; tc.keep_checkpoints = 2; tc.progress = false;
  const fs::path dir = temp_dir("keep");
  tc.out_dir = dir.string();
  Model m(be, small_net(), 1);
  Trainer<Model>(m, ShortcutConfig{}, AdamWConfig{}, tc).run(toy_batch);
  CHECK(step_folders(dir) == std::vector<std::string>{"step_5", "step_6"});
  CHECK(fs::exists(dir / "checkpoints" / "last" / "model.safetensors"));
  // resumed from step_5, kept to 1: step_5 stays (the run came from it), the newest beside it
  tc.steps = 9; tc.keep_checkpoints = 1;
  Model r(be, small_net(), 1);
  Trainer<Model> t(r, ShortcutConfig{}, AdamWConfig{}, tc);
  t.resume((dir / "checkpoints" / "step_5").string());
  t.run(toy_batch);
  CHECK(step_folders(dir) == std::vector<std::string>{"step_5", "step_9"});
  tc.keep_checkpoints = -1;
  CHECK_THROWS_AS(Trainer<Model>(r, ShortcutConfig{}, AdamWConfig{}, tc), ConfigError);
  fs::remove_all(dir);
}

// The child of the kill test: runs of 2 steps, each resumed from "last", until it is killed.
TEST_CASE("kill-test child: trains in short resumed runs until killed", "[.kill-child]") {
  const char* out = std::getenv("SHORTCUT_KILL_TEST_DIR");
  REQUIRE(out);
  Be be;
  TrainerConfig tc;
  tc.batch = 32; tc.checkpoint_every = 1; tc.keep_checkpoints = 1; tc.progress = false;
  tc.out_dir = out;
  for (int64_t steps = 2;; steps += 2) {
    tc.steps = steps;
    Model m(be, small_net(), 1);
    Trainer<Model> t(m, ShortcutConfig{}, AdamWConfig{}, tc);
    if (fs::exists(fs::path(out) / "checkpoints" / "last")) t.resume((fs::path(out) / "checkpoints" / "last").string());
    t.run(toy_batch);
  }
}

// A SIGKILL at any moment of a run that writes and prunes checkpoints leaves a "last" that resumes.
TEST_CASE("a run killed at any moment leaves a 'last' checkpoint that resumes", "[trainer][files][kill]") {
  const fs::path dir = temp_dir("kill");
  fs::create_directories(dir);
  std::mt19937_64& g = testutil::gen();
  for (int trial = 0; trial < 8; ++trial) {
    const int delay_ms = 150 + int(g() % 400);
    INFO("trial " << trial << ", killed after " << delay_ms << " ms");
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {  // the child: this test program again, running only the hidden child case
      setenv("SHORTCUT_KILL_TEST_DIR", dir.c_str(), 1);
      setenv("OMP_NUM_THREADS", "1", 1);
      execl("/proc/self/exe", "trainer", "[.kill-child]", static_cast<char*>(nullptr));
      _exit(127);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    REQUIRE(WIFSIGNALED(status));  // still running when killed: the kill landed mid-run
    if (!fs::exists(dir / "checkpoints" / "last")) continue;  // killed before the first run ended
    Be be;
    Model m(be, small_net(), 1);
    TrainerConfig tc;
    tc.batch = 32; tc.steps = 1000; tc.progress = false;
    Trainer<Model> t(m, ShortcutConfig{}, AdamWConfig{}, tc);
    REQUIRE_NOTHROW(t.resume((dir / "checkpoints" / "last").string()));
    CHECK(t.step() >= 2);
  }
  CHECK(fs::exists(dir / "checkpoints" / "last"));  // at least one trial got that far
  fs::remove_all(dir);
}

TEST_CASE("a wall-time budget stops the run after the step that passes it, with its log line and checkpoint",
          "[trainer][files]") {
  Be be;
  Model m(be, small_net(), 1);
  TrainerConfig tc;
  tc.batch = 32; tc.steps = int64_t(1) << 40; tc.log_every = 1000000; tc.progress = false;
  tc.max_seconds = 0.3;
  fs::path dir = temp_dir("budget");
  tc.out_dir = dir.string();
  Trainer<Model> t(m, ShortcutConfig{}, AdamWConfig{}, tc);
  int64_t calls = 0;
  const auto t0 = std::chrono::steady_clock::now();
  t.run([&](Rng& rng, int B, std::vector<float>& x, std::vector<int32_t>& y) {
    ++calls;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // at most ~30 steps fit
    toy_batch(rng, B, x, y);
  });
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  INFO("stopped at step " << t.step() << " after " << took << " s");
  CHECK(t.step() == calls);
  CHECK(t.step() >= 1);
  CHECK(t.step() <= 31);
  CHECK(took >= 0.3);
  // the step reached is logged (although not a multiple of log_every) and saved as "last"
  std::ifstream f(dir / "metrics.jsonl");
  std::string line, last_line;
  while (std::getline(f, line)) last_line = line;
  REQUIRE(!last_line.empty());
  CHECK(nlohmann::json::parse(last_line)["step"] == t.step());
  io::TrainState s = io::load_checkpoint((dir / "checkpoints" / "last").string(), m.net(), m.arena());
  CHECK(s.step == t.step());
  tc.max_seconds = -1;
  CHECK_THROWS_AS(Trainer<Model>(m, ShortcutConfig{}, AdamWConfig{}, tc), ConfigError);
}

TEST_CASE("a batch function of the wrong size is a clear error", "[trainer][errors]") {
  Be be;
  Model m(be, small_net(), 1);
  TrainerConfig tc;
  tc.batch = 32; tc.steps = 1; tc.progress = false;
  Trainer<Model> t(m, ShortcutConfig{}, AdamWConfig{}, tc);
  CHECK_THROWS_WITH(t.run([](Rng&, int, std::vector<float>& x, std::vector<int32_t>& y) {
    x.assign(10, 0.f);
    y.assign(32, 0);
  }), Catch::Matchers::Contains("expected 64"));
}

TEST_CASE("checkerboard: shortcut one-step samples are clearly closer to the data than flow matching's",
          "[trainer][toy]") {
  Be be;
  const uint64_t seed = testutil::gen()() % 100000;
  INFO("seed " << seed);
  double dist[2];
  for (int obj = 0; obj < 2; ++obj) {
    nn::MlpNetConfig nc;
    nc.hidden = 64; nc.depth = 2; nc.classes = 1;
    Model m(be, nc, seed);
    AdamWConfig oc;
    oc.lr = 1e-3; oc.weight_decay = 0; oc.warmup_steps = 50;
    TrainerConfig tc;
    tc.steps = 600; tc.batch = 128; tc.ema_tau = 0.99; tc.seed = seed; tc.progress = false;
    auto data = [](Rng& rng, int B, std::vector<float>& x, std::vector<int32_t>& y) {
      x = data::sample_toy2d("checkerboard", B, rng);
      y.assign(B, 0);
    };
    const SamplingSchedule sc = obj == 0 ? ShortcutConfig{}.sampling() : FlowMatchingConfig{}.sampling();
    if (obj == 0) Trainer<Model>(m, ShortcutConfig{}, oc, tc).run(data);
    else Trainer<Model, dist::LocalCommunicator, FlowMatching<Model>>(m, FlowMatching<Model>({}), oc, tc).run(data);
    const int n = 2000;
    std::vector<float> x(2 * n);
    be.normal(x.data(), x.size(), seed + 7, 0);
    std::vector<int32_t> y(n, 1);
    auto dx = upload(be, x);
    OdeSampler<Model>(sc).sample(m, dx, upload(be, y), {1, 1.0, true});
    x = download(be, dx);
    Rng dr(seed + 3);
    auto ref = data::sample_toy2d("checkerboard", n, dr);
    dist[obj] = metrics::sliced_wasserstein(x, ref, 2);
  }
  INFO("sliced W1 at one step: shortcut " << dist[0] << ", flow matching " << dist[1]);
  CHECK(dist[0] < 0.6 * dist[1]);
}
