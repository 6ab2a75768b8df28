// Weights files and training checkpoints: round trips of a tiny DiT and an MLP net through single
// files and checkpoint folders (every role and the train state), the PyTorch names and shapes in the
// header, and every kind of mismatch or damage raising a FileError that names the problem. The
// checkpoint headers are also compiled into a second translation unit linked into this test.
#include <catch2/catch.hpp>

#include <shortcut/cpu/backend.hpp>
#include <shortcut/io/checkpoint.hpp>
#include <shortcut/nn/dit.hpp>
#include <shortcut/nn/mlp_net.hpp>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "data_test_util.hpp"
#include "test_util.hpp"

using namespace shortcut;
using namespace shortcut::io;
using Catch::Matchers::Contains;
using datatest::expect_file_error;
namespace fs = std::filesystem;
using json = nlohmann::json;

// checkpoint_io_second_tu.cpp
std::vector<float> second_tu_roundtrip(const std::string& path);

namespace {

using Be = cpu::Backend<float>;
using BeD = cpu::Backend<double>;

fs::path temp_dir() { return testutil::scratch_dir("shortcut_checkpoint_test"); }

nn::DiTConfig tiny_config() {
  nn::DiTConfig c;
  c.image = 8;
  c.channels = 2;
  c.patch = 2;
  c.hidden = 16;
  c.depth = 2;
  c.heads = 2;
  c.mlp_ratio = 4.0;
  c.classes = 3;
  return c;
}

// Random values in every tensor, zeros in the alignment padding (which files do not hold).
template <class T>
std::vector<T> random_weights(const ParamLayout& L, double sd = 1.0) {
  std::vector<T> h(L.total(), T(0));
  for (auto& p : L.entries()) {
    auto v = testutil::randn<T>(p.size, sd);
    std::copy(v.begin(), v.end(), h.begin() + long(p.offset));
  }
  return h;
}

json header_of(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  unsigned char len[8];
  f.read(reinterpret_cast<char*>(len), 8);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(len[i]) << (8 * i);
  std::string h(n, '\0');
  f.read(h.data(), long(n));
  return json::parse(h);
}

// A weights file for `L` written by hand, with edits, to feed the loader damaged input.
struct FileBuilder {
  const ParamLayout& L;
  std::vector<float> values;
  explicit FileBuilder(const ParamLayout& l) : L(l), values(random_weights<float>(l)) {}
  SafetensorsWriter writer(const std::string& skip = "", const std::string& reshape = "") const {
    SafetensorsWriter w;
    for (auto& p : L.entries()) {
      if (p.name == skip) continue;
      auto shape = p.shape;
      if (p.name == reshape) std::reverse(shape.begin(), shape.end());
      w.add(p.name, shape, values.data() + p.offset);
    }
    return w;
  }
};

}  // namespace

TEST_CASE("checkpoint: DiT weights round-trip through save_weights and load_weights", "[checkpoint]") {
  Be be;
  nn::DiT<Be> net(be, tiny_config());
  ParamArena<Be> arena(be, net.layout());
  auto w = random_weights<float>(net.layout());
  arena.from_host(Role::Ema, w);
  const fs::path p = temp_dir() / "dit.safetensors";
  save_weights(p, net, arena);  // the EMA weights by default
  const json cfg = net.config_json();
  std::vector<float> back = load_weights<float>(p, net.layout(), &cfg, fixed_tensors(net));
  CHECK(back == w);

  // into an arena, through the network-level helper
  ParamArena<Be> other(be, net.layout());
  load_sampling_weights(p, net, other, Role::Param);
  CHECK(other.to_host(Role::Param) == w);
  for (auto& e : fs::directory_iterator(temp_dir()))
    CHECK_THAT(e.path().filename().string(), !Contains(".tmp-"));
}

TEST_CASE("checkpoint: the header holds the PyTorch DiT state_dict names and shapes", "[checkpoint]") {
  Be be;
  const auto c = tiny_config();
  nn::DiT<Be> net(be, c);
  ParamArena<Be> arena(be, net.layout());
  arena.initialize(3);
  const fs::path p = temp_dir() / "names.safetensors";
  save_weights(p, net, arena, Role::Param);

  // The state_dict of the PyTorch DiT (facebookresearch/DiT models.py plus d_embedder, as in
  // torch_shortcut.py): what load_state_dict(strict=True) requires, name for name.
  const int64_t D = c.hidden, C = c.channels, P = c.patch, T = c.tokens(), M = c.mlp_hidden();
  std::map<std::string, std::vector<int64_t>> want = {
      {"pos_embed", {1, T, D}},
      {"x_embedder.proj.weight", {D, C, P, P}},
      {"x_embedder.proj.bias", {D}},
      {"y_embedder.embedding_table.weight", {c.classes + 1, D}},
      {"final_layer.adaLN_modulation.1.weight", {2 * D, D}},
      {"final_layer.adaLN_modulation.1.bias", {2 * D}},
      {"final_layer.linear.weight", {P * P * C, D}},
      {"final_layer.linear.bias", {P * P * C}},
  };
  for (std::string e : {"t_embedder", "d_embedder"}) {
    want[e + ".mlp.0.weight"] = {D, 256};
    want[e + ".mlp.0.bias"] = {D};
    want[e + ".mlp.2.weight"] = {D, D};
    want[e + ".mlp.2.bias"] = {D};
  }
  for (int i = 0; i < c.depth; ++i) {
    const std::string b = "blocks." + std::to_string(i);
    want[b + ".adaLN_modulation.1.weight"] = {6 * D, D};
    want[b + ".adaLN_modulation.1.bias"] = {6 * D};
    want[b + ".attn.qkv.weight"] = {3 * D, D};
    want[b + ".attn.qkv.bias"] = {3 * D};
    want[b + ".attn.proj.weight"] = {D, D};
    want[b + ".attn.proj.bias"] = {D};
    want[b + ".mlp.fc1.weight"] = {M, D};
    want[b + ".mlp.fc1.bias"] = {M};
    want[b + ".mlp.fc2.weight"] = {D, M};
    want[b + ".mlp.fc2.bias"] = {D};
  }

  const json h = header_of(p);
  std::map<std::string, std::vector<int64_t>> got;
  uint64_t bytes = 0;
  for (auto& [name, v] : h.items()) {
    if (name == "__metadata__") continue;
    got[name] = v["shape"].get<std::vector<int64_t>>();
    CHECK(v["dtype"] == "F32");
    bytes += v["data_offsets"][1].get<uint64_t>() - v["data_offsets"][0].get<uint64_t>();
  }
  for (auto& [name, shape] : want) {
    INFO("tensor " << name);
    REQUIRE(got.count(name));
    CHECK(got[name] == shape);
  }
  for (auto& [name, shape] : got) {
    INFO("tensor " << name);
    CHECK(want.count(name));
  }
  CHECK(bytes == (net.layout().count() + size_t(T * D)) * 4);

  const json& meta = h["__metadata__"];
  CHECK(meta["format"] == "pt");
  CHECK(json::parse(meta["config"].get<std::string>()) == net.config_json());
  // pos_embed holds the network's fixed embedding
  SafetensorsReader r(p);
  auto pos = r.read<float>("pos_embed");
  CHECK(pos == net.pos_embed());
}

TEST_CASE("checkpoint: a checkpoint folder round-trips every role and the train state", "[checkpoint]") {
  Be be;
  nn::DiT<Be> net(be, tiny_config());
  const ParamLayout& L = net.layout();
  ParamArena<Be> arena(be, L);
  std::vector<float> roles[4] = {random_weights<float>(L), random_weights<float>(L), random_weights<float>(L, 1e-3),
                                 random_weights<float>(L, 1e-6)};
  for (auto& v : roles[3])
    v = std::abs(v);  // second moments are non-negative
  const Role which[4] = {Role::Param, Role::Ema, Role::AdamM, Role::AdamV};
  for (int i = 0; i < 4; ++i) arena.from_host(which[i], roles[i]);
  TrainState st;
  st.step = 123456789012;
  st.rng_seed = 0xdeadbeefcafef00dull;         // needs all 64 bits: stored as a decimal string
  st.rng_position = (uint64_t(1) << 63) + 5;
  st.extra = {{"lr", 1e-4}, {"run", "tiny"}, {"losses", {0.5, 0.25}}};
  const fs::path dir = temp_dir() / "ckpt";
  save_checkpoint(dir, net, arena, st);
  for (const char* f : {kEmaFile, kModelFile, kOptimizerFile}) CHECK(fs::exists(dir / f));
  CHECK(std::distance(fs::directory_iterator(dir), fs::directory_iterator()) == 3);  // no temporaries left

  ParamArena<Be> fresh(be, L);
  CHECK_FALSE(fresh.has(Role::AdamM));
  TrainState back = load_checkpoint(dir, net, fresh);
  CHECK(back.step == st.step);
  CHECK(back.rng_seed == st.rng_seed);
  CHECK(back.rng_position == st.rng_position);
  CHECK(back.extra == st.extra);
  for (int i = 0; i < 4; ++i) {
    INFO("role " << role_name(which[i]));
    CHECK(fresh.to_host(which[i]) == roles[i]);
  }

  // the optimizer file names its moments after the parameters
  SafetensorsReader opt(dir / kOptimizerFile);
  CHECK(opt.contains("exp_avg.blocks.0.attn.qkv.weight"));
  CHECK(opt.contains("exp_avg_sq.final_layer.linear.bias"));
  CHECK(*opt.metadata("step") == "123456789012");
  // sampling from the folder uses the EMA weights; the folder's config can be read back
  const json cfg = net.config_json();
  CHECK(load_sampling_weights<float>(dir, L, &cfg, fixed_tensors(net)) == roles[1]);
  CHECK(read_config(dir) == cfg);
  CHECK(nn::DiTConfig::from_json(read_config(dir / kModelFile)).hidden == 16);

  // saving again over the same folder replaces it
  st.step += 1;
  save_checkpoint(dir, net, fresh, st);
  CHECK(load_checkpoint(dir, net, arena).step == st.step);
}

TEST_CASE("checkpoint: a double arena is stored as F64 exactly, as F32, F16 or BF16 within rounding", "[checkpoint]") {
  BeD be;
  nn::DiT<BeD> net(be, tiny_config());
  ParamArena<BeD> arena(be, net.layout());
  auto w = random_weights<double>(net.layout());
  arena.from_host(Role::Param, w);
  arena.copy_role(Role::Ema, Role::Param);
  SaveOptions f64;
  f64.dtype = DType::F64;
  save_checkpoint(temp_dir() / "ckpt64", net, arena, TrainState{}, f64);
  save_checkpoint(temp_dir() / "ckpt32", net, arena, TrainState{});
  ParamArena<BeD> a64(be, net.layout()), a32(be, net.layout());
  load_checkpoint(temp_dir() / "ckpt64", net, a64);
  load_checkpoint(temp_dir() / "ckpt32", net, a32);
  CHECK(a64.to_host(Role::Ema) == w);
  auto h32 = a32.to_host(Role::Ema);
  for (size_t i = 0; i < w.size(); ++i) CHECK(h32[i] == double(float(w[i])));
  CHECK(SafetensorsReader(temp_dir() / "ckpt64" / kEmaFile).info("pos_embed").dtype == DType::F64);
  // half-precision files load too (pos_embed is compared within the storage's rounding)
  for (DType dt : {DType::F16, DType::BF16}) {
    SaveOptions half;
    half.dtype = dt;
    save_weights(temp_dir() / "half.safetensors", net, arena, Role::Ema, half);
    const json cfg = net.config_json();
    auto h = load_sampling_weights<double>(temp_dir() / "half.safetensors", net.layout(), &cfg, fixed_tensors(net));
    const double eps = dt == DType::F16 ? std::ldexp(1.0, -11) : std::ldexp(1.0, -8);
    for (size_t i = 0; i < w.size(); ++i) REQUIRE(std::abs(h[i] - w[i]) <= eps * std::abs(w[i]) + 1e-7);
  }
  // a float network reads the double file
  Be bf;
  nn::DiT<Be> netf(bf, tiny_config());
  ParamArena<Be> af(bf, netf.layout());
  load_sampling_weights(temp_dir() / "ckpt64", netf, af);
  CHECK(af.to_host(Role::Ema)[5] == float(w[5]));
}

TEST_CASE("checkpoint: Adam moments not yet allocated are zeros - a missing EMA is an error", "[checkpoint]") {
  Be be;
  nn::MlpNet<Be> net(be, nn::MlpNetConfig{});
  ParamArena<Be> arena(be, net.layout());
  arena.initialize(7);
  CHECK_THROWS_WITH(save_checkpoint(temp_dir() / "noema", net, arena, TrainState{}), Contains("no EMA weights"));
  CHECK_FALSE(fs::exists(temp_dir() / "noema" / kEmaFile));
  arena.copy_role(Role::Ema, Role::Param);
  save_checkpoint(temp_dir() / "fresh", net, arena, TrainState{});
  ParamArena<Be> back(be, net.layout());
  back.from_host(Role::AdamM, random_weights<float>(net.layout()));
  load_checkpoint(temp_dir() / "fresh", net, back);
  CHECK(back.to_host(Role::AdamM) == std::vector<float>(arena.size(), 0.0f));
  CHECK(back.to_host(Role::Ema) == arena.to_host(Role::Param));
  // the MLP net has no fixed tensors: its files hold exactly the layout
  CHECK(SafetensorsReader(temp_dir() / "fresh" / kEmaFile).tensors().size() == net.layout().entries().size());
}

TEST_CASE("checkpoint: mismatched or damaged weights are FileErrors naming the problem", "[checkpoint]") {
  Be be;
  const auto c = tiny_config();
  nn::DiT<Be> net(be, c);
  const ParamLayout& L = net.layout();
  const json cfg = net.config_json();
  const auto fixed = fixed_tensors(net);
  FileBuilder fb(L);
  const fs::path p = temp_dir() / "bad.safetensors";
  auto load = [&](const LoadOptions& o = {}) { return load_weights<float>(p, L, &cfg, fixed, o); };

  SECTION("a different config with the same shapes (head count)") {
    auto c4 = c;
    c4.heads = 4;
    save_weights(p, L, fb.values.data(), nn::DiTConfig(c4).to_json(), fixed);
    expect_file_error(load, {"bad.safetensors", "config mismatch", "field 'heads' is 4 in the file, expected 2"});
  }
  SECTION("a config of another model kind") {
    save_weights(p, L, fb.values.data(), nn::MlpNetConfig{}.to_json(), fixed);
    expect_file_error(load, {"config mismatch", "field 'model' is \"mlp\" in the file, expected \"dit\""});
  }
  SECTION("a missing tensor") {
    fb.writer("final_layer.linear.bias").write(p);
    expect_file_error(load, {"bad.safetensors", "missing tensor 'final_layer.linear.bias'"});
  }
  SECTION("a tensor of the wrong shape") {
    fb.writer("", "blocks.1.attn.qkv.weight").write(p);
    expect_file_error(load, {"wrong shape for tensor 'blocks.1.attn.qkv.weight': expected [48, 16], got [16, 48]"});
  }
  SECTION("an unexpected tensor") {
    auto w = fb.writer();
    float x = 1;
    w.add("blocks.2.attn.qkv.weight", {1}, &x);
    w.write(p);
    expect_file_error(load, {"unexpected tensor 'blocks.2.attn.qkv.weight'"});
  }
  SECTION("an optimizer state file passed as weights") {
    ParamArena<Be> arena(be, L);
    arena.copy_role(Role::Ema, Role::Param);
    save_checkpoint(temp_dir() / "ck_opt", net, arena, TrainState{});
    expect_file_error([&] { load_weights<float>(temp_dir() / "ck_opt" / kOptimizerFile, L, &cfg, fixed); },
                      {"optimizer.safetensors", "missing tensors", "optimizer state file"});
  }
  SECTION("pos_embed of the wrong shape") {
    save_weights(p, L, fb.values.data(), cfg, {FixedTensor{"pos_embed", {16, 16}, fixed[0].values}});
    expect_file_error(load, {"wrong shape for tensor 'pos_embed': expected [1, 16, 16], got [16, 16]"});
  }
  SECTION("pos_embed of another model") {
    auto f = fixed;
    f[0].values[17] += 0.5;
    save_weights(p, L, fb.values.data(), cfg, f);
    expect_file_error(load, {"tensor 'pos_embed' differs from the values this model computes"});
  }
  SECTION("nan in a weight") {
    fb.values[L.at("blocks.0.mlp.fc2.weight").offset + 3] = std::nanf("");
    save_weights(p, L, fb.values.data(), cfg, fixed);
    expect_file_error(load, {"tensor 'blocks.0.mlp.fc2.weight' holds a non-finite value (nan) at element 3"});
    LoadOptions lax;
    lax.check_finite = false;
    CHECK(std::isnan(load(lax)[L.at("blocks.0.mlp.fc2.weight").offset + 3]));
  }
  SECTION("an integer tensor") {
    // a raw file holding one I32 tensor under a weight's name
    const std::string header = R"({"x_embedder.proj.bias":{"dtype":"I32","shape":[16],"data_offsets":[0,64]}})";
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(uint64_t(header.size()) >> (8 * i));
    f.write(reinterpret_cast<char*>(len), 8);
    f << header << std::string(64, '\0');
    f.close();
    expect_file_error(load, {"tensor 'x_embedder.proj.bias' has dtype I32; weights must be floating point"});
  }
  SECTION("a file without a config (as saved from PyTorch) loads, unless a config is required") {
    auto w = fb.writer();
    w.add("pos_embed", {1, 16, 16}, fixed[0].values.data());
    w.write(p);
    auto v = load();
    CHECK(v == fb.values);
    LoadOptions strict;
    strict.require_config = true;
    expect_file_error([&] { load(strict); }, {"has no model config"});
    expect_file_error([&] { (void)read_config(p); }, {"has no model config"});
  }
  SECTION("a config that is not JSON") {
    auto w = fb.writer();
    w.add_metadata("config", "{\"hidden\": 16,");
    w.write(p);
    expect_file_error(load, {"'config' is not valid JSON"});
  }
  SECTION("a truncated file") {
    save_weights(p, L, fb.values.data(), cfg, fixed);
    fs::resize_file(p, fs::file_size(p) - 10);
    expect_file_error(load, {"bad.safetensors", "truncated"});
  }
  SECTION("a folder without ema.safetensors") {
    fs::create_directories(temp_dir() / "empty_folder");
    expect_file_error([&] { load_sampling_weights<float>(temp_dir() / "empty_folder", L, &cfg); },
                      {"empty_folder", "has no ema.safetensors"});
  }
}

TEST_CASE("checkpoint: damaged or inconsistent checkpoint folders are FileErrors - the arena is left as it was",
          "[checkpoint]") {
  Be be;
  nn::DiT<Be> net(be, tiny_config());
  const ParamLayout& L = net.layout();
  ParamArena<Be> arena(be, L);
  arena.from_host(Role::Param, random_weights<float>(L));
  arena.copy_role(Role::Ema, Role::Param);
  const fs::path dir = temp_dir() / "ck_damage";
  fs::remove_all(dir);
  save_checkpoint(dir, net, arena, TrainState{10, 1, 2, {}});

  ParamArena<Be> target(be, L);
  const auto before = random_weights<float>(L);
  target.from_host(Role::Param, before);
  auto untouched = [&] {
    CHECK(target.to_host(Role::Param) == before);
    CHECK_FALSE(target.has(Role::Ema));
  };

  SECTION("no such folder: named by its absolute path, whatever the user typed") {
    const fs::path typed = fs::path("run") / "checkpoints" / "nope";
    expect_file_error([&] { load_checkpoint(typed, net, target); },
                      {"checkpoint folder '" + (fs::current_path() / typed).string() + "' does not exist"});
  }
  SECTION("a file instead of a folder") {
    expect_file_error([&] { load_checkpoint(dir / kEmaFile, net, target); }, {"is a file, not a folder"});
  }
  SECTION("a missing optimizer file") {
    fs::remove(dir / kOptimizerFile);
    expect_file_error([&] { load_checkpoint(dir, net, target); }, {"has no optimizer.safetensors"});
  }
  SECTION("files from two different saves") {
    save_checkpoint(temp_dir() / "ck_later", net, arena, TrainState{20, 1, 2, {}});
    fs::copy_file(temp_dir() / "ck_later" / kEmaFile, dir / kEmaFile, fs::copy_options::overwrite_existing);
    expect_file_error([&] { load_checkpoint(dir, net, target); },
                      {"inconsistent", "ema.safetensors is from step 20 but optimizer.safetensors from step 10"});
  }
  SECTION("a truncated raw-weights file") {
    fs::resize_file(dir / kModelFile, fs::file_size(dir / kModelFile) / 2);
    expect_file_error([&] { load_checkpoint(dir, net, target); }, {"model.safetensors", "truncated"});
  }
  SECTION("a checkpoint of another model") {
    auto c = tiny_config();
    c.depth = 3;
    nn::DiT<Be> deeper(be, c);
    ParamArena<Be> da(be, deeper.layout());
    expect_file_error([&] { load_checkpoint(dir, deeper, da); }, {"config mismatch", "field 'depth' is 2 in the file, expected 3"});
  }
  SECTION("a corrupt RNG position") {
    SafetensorsReader r(dir / kOptimizerFile);
    SafetensorsWriter w;
    std::vector<std::vector<float>> keep;
    for (auto& t : r.tensors()) {
      keep.push_back(r.read<float>(t.name));
      w.add(t.name, t.shape, keep.back().data());
    }
    for (auto& [k, v] : r.metadata()) w.add_metadata(k, v);
    w.add_metadata("rng_position", "12x");
    w.write(dir / kOptimizerFile);
    expect_file_error([&] { load_checkpoint(dir, net, target); }, {"'rng_position' is not an integer: '12x'"});
  }
  untouched();
}

TEST_CASE("checkpoint: the io headers link from two translation units", "[checkpoint]") {
  const fs::path p = temp_dir() / "second_tu.safetensors";
  std::vector<float> v = second_tu_roundtrip(p.string());
  CHECK(v == std::vector<float>{1.0f, -2.0f, 0.5f});
  SafetensorsReader r(p);  // and this TU reads what the other wrote
  CHECK(r.read<float>("v") == v);
}
