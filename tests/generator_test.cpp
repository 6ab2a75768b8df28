// load_generator and InferenceModel: one call from a checkpoint folder to samples for both networks
// (DiT, MLP) and both objectives (shortcut, flow matching), equal bit for bit to the training model's
// samples from the same weights and noise; the inference model's memory (one weight set); and every
// missing, wrong or damaged piece of metadata a FileError that names the file and the key.
#include <catch2/catch.hpp>

#include <shortcut/shortcut.hpp>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>

#include "data_test_util.hpp"
#include "test_util.hpp"
#include "trainer_test_util.hpp"

using namespace shortcut;
using Catch::Matchers::Contains;
using datatest::expect_file_error;
using trainer_test::edit_folder;
using trainer_test::edit_metadata;
namespace fs = std::filesystem;
using json = nlohmann::json;
using Be = cpu::Backend<float>;

// The inference model is what the sampler needs and no more; the training model is both.
static_assert(SamplingModel<InferenceModel<nn::DiT<Be>>> && SamplingModel<InferenceModel<nn::MlpNet<Be>>>);
static_assert(!VelocityModel<InferenceModel<nn::DiT<Be>>>);
static_assert(SamplingModel<ShortcutModel<nn::DiT<Be>>> && VelocityModel<ShortcutModel<nn::DiT<Be>>>);

namespace {

fs::path temp_dir(const std::string& name) {
  fs::path d = testutil::scratch_dir("shortcut_generator_test") / name;
  fs::remove_all(d);
  return d;
}

nn::DiTConfig tiny_dit() {
  nn::DiTConfig c;
  c.image = 8; c.channels = 2; c.patch = 2; c.hidden = 16; c.depth = 2; c.heads = 2; c.classes = 3;
  return c;
}
nn::MlpNetConfig tiny_mlp() {
  nn::MlpNetConfig c;
  c.hidden = 16; c.depth = 2; c.classes = 3;
  return c;
}

// The schedules of the two objectives these tests train: the shortcut objective (reads d) and flow
// matching, with M = 8 (L = 3: the flow query k = 3 differs from k = log2 N for N < 8).
SamplingSchedule schedule(bool reads_d) {
  SamplingSchedule s;
  s.reads_d = reads_d;
  s.denoise_timesteps = 8;
  return s;
}

// Trains `steps` steps of a fresh model with the Trainer (the shortcut objective, or flow matching)
// and returns its "last" checkpoint folder.
template <class Net>
fs::path train_checkpoint(const typename Net::Config& cfg, bool reads_d, const std::string& name, int steps = 3) {
  using M = ShortcutModel<Net>;
  Be be;
  ShortcutModel<Net> m(be, cfg, 7);
  AdamWConfig oc;
  oc.lr = 1e-2;
  TrainerConfig tc;
  tc.steps = steps; tc.batch = 16; tc.progress = false; tc.ema_tau = 0.5; tc.seed = 11;
  tc.out_dir = temp_dir(name).string();
  const int64_t n = m.sample_size();
  auto batch = [&](Rng& rng, int B, std::vector<float>& x, std::vector<int32_t>& y) {
    x.resize(size_t(B * n));
    for (auto& v : x) v = float(rng.normal());
    y.resize(size_t(B));
    for (auto& l : y) l = int32_t(rng.randint(m.num_classes()));
  };
  if (reads_d) {
    ShortcutConfig sc;
    sc.denoise_timesteps = 8;
    Trainer<M>(m, sc, oc, tc).run(batch);
  } else {
    FlowMatchingConfig fc;
    fc.denoise_timesteps = 8;
    Trainer<M, dist::LocalCommunicator, FlowMatching<M>>(m, FlowMatching<M>(fc), oc, tc).run(batch);
  }
  return fs::path(tc.out_dir) / "checkpoints" / "last";
}

// The training model's samples from a checkpoint folder (what the examples did before load_generator).
template <class Net>
std::vector<float> training_model_samples(const fs::path& dir, const typename Net::Config& cfg, const SamplingSchedule& sc,
                                          const std::vector<int32_t>& labels, int steps, double w, bool ema,
                                          uint64_t seed, size_t* arena_bytes = nullptr) {
  Be be;
  ShortcutModel<Net> m(be, cfg, 99);
  io::load_checkpoint(dir, m.net(), m.arena());
  if (arena_bytes) *arena_bytes = m.arena().allocated_bytes();
  return generate(m, sc, labels, SamplerConfig{steps, w, ema}, seed, 0);
}

template <class Net>
void check_network(const typename Net::Config& cfg, const std::string& type) {
  const std::vector<int32_t> labels = {0, 1, 2, 3, 1};  // 3 = the null label
  for (bool reads_d : {true, false}) {
    const SamplingSchedule sc = schedule(reads_d);
    const std::string name = type + (reads_d ? "_shortcut" : "_flow");
    INFO(name);
    const fs::path dir = train_checkpoint<Net>(cfg, reads_d, name);
    Be be;
    auto g = load_generator<Be>(be, dir);
    CHECK(g.network() == type);
    CHECK(g.weights() == Role::Ema);
    CHECK(g.sampling().reads_d == reads_d);
    CHECK(g.sampling().denoise_timesteps == 8);
    CHECK(g.info().training_json.at("objective").at("name") == (reads_d ? "shortcut" : "flow_matching"));
    CHECK(g.info().step == 3);
    CHECK(g.num_classes() == 3);
    REQUIRE(g.model<InferenceModel<Net>>() != nullptr);
    CHECK(g.model<InferenceModel<Net>>()->net().config_json() == Net(be, cfg).config_json());
    for (int steps : {1, 2, 8})
      for (double w : {1.0, 1.5}) {
        INFO("steps " << steps << ", guidance " << w);
        size_t arena_bytes = 0;
        const auto want = training_model_samples<Net>(dir, cfg, sc, labels, steps, w, true, 5, &arena_bytes);
        const auto got = g.sample(labels, steps, w, 5);
        REQUIRE(got.size() == labels.size() * size_t(g.sample_size()));
        CHECK(got == want);  // bit for bit
        // one weight set instead of five (raw, gradients, EMA, two moments after a checkpoint load)
        CHECK(arena_bytes == 5 * g.weight_bytes());
      }
    // the raw weights on request
    auto raw = load_generator<Be>(be, dir, GeneratorOptions{.weights = Role::Param});
    CHECK(raw.weights() == Role::Param);
    const auto raw_samples = raw.sample(labels, 2, 1.5, 5);
    CHECK(raw_samples == training_model_samples<Net>(dir, cfg, sc, labels, 2, 1.5, false, 5));
    CHECK(raw_samples != g.sample(labels, 2, 1.5, 5));  // EMA (tau 0.5) and raw weights differ
    // given noise = the seed's noise
    const auto noise = sample_noise<float>(g.sample_size(), 0, int64_t(labels.size()), 5, 0);
    CHECK(g.sample_from(noise, labels, 4) == g.sample(labels, 4, 1.0, 5));
    // the objective read from the file matters: the other objective's step index gives other samples
    SamplingSchedule other = sc;
    other.reads_d = !reads_d;
    CHECK(training_model_samples<Net>(dir, cfg, other, labels, 2, 1.0, true, 5) != g.sample(labels, 2, 1.0, 5));
    // sampler errors: steps beyond M, bad labels
    CHECK_THROWS_WITH(g.sample(labels, 16), Contains("power of two in [1, 8]"));
    CHECK_THROWS_WITH(g.sample({0, 4}, 1), Contains("label 4 of row 1 is outside [0, 3]"));
  }
}

}  // namespace

TEST_CASE("generator: one call samples a DiT checkpoint of either objective, equal to the training model's samples",
          "[generator]") {
  check_network<nn::DiT<Be>>(tiny_dit(), "dit");
}

TEST_CASE("generator: one call samples an MLP checkpoint of either objective, equal to the training model's samples",
          "[generator]") {
  check_network<nn::MlpNet<Be>>(tiny_mlp(), "mlp");
}

// With one class every training label is the null label (DESIGN.md §2), so row 0 of the label table
// never learns: the network must read any valid label as the null label, or label 0 samples an
// untrained model. Trained with labels 0 on purpose: the training run must not depend on them either.
template <class Net>
void check_one_class(typename Net::Config cfg, const std::string& name) {
  cfg.classes = 1;
  const SamplingSchedule sc = schedule(true);
  const fs::path dir = train_checkpoint<Net>(cfg, true, name);
  Be be;
  auto g = load_generator<Be>(be, dir);
  const std::vector<int32_t> zeros(4, 0), nulls(4, 1);
  for (int steps : {1, 4})
    for (double w : {1.0, 1.5}) {
      INFO("steps " << steps << ", guidance " << w);
      CHECK(g.sample(zeros, steps, w, 5) == g.sample(nulls, steps, w, 5));
      CHECK(training_model_samples<Net>(dir, cfg, sc, zeros, steps, w, true, 5) ==
            training_model_samples<Net>(dir, cfg, sc, nulls, steps, w, true, 5));
    }
  // the network itself (what training and its bootstrap queries call)
  ShortcutModel<Net> m(be, cfg, 3);
  io::load_checkpoint(dir, m.net(), m.arena());
  const int B = 4;
  const size_t n = size_t(B) * size_t(m.sample_size());
  const auto x = testutil::randn<float>(n);
  const std::vector<float> t = {0.0f, 0.25f, 0.5f, 0.75f}, k = {0.0f, 1.0f, 2.0f, 3.0f};
  const float* v = m.forward(x.data(), t.data(), k.data(), zeros.data(), B);
  const std::vector<float> a(v, v + n);
  v = m.forward(x.data(), t.data(), k.data(), nulls.data(), B);
  CHECK(a == std::vector<float>(v, v + n));
}

TEST_CASE("generator: a one-class model samples label 0 as the null label (the only label it trains)",
          "[generator]") {
  check_one_class<nn::MlpNet<Be>>(tiny_mlp(), "one_class_mlp");
  check_one_class<nn::DiT<Be>>(tiny_dit(), "one_class_dit");
}

TEST_CASE("inference model: one weight set, refuses the other, outputs equal the training model's velocity",
          "[generator]") {
  const fs::path dir = train_checkpoint<nn::DiT<Be>>(tiny_dit(), true, "inference");
  Be be;
  InferenceModel<nn::DiT<Be>> im(be, tiny_dit(), dir);  // EMA by default
  ShortcutModel<nn::DiT<Be>> tm(be, tiny_dit(), 3);
  io::load_checkpoint(dir, tm.net(), tm.arena());
  CHECK(im.weights() == Role::Ema);
  CHECK(im.weight_bytes() == tm.net().layout().total() * sizeof(float));
  CHECK(im.weights_to_host() == tm.arena().to_host(Role::Ema));
  // the velocity itself, guided and not
  const int B = 3;
  const size_t n = size_t(B) * size_t(im.sample_size());
  const auto x = testutil::randn<float>(n);
  const std::vector<float> t = {0.0f, 0.25f, 0.5f}, k = {0.0f, 1.0f, 3.0f};
  const std::vector<int32_t> y = {0, 2, 3};
  for (float w : {1.0f, 2.0f}) {
    std::vector<float> a(n), b(n);
    im.velocity(a.data(), x.data(), t.data(), k.data(), y.data(), B, w, Role::Ema);
    tm.velocity(b.data(), x.data(), t.data(), k.data(), y.data(), B, w, Role::Ema);
    CHECK(a == b);
  }
  // asking for the raw weights of an EMA-only model is an error, not a silent substitute
  std::vector<float> out(n);
  CHECK_THROWS_WITH(im.velocity(out.data(), x.data(), t.data(), k.data(), y.data(), B, 1.0f, Role::Param),
                    Contains("holds the EMA weights ('ema') only"));
  CHECK_THROWS_WITH(generate(im, schedule(true), {0}, SamplerConfig{1, 1.0, false}, 0, 0),
                    Contains("holds the EMA weights"));
  CHECK_THROWS_AS(InferenceModel<nn::DiT<Be>>(be, tiny_dit(), dir, Role::Grad), ConfigError);
  // the raw weights from model.safetensors
  InferenceModel<nn::DiT<Be>> raw(be, tiny_dit(), dir, Role::Param);
  CHECK(raw.weights_to_host() == tm.arena().to_host(Role::Param));
  // a config other than the file's
  auto deeper = tiny_dit();
  deeper.depth = 3;
  expect_file_error([&] { InferenceModel<nn::DiT<Be>>(be, deeper, dir); }, {"config mismatch", "'depth'"});
}

TEST_CASE("generator: missing, wrong or inconsistent metadata and damaged files are FileErrors naming the problem",
          "[generator]") {
  const fs::path base = train_checkpoint<nn::DiT<Be>>(tiny_dit(), false, "errors_base");
  const fs::path dir = temp_dir("errors");
  fs::copy(base, dir);
  Be be;
  auto load = [&](const fs::path& p, GeneratorOptions o = {}) { return load_generator<Be>(be, p, o); };
  REQUIRE_NOTHROW(load(dir));  // the copy itself is fine

  SECTION("no such folder: named by its absolute path, whatever the user typed") {
    const fs::path typed = fs::path("run") / "checkpoints" / "nope";
    expect_file_error([&] { load(typed); },
                      {"checkpoint folder '" + (fs::current_path() / typed).string() + "' does not exist"});
  }
  SECTION("no ema.safetensors / no model.safetensors for the raw weights") {
    fs::remove(dir / io::kModelFile);
    REQUIRE_NOTHROW(load(dir));
    expect_file_error([&] { load(dir, GeneratorOptions{.weights = Role::Param}); },
                      {"has no model.safetensors", "raw weights"});
    fs::remove(dir / io::kEmaFile);
    expect_file_error([&] { load(dir); }, {"has no ema.safetensors"});
  }
  SECTION("no 'training' metadata: an error, unless the caller says how the model was trained") {
    edit_folder(dir, [](auto& m) { m.erase("training"); });
    expect_file_error([&] { load(dir); }, {"ema.safetensors", "has no 'training' metadata", "GeneratorOptions::sampling"});
    GeneratorOptions o;
    o.sampling = schedule(false);
    auto g = load(dir, o);
    CHECK_FALSE(g.sampling().reads_d);
    // a single weights file without it (io::save_weights writes none)
    ShortcutModel<nn::DiT<Be>> m(be, tiny_dit(), 1);
    io::save_weights(dir / "w.safetensors", m.net(), m.arena(), Role::Param);
    expect_file_error([&] { load(dir / "w.safetensors"); }, {"w.safetensors", "has no 'training' metadata"});
    CHECK(load(dir / "w.safetensors", o).weights() == Role::Ema);
    expect_file_error([&] { load(dir / "w.safetensors", GeneratorOptions{.weights = Role::Param}); },
                      {"holds one weight set (content 'weights')"});
  }
  SECTION("'training' without the objective or M, or not JSON") {
    edit_folder(dir, [](auto& m) {
      json t = json::parse(m.at("training"));
      t["shortcut"].erase("denoise_timesteps");
      m["training"] = t.dump();
    });
    expect_file_error([&] { load(dir); }, {"no 'shortcut.denoise_timesteps'"});
    edit_folder(dir, [](auto& m) { m["training"] = R"({"shortcut": {"denoise_timesteps": 8}})"; });
    expect_file_error([&] { load(dir); }, {"no 'shortcut.objective'"});
    edit_folder(dir, [](auto& m) { m["training"] = R"({"adamw": {}})"; });
    expect_file_error([&] { load(dir); }, {"has no object 'shortcut'"});
    edit_folder(dir, [](auto& m) { m["training"] = R"({"shortcut": {"objective": "diffusion", "denoise_timesteps": 8}})"; });
    expect_file_error([&] { load(dir); }, {"objective must be 'shortcut' (reads d) or 'flow' (does not)"});
    edit_folder(dir, [](auto& m) { m["training"] = "{oops"; });
    expect_file_error([&] { load(dir); }, {"'training' is not valid JSON"});
  }
  SECTION("an unknown or missing network type, or a type its config does not fit") {
    auto set_model = [&](const json& model) {
      edit_folder(dir, [&](auto& m) {
        json c = json::parse(m.at("config"));
        if (model.is_null()) c.erase("model");
        else c["model"] = model;
        m["config"] = c.dump();
      });
    };
    set_model("unet");
    expect_file_error([&] { load(dir); }, {"network type 'unet'", "known: dit, mlp"});
    set_model(nullptr);
    expect_file_error([&] { load(dir); }, {"no string 'model' naming the network type"});
    set_model("mlp");  // a DiT's config read as an MLP's
    expect_file_error([&] { load(dir); }, {"ema.safetensors", "'config'", "MLP net config"});
    edit_folder(dir, [](auto& m) { m.erase("config"); });
    expect_file_error([&] { load(dir); }, {"has no network config"});
  }
  SECTION("inconsistent folders") {
    edit_metadata(dir / io::kModelFile, [](auto& m) {
      json t = json::parse(m.at("training"));
      t["shortcut"]["objective"] = "shortcut";
      m["training"] = t.dump();
    });
    expect_file_error([&] { load(dir); }, {"inconsistent", "different 'training' metadata"});
    fs::remove_all(dir);
    fs::copy(base, dir);
    edit_metadata(dir / io::kOptimizerFile, [](auto& m) { m["step"] = "2"; });
    expect_file_error([&] { load(dir); }, {"inconsistent", "steps 2 and 3"});
  }
  SECTION("damaged files") {
    fs::resize_file(dir / io::kEmaFile, fs::file_size(dir / io::kEmaFile) - 9);
    expect_file_error([&] { load(dir); }, {"ema.safetensors", "truncated"});
    expect_file_error([&] { load(dir / io::kOptimizerFile); }, {"optimizer state file"});
  }
}

// DiT-B/2 at 256 px (32x32x4 latents, 1000 classes): the parameter memory of a model loaded to
// sample, counted from the layout (docs/checkpoints.md quotes these numbers). The accounting
// (allocated_bytes, weight_bytes) is checked against real allocations on the tiny models above.
TEST_CASE("inference model: the parameter memory DiT-B/2 saves, counted from its layout", "[generator][memory]") {
  Be be;
  nn::DiT<Be> net(be, nn::DiTConfig::preset("DiT-B", 32, 4, 1000));
  const size_t P = net.layout().count(), total = net.layout().total();
  const double MiB = 1024.0 * 1024.0, bytes = double(total) * sizeof(float);
  std::printf("DiT-B/2 (32x32x4, 1000 classes): %zu parameters (%zu with alignment padding), one float32 weight set "
              "%.1f MiB\n  training model loaded from a checkpoint (5 roles): %.1f MiB; ShortcutModel built then EMA "
              "loaded (param, grad, ema): %.1f MiB; InferenceModel: %.1f MiB\n",
              P, total, bytes / MiB, 5 * bytes / MiB, 3 * bytes / MiB, bytes / MiB);
  CHECK(P > 129000000);
  CHECK(P < 132000000);
  CHECK(total >= P);
}
