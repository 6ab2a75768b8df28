// The trainer's open ends: data sources (stateful, device-resident), the resume policy, metrics.jsonl
// across runs and resumes, and the hooks. The trainer runs in float, which is what checkpoints hold
// (so that resumed runs can equal straight ones bit for bit). AdamW parameter groups: optimizer_test.cpp.
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "shortcut/shortcut.hpp"
#include "test_util.hpp"
#include "trainer_test_util.hpp"

using namespace shortcut;
namespace fs = std::filesystem;
using Be = cpu::Backend<float>;

namespace {

using namespace trainer_test;
fs::path temp_dir(const std::string& name) { return trainer_test::temp_dir("shortcut_trainer_open_test", name); }


// A fixed table of 2-D rows and labels, walked in order from a position that persists across batches:
// a data source whose batches depend on state that the RNG position alone does not give back.
struct Table {
  std::vector<float> x;
  std::vector<int32_t> y;
  explicit Table(int n = 37) {
    Rng r(12345);
    for (int i = 0; i < n; ++i) {
      x.push_back(2 * r.normal());
      x.push_back(r.uniform() - 0.5f);
      y.push_back(int32_t(i % 3));
    }
  }
  size_t rows() const { return y.size(); }
};

struct SequentialSource {
  const Table* table;
  int64_t position = 0;  // global rows consumed

  void fill(Rng&, const BatchSlice& s, std::vector<float>& x, std::vector<int32_t>& y) {
    x.resize(size_t(s.rows()) * 2);
    y.resize(size_t(s.rows()));
    for (int i = 0; i < s.rows(); ++i) {
      const size_t r = size_t(position + s.global_row(i)) % table->rows();
      x[2 * size_t(i)] = table->x[2 * r];
      x[2 * size_t(i) + 1] = table->x[2 * r + 1];
      y[size_t(i)] = table->y[r];
    }
    position += s.batch;  // the whole batch, whatever this rank's rows: the same state on every rank
  }
  nlohmann::json state() const { return {{"position", position}}; }
  void restore(const nlohmann::json& j) { position = j.at("position").get<int64_t>(); }
};
static_assert(HostDataSource<SequentialSource, float>);
static_assert(StatefulDataSource<SequentialSource>);

// The same rows, written into the backend's memory by the source itself.
struct DeviceSequentialSource {
  SequentialSource host;
  Be* be;
  void fill_device(Rng& rng, const BatchSlice& s, DeviceSpan<float, Be> x, std::vector<int32_t>& y) {
    std::vector<float> h;
    host.fill(rng, s, h, y);
    check_size("device rows", x.size(), h.size());
    be->to_device(x.data(), h.data(), h.size());
  }
};
static_assert(DeviceDataSource<DeviceSequentialSource, float, Be>);
static_assert(!StatefulDataSource<DeviceSequentialSource>);

std::vector<nlohmann::json> read_lines(const fs::path& f) {
  std::ifstream in(f);
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}
std::vector<int64_t> steps_of(const std::vector<nlohmann::json>& lines) {
  std::vector<int64_t> s;
  for (auto& j : lines) s.push_back(j["step"].get<int64_t>());
  return s;
}

}  // namespace

TEST_CASE("resume refuses a changed training configuration naming each field - the option allows it",
          "[trainer][resume]") {
  Be be;
  const fs::path dir = temp_dir("config");
  {
    Model m(be, small_net(), 1);
    TrainerConfig tc = quiet(4);
    tc.out_dir = dir.string();
    Trainer<Model>(m, ShortcutConfig{}, fast(), tc).run(Rows(toy_rows));
  }
  const std::string last = (dir / "checkpoints" / "last").string();
  Model m(be, small_net(), 2);
  const auto before = m.arena().to_host(Role::Param);

  AdamWConfig lr = fast();
  lr.lr *= 2;
  TrainerConfig batch = quiet(8);
  batch.batch = 64;
  Trainer<Model> t_lr(m, ShortcutConfig{}, lr, quiet(8));
  CHECK_THROWS_AS(t_lr.resume(last), ConfigError);
  CHECK_THROWS_WITH(t_lr.resume(last), Catch::Contains("adamw.lr") && Catch::Contains("allow_config_change"));
  CHECK(m.arena().to_host(Role::Param) == before);  // refused before anything was loaded
  Trainer<Model> t_two(m, ShortcutConfig{}, lr, batch);
  CHECK_THROWS_WITH(t_two.resume(last), Catch::Contains("adamw.lr") && Catch::Contains("batch is 32 in the checkpoint, 64 now"));
  ShortcutConfig boot;
  boot.bootstrap_fraction = 0.5;
  CHECK_THROWS_WITH(Trainer<Model>(m, boot, fast(), quiet(8)).resume(last), Catch::Contains("objective.bootstrap_fraction"));

  // more steps, another seed, other reporting: the same experiment, continued
  TrainerConfig longer = quiet(8, 99);
  longer.log_every = 3;
  longer.checkpoint_every = 2;
  Trainer<Model> t_longer(m, ShortcutConfig{}, fast(), longer);
  CHECK_NOTHROW(t_longer.resume(last));
  CHECK(t_longer.step() == 4);

  t_lr.resume(last, ResumeOptions{.allow_config_change = true});
  CHECK(t_lr.step() == 4);
  t_lr.run(Rows(toy_rows));
  CHECK(t_lr.step() == 8);
}

namespace {
// Trainer's "training" JSON as it was written before the sampling schedule was split from
// ShortcutConfig (up to commit 4d5058f): the whole shortcut configuration under "shortcut" (the
// literal is what ShortcutConfig{}.to_json() gave then) and no "objective"; other keys kept.
nlohmann::json pre_split(nlohmann::json j, bool flow) {
  j.erase("objective");
  j["shortcut"] = {{"objective", flow ? "flow" : "shortcut"},
                   {"denoise_timesteps", 128},
                   {"bootstrap_fraction", 0.25},
                   {"class_dropout_prob", 0.1},
                   {"cfg_scale", 1.5},
                   {"bootstrap_cfg", true},
                   {"bootstrap_ema", true},
                   {"target_clip", 4.0}};
  return j;
}
}  // namespace

TEST_CASE("a checkpoint from before the sampling schedule's split resumes exactly, samples, and names changes",
          "[trainer][resume]") {
  using FM = FlowMatching<Model>;
  Be be;
  for (bool flow : {false, true}) {
    INFO((flow ? "flow matching" : "shortcut"));
    auto run = [&](Model& m, const TrainerConfig& tc, const fs::path& from) {
      auto go = [&](auto&& t) {
        if (!from.empty()) t.resume(from.string());
        t.run(Rows(toy_rows));
      };
      if (flow) go(Trainer<Model, dist::LocalCommunicator, FM>(m, FM({}), fast(), tc));
      else go(Trainer<Model>(m, ShortcutConfig{}, fast(), tc));
    };
    const fs::path dir = temp_dir(flow ? "pre_split_flow" : "pre_split_shortcut");
    Model straight(be, small_net(), 1);
    TrainerConfig tc = quiet(4);
    tc.out_dir = dir.string();
    tc.checkpoint_every = 2;
    run(straight, tc, {});
    const fs::path ck = dir / "checkpoints" / "step_2";
    edit_folder(ck, [&](auto& meta) {
      for (const char* key : {"training", "extra"})
        if (meta.count(key)) meta[key] = pre_split(nlohmann::json::parse(meta[key]), flow).dump();
    });
    const nlohmann::json stored = io::read_checkpoint_extra(ck);
    REQUIRE(stored.at("shortcut").contains("bootstrap_fraction"));
    REQUIRE_FALSE(stored.contains("objective"));

    Model resumed(be, small_net(), 9);
    run(resumed, quiet(4), ck);  // no configuration difference is found
    for (Role r : {Role::Param, Role::Ema, Role::AdamM, Role::AdamV})
      CHECK(resumed.arena().to_host(r) == straight.arena().to_host(r));

    auto g = load_generator(be, ck);
    CHECK(g.sampling().reads_d == !flow);
    CHECK(g.sampling().denoise_timesteps == 128);

    // a changed setting is named in today's form
    Model other(be, small_net(), 3);
    if (flow) {
      FlowMatchingConfig c;
      c.class_dropout_prob = 0.2;
      CHECK_THROWS_WITH((Trainer<Model, dist::LocalCommunicator, FM>(other, FM(c), fast(), quiet(4)).resume(ck.string())),
                        Catch::Contains("objective.class_dropout_prob is 0.1 in the checkpoint, 0.2 now"));
      CHECK_THROWS_WITH(Trainer<Model>(other, ShortcutConfig{}, fast(), quiet(4)).resume(ck.string()),
                        Catch::Contains("objective.name is \"flow_matching\" in the checkpoint, \"shortcut\" now"));
    } else {
      ShortcutConfig c;
      c.bootstrap_fraction = 0.5;
      CHECK_THROWS_WITH(Trainer<Model>(other, c, fast(), quiet(4)).resume(ck.string()),
                        Catch::Contains("objective.bootstrap_fraction is 0.25 in the checkpoint, 0.5 now"));
    }
  }
}

TEST_CASE("a stateful data source's state is checkpointed and restored: N straight = N/2 + resume + N/2",
          "[trainer][resume][data]") {
  Be be;
  const Table table;
  const fs::path dir = temp_dir("stateful");
  const int64_t N = 8;

  Model straight(be, small_net(), 3);
  SequentialSource s0{&table};
  Trainer<Model>(straight, ShortcutConfig{}, fast(), quiet(N)).run(s0);
  CHECK(s0.position == N * 32);

  Model first(be, small_net(), 3);
  SequentialSource s1{&table};
  TrainerConfig tc = quiet(N / 2);
  tc.out_dir = dir.string();
  Trainer<Model>(first, ShortcutConfig{}, fast(), tc).run(s1);
  const fs::path half = dir / "checkpoints" / "last";
  const nlohmann::json extra = io::read_checkpoint_extra(half);
  CHECK(extra["data_source"]["position"] == N / 2 * 32);
  CHECK(extra.contains("adamw"));  // the training configuration is still where older readers find it

  Model second(be, small_net(), 4);  // other init: everything comes from the checkpoint
  SequentialSource s2{&table};       // at position 0: the checkpoint moves it on
  Trainer<Model> t2(second, ShortcutConfig{}, fast(), quiet(N));
  t2.resume(half.string());
  t2.run(s2);
  CHECK(s2.position == N * 32);
  for (Role r : {Role::Param, Role::Ema, Role::AdamM, Role::AdamV}) {
    INFO("role " << role_name(r));
    CHECK(second.arena().to_host(r) == straight.arena().to_host(r));
  }

  // without its state the source would replay the first half's rows: a different run
  Model replay(be, small_net(), 4);
  SequentialSource s3{&table};
  Trainer<Model> t3(replay, ShortcutConfig{}, fast(), quiet(N));
  t3.resume(half.string(), {.allow_config_change = true});
  t3.run(RowsSource<float>{[&](Rng& r, const BatchSlice& s, std::vector<float>& x, std::vector<int32_t>& y) {
                              s3.fill(r, s, x, y);
                            }},
         {});
  CHECK(replay.arena().to_host(Role::Param) != straight.arena().to_host(Role::Param));
}

TEST_CASE("a checkpoint with a data source's state refuses a source without state unless allowed",
          "[trainer][resume][data]") {
  Be be;
  const Table table;
  const fs::path dir = temp_dir("stateless");
  TrainerConfig tc = quiet(2);
  tc.out_dir = dir.string();
  {
    Model m(be, small_net(), 3);
    SequentialSource s{&table};
    Trainer<Model>(m, ShortcutConfig{}, fast(), tc).run(s);
  }
  const std::string last = (dir / "checkpoints" / "last").string();
  Model m(be, small_net(), 3);
  Trainer<Model> t(m, ShortcutConfig{}, fast(), quiet(4));
  t.resume(last);
  CHECK_THROWS_WITH(t.run(Rows(toy_rows)), Catch::Contains("data source's state"));
  Trainer<Model> ok(m, ShortcutConfig{}, fast(), quiet(4));
  ok.resume(last, {.allow_config_change = true});
  CHECK_NOTHROW(ok.run(Rows(toy_rows)));
  CHECK(ok.step() == 4);
}

TEST_CASE("a device-resident data source trains the same weights as the host source with the same rows",
          "[trainer][data]") {
  Be be;
  const Table table;
  Model host(be, small_net(), 5), device(be, small_net(), 5);
  SequentialSource hs{&table};
  DeviceSequentialSource ds{SequentialSource{&table}, &be};
  Trainer<Model>(host, ShortcutConfig{}, fast(), quiet(6)).run(hs);
  Trainer<Model>(device, ShortcutConfig{}, fast(), quiet(6)).run(ds);
  CHECK(ds.host.position == hs.position);
  for (Role r : {Role::Param, Role::Ema, Role::AdamM, Role::AdamV}) {
    INFO("role " << role_name(r));
    CHECK(device.arena().to_host(r) == host.arena().to_host(r));
  }
  // and the weights depend on the rows (the comparison can fail)
  Model other(be, small_net(), 5);
  Trainer<Model>(other, ShortcutConfig{}, fast(), quiet(6)).run(Rows(toy_rows));
  CHECK(other.arena().to_host(Role::Param) != host.arena().to_host(Role::Param));
}

TEST_CASE("metrics.jsonl starts fresh for a new run and continues on resume without duplicate steps",
          "[trainer][files]") {
  Be be;
  const fs::path dir = temp_dir("metrics");
  const fs::path metrics = dir / "metrics.jsonl";
  TrainerConfig tc = quiet(6);
  tc.out_dir = dir.string();
  tc.log_every = 1;
  tc.checkpoint_every = 3;
  std::vector<nlohmann::json> straight;
  {
    Model m(be, small_net(), 1);
    Trainer<Model>(m, ShortcutConfig{}, fast(), tc).run(Rows(toy_rows));
    straight = read_lines(metrics);
    CHECK(steps_of(straight) == std::vector<int64_t>{1, 2, 3, 4, 5, 6});
  }
  {  // a new run in the same folder: its own lines only
    Model m(be, small_net(), 1);
    TrainerConfig fresh = tc;
    fresh.steps = 2;
    fresh.checkpoint_every = 0;
    Trainer<Model>(m, ShortcutConfig{}, fast(), fresh).run(Rows(toy_rows));
    CHECK(steps_of(read_lines(metrics)) == std::vector<int64_t>{1, 2});
  }
  {  // the six steps again, then resumed from step 3: steps 4..6 once each, continuing the curve
    Model m(be, small_net(), 1);
    Trainer<Model>(m, ShortcutConfig{}, fast(), tc).run(Rows(toy_rows));
    Model r(be, small_net(), 2);
    Trainer<Model> t(r, ShortcutConfig{}, fast(), tc);
    t.resume((dir / "checkpoints" / "step_3").string());
    t.run(Rows(toy_rows));
    const auto lines = read_lines(metrics);
    REQUIRE(steps_of(lines) == std::vector<int64_t>{1, 2, 3, 4, 5, 6});
    for (size_t i = 0; i < lines.size(); ++i) CHECK(lines[i]["loss"] == straight[i]["loss"]);  // exact resume
  }
  {  // a line cut off by a crash is dropped, a line without a step kept
    std::ofstream(metrics, std::ios::app) << "{\"note\": \"by hand\"}\n{\"step\": 7, \"lo";
    Model r(be, small_net(), 2);
    Trainer<Model> t(r, ShortcutConfig{}, fast(), tc);
    t.resume((dir / "checkpoints" / "step_6").string());
    t.run(Rows(toy_rows));  // already at step 6: nothing to do
    const auto lines = read_lines(metrics);
    REQUIRE(lines.size() == 7);
    CHECK(lines.back()["note"] == "by hand");
  }
}

TEST_CASE("hooks: every step with its losses and lr - every checkpoint with its folder - the user's state kept",
          "[trainer][hooks]") {
  Be be;
  const fs::path dir = temp_dir("hooks");
  Model m(be, small_net(), 1);
  TrainerConfig tc = quiet(5);
  tc.out_dir = dir.string();
  tc.checkpoint_every = 2;
  tc.log_every = 1;
  Trainer<Model> t(m, ShortcutConfig{}, fast(), tc);
  std::vector<StepInfo> steps;
  std::vector<std::pair<int64_t, std::string>> saves;
  std::vector<int64_t> plain;
  t.hooks().on_step = [&](const StepInfo& s) { steps.push_back(s); };
  t.hooks().on_checkpoint = [&](int64_t s, const std::string& d) {
    CHECK(fs::exists(fs::path(d) / "ema.safetensors"));  // complete when the hook runs
    saves.emplace_back(s, d);
  };
  int saved = 0;
  t.hooks().user_state = [&] { return nlohmann::json{{"saves", ++saved}}; };
  t.run(Rows(toy_rows), [&](int64_t s) { plain.push_back(s); });  // the old step callback still runs too
  REQUIRE(steps.size() == 5);
  const auto lines = read_lines(dir / "metrics.jsonl");
  REQUIRE(lines.size() == 5);
  for (size_t i = 0; i < steps.size(); ++i) {
    CHECK(steps[i].step == int64_t(i + 1));
    CHECK(steps[i].loss == lines[i]["loss"].get<double>());
    CHECK(steps[i].flow_loss == lines[i]["flow_loss"].get<double>());
    CHECK(steps[i].bootstrap_loss == lines[i]["bootstrap_loss"].get<double>());
    CHECK(steps[i].lr == lines[i]["lr"].get<double>());
  }
  CHECK(steps[0].lr == Approx(fast().lr / 2));  // warm-up
  CHECK(plain == std::vector<int64_t>{1, 2, 3, 4, 5});
  const auto ck = dir / "checkpoints";
  using P = std::pair<int64_t, std::string>;
  CHECK(saves == std::vector<P>{{2, (ck / "step_2").string()}, {4, (ck / "step_4").string()},
                                {5, (ck / "last").string()}});

  Model r(be, small_net(), 1);
  TrainerConfig more = tc;
  more.steps = 7;
  more.out_dir = "";
  Trainer<Model> t2(r, ShortcutConfig{}, fast(), more);
  CHECK(t2.resumed_user_state().is_null());
  t2.resume((ck / "step_4").string());
  CHECK(t2.resumed_user_state() == nlohmann::json{{"saves", 2}});
  std::vector<int64_t> resumed;
  t2.hooks().on_step = [&](const StepInfo& s) { resumed.push_back(s.step); };
  t2.run(Rows(toy_rows));
  CHECK(resumed == std::vector<int64_t>{5, 6, 7});
}
