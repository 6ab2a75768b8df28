// The optimizer on the CPU: AdamW and the EMA against their formulas, the learning-rate schedule
// (warm-up, cosine decay), and AdamW parameter groups (tensor-name globs, no decay, frozen, lr scale;
// their errors, and groups as part of the checkpointed config). AdamW alone runs in double; the
// Trainer runs in float.
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <map>

#include "linear_test_net.hpp"
#include "shortcut/shortcut.hpp"
#include "test_util.hpp"
#include "trainer_test_util.hpp"

using namespace shortcut;
namespace fs = std::filesystem;
using Be = cpu::Backend<float>;
using DBe = cpu::Backend<double>;
using LinearModel = ShortcutModel<LinearTestNet<double>>;

namespace {

using namespace trainer_test;
fs::path temp_dir(const std::string& name) { return trainer_test::temp_dir("shortcut_optimizer_test", name); }

}  // namespace

TEST_CASE("AdamW and EMA follow their formulas", "[train][optim]") {
  cpu::Backend<double> be;
  LinearModel m(be, LinearNetConfig{2, 2}, 0);
  auto& A = m.arena();
  const size_t n = A.size();
  auto p0 = testutil::randn(n);
  A.from_host(Role::Param, p0);
  EmaTracker ema(0.9);
  ema.reset(A);
  AdamWConfig oc;
  oc.lr = 0.01;
  AdamW opt(oc);
  std::vector<double> p = p0, mm(n, 0), vv(n, 0), e = p0;
  for (int step = 1; step <= 3; ++step) {
    auto g = testutil::randn(n);
    A.from_host(Role::Grad, g);
    opt.step(A);
    ema.update(A);
    for (size_t i = 0; i < n; ++i) {
      p[i] -= 0.01 * 0.1 * p[i];
      mm[i] = 0.9 * mm[i] + 0.1 * g[i];
      vv[i] = 0.999 * vv[i] + 0.001 * g[i] * g[i];
      double mh = mm[i] / (1 - std::pow(0.9, step)), vh = vv[i] / (1 - std::pow(0.999, step));
      p[i] -= 0.01 * mh / (std::sqrt(vh) + 1e-8);
      e[i] = 0.9 * e[i] + 0.1 * p[i];
    }
  }
  auto P = A.to_host(Role::Param), Ev = A.to_host(Role::Ema);
  for (size_t i = 0; i < n; ++i) {
    CHECK(P[i] == Approx(p[i]).epsilon(1e-12));
    CHECK(Ev[i] == Approx(e[i]).epsilon(1e-12));
  }
  CHECK(opt.step_count() == 3);
}

TEST_CASE("learning-rate warm-up and cosine schedule", "[train][optim]") {
  AdamWConfig c;
  c.lr = 1.0; c.warmup_steps = 10; c.cosine_steps = 100; c.min_lr = 0.1;
  AdamW o(c);
  CHECK(o.lr_at(1) == Approx(0.1));
  CHECK(o.lr_at(10) == Approx(1.0));
  CHECK(o.lr_at(60) == Approx(0.1 + 0.45 * (1 + std::cos(M_PI * 0.5))));
  CHECK(o.lr_at(110) == Approx(0.1));
  CHECK(o.lr_at(500) == Approx(0.1));
}

TEST_CASE("glob patterns over tensor names", "[adamw][groups]") {
  CHECK(glob_match("*.bias", "blocks.0.mlp.fc1.bias"));
  CHECK_FALSE(glob_match("*.bias", "blocks.0.mlp.fc1.weight"));
  CHECK(glob_match("blocks.*.mlp.*", "blocks.12.mlp.fc2.weight"));
  CHECK_FALSE(glob_match("blocks.*.mlp.*", "final_layer.linear.weight"));
  CHECK(glob_match("blocks.?.attn.qkv.weight", "blocks.3.attn.qkv.weight"));
  CHECK_FALSE(glob_match("blocks.?.attn.qkv.weight", "blocks.10.attn.qkv.weight"));
  CHECK(glob_match("*", "anything"));
  CHECK(glob_match("x_embedder.weight", "x_embedder.weight"));
  CHECK_FALSE(glob_match("x_embedder", "x_embedder.weight"));  // the whole name must match
  CHECK(glob_match("*embed*", "y_embedder.embedding_table.weight"));
}

namespace {
// Three tensors on their own arena, for AdamW alone.
struct Arena3 {
  DBe be;
  ParamLayout L;
  ParamArena<DBe> a;
  static ParamLayout layout() {
    ParamLayout L;
    L.add("net.a.weight", {4, 5}, Init::Zero);
    L.add("net.a.bias", {4}, Init::Zero);
    L.add("net.b.weight", {3, 4}, Init::Zero);
    return L;
  }
  Arena3() : L(layout()), a(be, L) {
    a.from_host(Role::Param, testutil::randn(a.size()));
  }
  std::vector<double> get(Role r, const std::string& name) {
    const ParamInfo& p = L.at(name);
    auto h = a.to_host(r);
    return {h.begin() + long(p.offset), h.begin() + long(p.offset + p.size)};
  }
  void set_grad(double (*f)(size_t)) {
    std::vector<double> g(a.size());
    for (size_t i = 0; i < g.size(); ++i) g[i] = f(i);
    a.from_host(Role::Grad, g);
  }
};
}  // namespace

TEST_CASE("AdamW groups: no decay on a masked tensor - a frozen tensor and its moments untouched - an lr scale",
          "[adamw][groups]") {
  SECTION("weight-decay mask: with zero gradient the decayed tensors shrink, the masked one stays") {
    Arena3 z;
    z.set_grad([](size_t) { return 0.0; });
    AdamWConfig c;
    c.lr = 0.1; c.weight_decay = 0.5;
    c.groups = {{.pattern = "*.bias", .decay = false}};
    AdamW opt(c);
    const auto w0 = z.get(Role::Param, "net.a.weight"), b0 = z.get(Role::Param, "net.a.bias");
    for (int i = 0; i < 3; ++i) opt.step(z.a);
    CHECK(z.get(Role::Param, "net.a.bias") == b0);
    const auto w = z.get(Role::Param, "net.a.weight");
    for (size_t i = 0; i < w.size(); ++i) CHECK(w[i] == Approx(w0[i] * std::pow(1 - 0.1 * 0.5, 3)).epsilon(1e-12));
  }
  SECTION("frozen: weights and moments bit for bit unchanged while the others move") {
    Arena3 z;
    z.set_grad([](size_t i) { return std::sin(double(i) + 1); });
    z.a.enable(Role::AdamM);
    z.a.enable(Role::AdamV);
    z.a.from_host(Role::AdamM, testutil::randn(z.a.size()));
    auto v = testutil::randn(z.a.size());
    for (auto& x : v) x = x * x;
    z.a.from_host(Role::AdamV, v);
    AdamWConfig c;
    c.lr = 0.01;
    c.groups = {{.pattern = "net.a.*", .frozen = true}};
    AdamW opt(c);
    std::map<std::string, std::vector<double>> before[3];
    const Role roles[] = {Role::Param, Role::AdamM, Role::AdamV};
    for (int r = 0; r < 3; ++r)
      for (auto& p : z.L.entries()) before[r][p.name] = z.get(roles[r], p.name);
    for (int i = 0; i < 4; ++i) opt.step(z.a);
    for (int r = 0; r < 3; ++r) {
      INFO(role_name(roles[r]));
      CHECK(z.get(roles[r], "net.a.weight") == before[r]["net.a.weight"]);
      CHECK(z.get(roles[r], "net.a.bias") == before[r]["net.a.bias"]);
      CHECK(z.get(roles[r], "net.b.weight") != before[r]["net.b.weight"]);
    }
  }
  SECTION("lr scale 0.5: half the first Adam step") {
    Arena3 z;
    z.set_grad([](size_t i) { return std::cos(double(i)); });
    AdamWConfig c;
    c.lr = 0.01; c.weight_decay = 0;
    c.groups = {{.pattern = "net.b.weight", .lr_scale = 0.5}};
    AdamW opt(c);
    Arena3 ref;  // the same start and gradients without groups
    ref.a.from_host(Role::Param, z.a.to_host(Role::Param));
    ref.a.from_host(Role::Grad, z.a.to_host(Role::Grad));
    AdamWConfig rc = c;
    rc.groups.clear();
    AdamW ropt(rc);
    const auto p0 = z.get(Role::Param, "net.b.weight");
    opt.step(z.a);
    ropt.step(ref.a);
    const auto p = z.get(Role::Param, "net.b.weight"), full = ref.get(Role::Param, "net.b.weight");
    for (size_t i = 0; i < p.size(); ++i) {
      INFO("element " << i);
      CHECK(p0[i] - p[i] == Approx(0.5 * (p0[i] - full[i])).epsilon(1e-9));
      CHECK(std::abs(p0[i] - p[i]) > 1e-4);
    }
    CHECK(z.get(Role::Param, "net.a.weight") == ref.get(Role::Param, "net.a.weight"));  // unscaled elsewhere
  }
}

TEST_CASE("AdamW groups: a pattern that matches nothing is an error naming it - groups are part of the config",
          "[adamw][groups][resume]") {
  Arena3 z;
  AdamWConfig c;
  c.groups = {{.pattern = "net.*.bias", .decay = false}, {.pattern = "net.a.bais", .frozen = true}};
  CHECK_THROWS_WITH(AdamW(c).bind(z.L), Catch::Contains("'net.a.bais' matches no tensor"));
  c.groups = {{.pattern = "net.a.*", .decay = false}, {.pattern = "*.bias", .frozen = true}};
  CHECK_THROWS_WITH(AdamW(c).bind(z.L), Catch::Contains("'*.bias' matches only tensors that an earlier group"));
  c.groups = {{.pattern = "net.a.*", .lr_scale = -1}};
  CHECK_THROWS_AS(AdamW(c), ConfigError);
  c.groups = {{.pattern = "*.bias", .decay = false}, {.pattern = "net.b.*", .lr_scale = 0.5}};
  CHECK(AdamW(c).bind(z.L).size() == 3);  // a.weight | a.bias | b.weight: three runs
  c.groups = {{.pattern = "net.*", .lr_scale = 1.0}};
  CHECK(AdamW(c).bind(z.L).size() == 1);  // nothing differs: one flat run

  CHECK_FALSE(AdamWConfig{}.to_json().contains("param_groups"));  // the JSON older checkpoints hold
  c.groups = {{.pattern = "*.bias", .decay = false}};
  CHECK(c.to_json()["param_groups"][0] == ParamGroup{.pattern = "*.bias", .decay = false}.to_json());

  // through the Trainer: a bad pattern fails at construction; changed groups refuse a resume
  Be be;
  AdamWConfig bad = fast();
  bad.groups = {{.pattern = "blocks.*.attn.*", .frozen = true}};  // the MLP net has no attention
  Model m(be, small_net(), 1);
  CHECK_THROWS_WITH((Trainer<Model>(m, ShortcutConfig{}, bad, quiet(2))), Catch::Contains("blocks.*.attn.*"));
  const fs::path dir = temp_dir("groups");
  AdamWConfig frozen = fast();
  frozen.groups = {{.pattern = "x_embedder.*", .frozen = true}, {.pattern = "*.bias", .decay = false}};
  TrainerConfig tc = quiet(3);
  tc.out_dir = dir.string();
  const auto before = m.arena().to_host(Role::Param);
  Trainer<Model>(m, ShortcutConfig{}, frozen, tc).run(Rows(toy_rows));
  const auto after = m.arena().to_host(Role::Param);
  const ParamInfo& xe = m.net().layout().at("x_embedder.weight");
  const ParamInfo& f1 = m.net().layout().at("blocks.0.mlp.fc1.weight");
  CHECK(std::equal(after.begin() + long(xe.offset), after.begin() + long(xe.offset + xe.size),
                   before.begin() + long(xe.offset)));
  CHECK_FALSE(std::equal(after.begin() + long(f1.offset), after.begin() + long(f1.offset + f1.size),
                         before.begin() + long(f1.offset)));
  Model r(be, small_net(), 1);
  CHECK_THROWS_WITH(Trainer<Model>(r, ShortcutConfig{}, fast(), quiet(6)).resume((dir / "checkpoints" / "last").string()),
                    Catch::Contains("adamw.param_groups"));
  Trainer<Model> same(r, ShortcutConfig{}, frozen, quiet(6));
  CHECK_NOTHROW(same.resume((dir / "checkpoints" / "last").string()));
}
