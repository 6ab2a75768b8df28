// The C++ half of the PyTorch interoperability tests (tests/python/*.py drive it):
//   torch_interop_tool export DIR   trains two tiny DiTs and two MLP networks (plain; Fourier features,
//                                   t scale and one class) a few steps (checkpoints DIR/<name>/checkpoints/last)
//                                   and writes DIR/<name>/io.safetensors: forward inputs, our outputs with
//                                   both weight sets, noise and our N-step samples from that noise
//   torch_interop_tool forward CKPT IO OUT
//                                   loads CKPT as sample_images does (and, for a folder with an optimizer
//                                   file, as --resume does), runs the forward on IO's x, t, k, y and
//                                   writes out_ema (and out_model for a folder) to OUT
//   torch_interop_tool export-dit DIR
//                                   a tiny random DiT checkpoint and one forward pass of it, for
//                                   checkpoint_torch_check.py
#include <cstdio>
#include <filesystem>
#include <shortcut/shortcut.hpp>
#include <string>
#include <vector>

using namespace shortcut;
namespace fs = std::filesystem;
using Be = cpu::Backend<float>;
using Model = ShortcutModel<nn::DiT<Be>>;

static std::vector<float> normal(size_t n, uint64_t stream, double scale = 1.0) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = float(scale * philox_normal(1234, stream, i));
  return v;
}

struct Inputs {
  int B = 0;
  std::vector<float> x, t, k;
  std::vector<int32_t> y;
};

template <class M>
static std::vector<float> forward(M& m, const Inputs& in, Role role) {
  std::vector<float> out(in.x.size());
  m.velocity(out.data(), in.x.data(), in.t.data(), in.k.data(), in.y.data(), in.B, 1.0f, role);
  return out;
}

// [B, H, W, C] for a DiT, [B, dim] for the MLP network
static std::vector<int64_t> batch_shape(const nn::DiTConfig& c, int B) { return {B, c.image, c.image, c.channels}; }
static std::vector<int64_t> batch_shape(const nn::MlpNetConfig& c, int B) { return {B, c.dim}; }

// meanflow: trained with MeanFlow (DESIGN.md §8), so its network reads d itself and its samples feed
// d = 1/N (the metadata's "step_input": "d")
template <class Net>
static void export_case(const fs::path& dir, const std::string& name, const typename Net::Config& cfg,
                        bool meanflow = false) {
  using M = ShortcutModel<Net>;
  Be be;
  M model(be, cfg, 7);
  // weights of size 0.2 everywhere (the zero-initialised final layers too), so outputs are O(1)
  model.arena().from_host(Role::Param, normal(model.arena().size(), 1, 0.2));
  model.arena().copy_role(Role::Ema, Role::Param);
  const SamplingSchedule sc = meanflow ? MeanFlowConfig{}.sampling() : ShortcutConfig{}.sampling();
  AdamWConfig oc;
  oc.lr = 1e-2;
  oc.warmup_steps = 0;
  TrainerConfig tc;
  tc.steps = 3;
  tc.batch = 32;
  tc.ema_tau = 0.5;  // EMA and raw weights differ visibly
  tc.log_every = 0;
  tc.progress = false;
  tc.out_dir = (dir / name).string();
  const int64_t n = model.sample_size();
  auto train = [&](auto objective) {
    Trainer<M, dist::LocalCommunicator, decltype(objective)> trainer(model, std::move(objective), oc, tc);
    trainer.run([&](Rng& rng, int B, std::vector<float>& x, std::vector<int32_t>& y) {
      x = normal(size_t(B) * n, 100 + rng.position());
      y.assign(size_t(B), 0);
      for (int i = 0; i < B; ++i) y[i] = i % cfg.classes;
      (void)rng.next_stream();
    });
  };
  if (meanflow) train(MeanFlow<M>(MeanFlowConfig{}));
  else train(SelfConsistencyLoss<M>(ShortcutConfig{}));
  Inputs in;
  in.B = 4;
  in.x = normal(size_t(in.B) * n, 2);
  in.t = {0.0f, 0.25f, 0.5f, 0.875f};
  in.k = meanflow ? std::vector<float>{0.0f, 0.125f, 0.5f, 1.0f} : std::vector<float>{0.0f, 1.0f, 3.0f, 7.0f};
  in.y = {0, 1 % (cfg.classes + 1), int32_t(cfg.classes - 1), int32_t(cfg.classes)};
  auto oe = forward(model, in, Role::Ema), om = forward(model, in, Role::Param);
  std::vector<float> yf(in.y.begin(), in.y.end());
  std::vector<int32_t> labels = {0, 1 % cfg.classes, int32_t(cfg.classes - 1), 0};
  std::vector<float> lf(labels.begin(), labels.end());
  auto noise = normal(size_t(in.B) * n, 3);
  const std::vector<int64_t> shape = batch_shape(cfg, in.B);
  io::SafetensorsWriter w;
  w.add("x", shape, in.x.data());
  w.add("t", {in.B}, in.t.data());
  w.add("k", {in.B}, in.k.data());
  w.add("y", {in.B}, yf.data());
  w.add("out_ema", shape, oe.data());
  w.add("out_model", shape, om.data());
  w.add("noise", shape, noise.data());
  w.add("labels", {in.B}, lf.data());
  std::vector<std::vector<float>> samples;
  samples.reserve(6);
  for (int N : {1, 2, 4})
    for (double g : {1.0, 1.5}) {
      samples.push_back(generate(model, sc, labels, SamplerConfig{N, g, true}, 0, 0, 256, &noise));
      w.add(cat("sample_", N, "_", g == 1.0 ? "1" : "1.5"), shape, samples.back().data());
    }
  w.write(dir / name / "io.safetensors");
  std::printf("exported %s\n", (dir / name).c_str());
}

static int export_dir(const fs::path& dir) {
  nn::DiTConfig a;  // 1/head_dim (the default), two channels, patch 2
  a.image = 8; a.channels = 2; a.patch = 2; a.hidden = 32; a.depth = 2; a.heads = 2; a.mlp_ratio = 4; a.classes = 3;
  nn::DiTConfig b = a;  // 1/sqrt(head_dim), one channel, patch 4, mlp ratio 2
  b.channels = 1; b.patch = 4; b.hidden = 48; b.heads = 3; b.mlp_ratio = 2; b.classes = 2;
  b.attn_scale = nn::AttnScale::InvSqrtHeadDim;
  nn::MlpNetConfig m;  // the plain network, three classes
  m.dim = 2; m.hidden = 32; m.depth = 2; m.mlp_ratio = 2; m.classes = 3;
  nn::MlpNetConfig f = m;  // what toy2d trains: Fourier features, t scale; one class, any label the null label
  f.dim = 3; f.fourier = 8; f.fourier_scale = 2.5; f.t_scale = 20; f.classes = 1; f.mlp_ratio = 1.5;
  export_case<nn::DiT<Be>>(dir, "a", a);
  export_case<nn::DiT<Be>>(dir, "b", b);
  export_case<nn::MlpNet<Be>>(dir, "mlp", m);
  export_case<nn::MlpNet<Be>>(dir, "mlp_fourier", f);
  nn::MlpNetConfig mf = f;  // a MeanFlow network: d itself through a scaled embedding
  mf.step_scale = 5;
  export_case<nn::MlpNet<Be>>(dir, "mlp_meanflow", mf, true);
  return 0;
}

static int forward_cmd(const fs::path& ckpt, const fs::path& io_file, const fs::path& out_file) {
  Be be;
  Model model(be, nn::DiTConfig::from_json(io::read_config(ckpt)), 0);
  io::load_sampling_weights(ckpt, model.net(), model.arena());  // as sample_images / evaluate_images
  const bool folder = fs::is_directory(ckpt);
  if (folder && fs::exists(ckpt / io::kOptimizerFile)) {
    io::TrainState st = io::load_checkpoint(ckpt, model.net(), model.arena());  // as train_images --resume
    std::printf("resumable checkpoint at step %lld\n", (long long)st.step);
  } else if (folder && fs::exists(ckpt / io::kModelFile)) {
    io::load_sampling_weights(ckpt / io::kModelFile, model.net(), model.arena(), Role::Param);
  }
  io::SafetensorsReader r(io_file);
  Inputs in;
  in.x = r.read<float>("x");
  in.t = r.read<float>("t");
  in.k = r.read<float>("k");
  for (float v : r.read<float>("y")) in.y.push_back(int32_t(v));
  in.B = int(in.t.size());
  auto oe = forward(model, in, Role::Ema);
  io::SafetensorsWriter w;
  w.add("out_ema", r.info("x").shape, oe.data());
  std::vector<float> om;
  if (folder && fs::exists(ckpt / io::kModelFile)) {
    om = forward(model, in, Role::Param);
    w.add("out_model", r.info("x").shape, om.data());
  }
  w.write(out_file);
  return 0;
}

// A tiny DiT checkpoint with random weights everywhere (so that every tensor matters) in DIR/ck and one
// forward pass of its EMA weights in DIR/forward.safetensors: what checkpoint_torch_check.py loads
// into the PyTorch DiT with strict=True and compares.
static int export_dit_cmd(const fs::path& dir) {
  fs::create_directories(dir);
  Be be;
  nn::DiTConfig c;
  c.image = 8, c.channels = 3, c.patch = 2, c.hidden = 32, c.depth = 2, c.heads = 4, c.classes = 5;
  nn::DiT<Be> net(be, c);
  ParamArena<Be> arena(be, net.layout());
  arena.from_host(Role::Param, normal(arena.size(), 1, 0.2));
  arena.from_host(Role::Ema, normal(arena.size(), 2, 0.2));
  io::save_checkpoint(dir / "ck", net, arena, io::TrainState{});

  const int B = 3;
  std::vector<float> x = normal(size_t(B) * 8 * 8 * 3, 3), t = {0.0f, 0.3f, 0.875f}, k = {7, 0, 3};
  std::vector<float> out(x.size()), yf = {0, 4, 5};
  std::vector<int32_t> y = {0, 4, 5};  // 5 is the null label
  nn::DiT<Be>::Context ctx;
  net.forward(ctx, arena.data(Role::Ema), x.data(), t.data(), k.data(), y.data(), B, out.data());
  io::SafetensorsWriter w;
  w.add("x", {B, 8, 8, 3}, x.data());
  w.add("t", {B}, t.data());
  w.add("k", {B}, k.data());
  w.add("y", {B}, yf.data());
  w.add("out", {B, 8, 8, 3}, out.data());
  w.write(dir / "forward.safetensors");
  return 0;
}

int main(int argc, char** argv) {
  try {
    std::string cmd = argc > 1 ? argv[1] : "";
    if (cmd == "export" && argc == 3) return export_dir(argv[2]);
    if (cmd == "forward" && argc == 5) return forward_cmd(argv[2], argv[3], argv[4]);
    if (cmd == "export-dit" && argc == 3) return export_dit_cmd(argv[2]);
    std::fprintf(stderr, "usage: torch_interop_tool export DIR | forward CKPT IO OUT | export-dit DIR\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
