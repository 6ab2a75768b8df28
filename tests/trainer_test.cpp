// The trainer loop: exact resume, metrics and checkpoints on disk, and a short checkerboard run in
// which the shortcut model's one-step samples beat plain flow matching's one-step samples.
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

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
    ShortcutConfig sc;
    sc.objective = obj == 0 ? Objective::Shortcut : Objective::FlowMatching;
    AdamWConfig oc;
    oc.lr = 1e-3; oc.weight_decay = 0; oc.warmup_steps = 50;
    TrainerConfig tc;
    tc.steps = 600; tc.batch = 128; tc.ema_tau = 0.99; tc.seed = seed; tc.progress = false;
    Trainer<Model>(m, sc, oc, tc).run([](Rng& rng, int B, std::vector<float>& x, std::vector<int32_t>& y) {
      x = data::sample_toy2d("checkerboard", B, rng);
      y.assign(B, 0);
    });
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
