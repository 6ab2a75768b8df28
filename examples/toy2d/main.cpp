// The 2-D demo: trains the MLP velocity network on a toy distribution as a shortcut model and, for
// comparison, as plain flow matching, on the CPU; then samples both at 1..128 steps and writes a PNG
// figure and metrics.json (sliced Wasserstein-1 distance to fresh data, and for the checkerboard the
// fraction of samples on a black square). --objectives adds the paper's other baselines (DESIGN.md
// §7) and the average-velocity objectives (§8; `all`: the eight), each on the same budget of training
// steps, a distillation's teacher counted.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <shortcut/data/toy2d.hpp>
#include <shortcut/io/png.hpp>
#include <shortcut/metrics/distribution.hpp>
#include <shortcut/shortcut.hpp>

namespace fs = std::filesystem;
using namespace shortcut;
using namespace shortcut::metrics;
using Be = cpu::Backend<float>;
using Model = ShortcutModel<nn::MlpNet<Be>>;

// The defaults are the recipe measured in docs/data.md ("The 2-D demo's recipe"): Fourier features
// of x and a scaled t for the MLP, two blocks, 8000 steps at lr 2e-3, a short EMA and half of each
// batch on self-consistency rows.
struct Options {
  std::string distribution = "checkerboard";
  std::string out = "out/toy2d";
  int64_t steps = 8000;
  int batch = 256;
  int hidden = 128;
  int depth = 2;
  double mlp_ratio = 2.0;
  int fourier = 32;
  double fourier_scale = 16.0;
  double t_scale = 1000.0;
  // The average-velocity objectives (DESIGN.md §8) differentiate the network in t and d: at t_scale
  // 1000 the sinusoids' derivatives are 1000 times larger and their targets noisy (measured in
  // docs/baselines.md), so t and d are scaled by 10 there. Their adaptive weight 1 / (||Δ||² + c)^p is
  // nearly constant across rows in high dimension but not in 2-D, where it pulls the fit towards the
  // modes (samples shrink into the squares' centres): plain squared error (p = 0) here.
  double avg_t_scale = 10.0;
  double avg_norm_p = 0.0;
  double lr = 2e-3;
  double ema = 0.9;
  double bootstrap_fraction = 0.5;
  int eval_samples = 4000;
  uint64_t seed = 0;
  bool progress = true;
  std::string objectives = "shortcut,flow";
};

struct Trained {
  std::string name;
  std::unique_ptr<Model> model;
  SamplingSchedule sc;  // what the sampler reads
  double seconds = 0;
  int64_t steps = 0, teacher_steps = 0;
};

// The objectives by their DESIGN.md §7 names, in the order of the paper's table, then the
// average-velocity objectives of §8.
static const std::vector<std::string> kObjectives = {"shortcut",
                                                     "flow",
                                                     "progressive_distillation",
                                                     "consistency_distillation",
                                                     "consistency_training",
                                                     "live_reflow",
                                                     "meanflow",
                                                     "alpha_flow"};

// The network reads the step size d itself for the average-velocity objectives (DESIGN.md §8): d is
// then scaled as t is, for the same reason (the sinusoids barely turn over [0, 1]).
static bool reads_step_size(const std::string& objective) { return objective == "meanflow" || objective == "alpha_flow"; }

static nn::MlpNetConfig net_config(const Options& o, const std::string& objective) {
  nn::MlpNetConfig nc;
  nc.dim = 2;
  nc.hidden = o.hidden;
  nc.depth = o.depth;
  nc.mlp_ratio = o.mlp_ratio;
  nc.fourier = o.fourier;
  nc.fourier_scale = o.fourier_scale;
  nc.t_scale = o.t_scale;
  if (reads_step_size(objective)) nc.t_scale = nc.step_scale = o.avg_t_scale;
  nc.classes = 1;
  return nc;
}

// Trains `objective` for `steps` into out/<name>; a student starts from the teacher's EMA weights.
template <class Obj>
static Trained train(Be& be, const Options& o, const std::string& name, Obj objective, int64_t steps,
                     const std::string& teacher = "") {
  const nn::MlpNetConfig nc = net_config(o, name);
  auto model = std::make_unique<Model>(be, nc, o.seed);
  if (!teacher.empty()) {
    const nlohmann::json cfg = model->net().config_json();
    const auto w = io::load_sampling_weights<float>(teacher, model->net().layout(), &cfg,
                                                    io::fixed_tensors(model->net()));
    model->arena().from_host(Role::Param, w);
    model->arena().copy_role(Role::Ema, Role::Param);
  }
  AdamWConfig oc;
  oc.lr = o.lr;
  oc.weight_decay = 0.0;  // tiny network, plenty of data: decay only slows the fit
  oc.warmup_steps = 100;
  oc.cosine_steps = steps;
  oc.min_lr = o.lr * 0.1;
  TrainerConfig tc;
  tc.steps = steps;
  tc.batch = o.batch;
  tc.ema_tau = o.ema;
  tc.seed = o.seed;
  tc.progress = o.progress;
  tc.label = name.size() < 8 ? name + std::string(8 - name.size(), ' ') : name;
  tc.log_every = 50;
  tc.out_dir = (fs::path(o.out) / name).string();
  const SamplingSchedule sampling = objective.sampling();
  Trainer<Model, dist::LocalCommunicator, Obj> trainer(*model, std::move(objective), oc, tc);
  auto t0 = std::chrono::steady_clock::now();
  trainer.run([&](Rng& rng, int B, std::vector<float>& x, std::vector<int32_t>& y) {
    x = data::sample_toy2d(o.distribution, B, rng);
    y.assign(B, 0);
  });
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return {name, std::move(model), sampling, s, steps, 0};
}

// Trains the listed objectives; the distillations share one flow-matching teacher trained for half
// the budget, and train for the other half.
static std::vector<Trained> train_all(Be& be, const Options& o, const std::vector<std::string>& names) {
  const int M = SamplingSchedule{}.denoise_timesteps;
  std::vector<Trained> out;
  std::string teacher;
  double teacher_seconds = 0;
  const int64_t half = o.steps / 2;
  for (const std::string& name : names) {
    const bool distils = name == "progressive_distillation" || name == "consistency_distillation";
    if (distils && teacher.empty()) {
      Trained t = train(be, o, "teacher", FlowMatching<Model>(FlowMatchingConfig{}), half);
      teacher = (fs::path(o.out) / "teacher" / "checkpoints" / "last").string();
      teacher_seconds = t.seconds;
    }
    Trained t;
    if (name == "shortcut") {
      ShortcutConfig sc;
      sc.bootstrap_fraction = o.bootstrap_fraction;
      t = train(be, o, name, SelfConsistencyLoss<Model>(sc), o.steps);
    } else if (name == "flow") {
      t = train(be, o, name, FlowMatching<Model>(FlowMatchingConfig{}), o.steps);
    } else if (name == "progressive_distillation") {
      ProgressiveDistillationConfig c;
      c.denoise_timesteps = M;
      c.teacher = teacher;
      c.cfg_scale = 0;  // one class: nothing to guide
      t = train(be, o, name, ProgressiveDistillation<Model>(c), o.steps - half, teacher);
    } else if (name == "consistency_distillation") {
      ConsistencyDistillationConfig c;
      c.denoise_timesteps = M;
      c.teacher = teacher;
      t = train(be, o, name, ConsistencyDistillation<Model>(c), o.steps - half, teacher);
    } else if (name == "consistency_training") {
      ConsistencyTrainingConfig c;
      c.denoise_timesteps = M;
      t = train(be, o, name, ConsistencyTraining<Model>(c), o.steps);
    } else if (reads_step_size(name)) {
      AverageVelocityConfig a;
      a.denoise_timesteps = M;
      a.norm_p = o.avg_norm_p;
      if (name == "meanflow") {
        t = train(be, o, name, MeanFlow<Model>({a}), o.steps);
      } else {
        AlphaFlowConfig c;
        static_cast<AverageVelocityConfig&>(c) = a;
        t = train(be, o, name, AlphaFlow<Model>(c), o.steps);
      }
    } else {
      LiveReflowConfig c;
      c.denoise_timesteps = M;
      c.cfg_scale = 0;
      t = train(be, o, name, LiveReflow<Model>(c), o.steps);
    }
    if (distils) {
      t.teacher_steps = half;
      t.seconds += teacher_seconds;  // the teacher's training is part of the budget
    }
    out.push_back(std::move(t));
  }
  return out;
}

// A panel label that fits: the objectives' initials.
static std::string short_name(const std::string& name) {
  if (name == "progressive_distillation") return "PD";
  if (name == "consistency_distillation") return "CD";
  if (name == "consistency_training") return "CT";
  if (name == "live_reflow") return "reflow";
  if (name == "alpha_flow") return "alpha";
  return name;
}

// "shortcut,flow" or "all" -> the names, checked.
static std::vector<std::string> parse_objectives(const std::string& list) {
  if (list == "all") return kObjectives;
  std::vector<std::string> names;
  std::stringstream ss(list);
  for (std::string item; std::getline(ss, item, ',');) {
    if (std::find(kObjectives.begin(), kObjectives.end(), item) == kObjectives.end())
      throw ConfigError(cat("unknown objective '", item, "' in --objectives; choose from all, ", [] {
                              std::string s;
                              for (auto& n : kObjectives) s += (s.empty() ? "" : ", ") + n;
                              return s;
                            }()));
    if (std::find(names.begin(), names.end(), item) != names.end())
      throw ConfigError(cat("objective '", item, "' is listed twice in --objectives"));
    names.push_back(item);
  }
  if (names.empty()) throw ConfigError("--objectives lists no objective");
  return names;
}

static std::vector<float> sample(Be& be, Model& m, const SamplingSchedule& sc, int n, int steps, uint64_t seed) {
  typename Be::template Buffer<float> x(size_t(n) * 2);
  be.normal(x.data(), x.size(), seed, 0);
  const auto y = upload(be, std::vector<int32_t>(size_t(n), m.null_label()));
  OdeSampler<Model> s(sc);
  s.sample(m, x, y, {steps, 1.0, true});
  return download(be, x);
}

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // lines appear in order with the progress bar
  Options o;
  CLI::App app{"shortcut 2-D demo: train a shortcut model and a flow-matching baseline on a toy distribution, "
               "then compare them at 1..128 sampling steps (PNG figure + metrics.json)"};
  app.add_option("-d,--distribution", o.distribution, "toy distribution")
      ->check(CLI::IsMember(data::toy2d_names()))
      ->capture_default_str();
  app.add_option("-o,--out", o.out, "output folder")->capture_default_str();
  app.add_option("--steps", o.steps, "training steps per model")->check(CLI::Range(int64_t(1), int64_t(10000000)))->capture_default_str();
  app.add_option("--batch", o.batch, "batch size (batch x bootstrap fraction >= 7, one bootstrap row for each step size)")
      ->check(CLI::Range(1, 1 << 20))->capture_default_str();
  app.add_option("--hidden", o.hidden, "network width")->check(CLI::Range(4, 4096))->capture_default_str();
  app.add_option("--depth", o.depth, "number of residual MLP blocks")->check(CLI::Range(1, 64))->capture_default_str();
  app.add_option("--mlp-ratio", o.mlp_ratio, "MLP hidden width / network width")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--fourier", o.fourier, "sinusoidal features per coordinate of x (0: none; else even, >= 4)")
      ->check(CLI::Range(0, 4096))->capture_default_str();
  app.add_option("--fourier-scale", o.fourier_scale, "x is scaled by this before its sinusoidal features")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--t-scale", o.t_scale, "t is scaled by this before its sinusoidal embedding")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--avg-t-scale", o.avg_t_scale, "meanflow, alpha_flow: t and d are scaled by this before their "
                 "sinusoidal embeddings (the targets differentiate through them)")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--avg-norm-p", o.avg_norm_p, "meanflow, alpha_flow: the adaptive weight's power p in "
                 "1 / (||error||^2 + c)^p (0: plain squared error)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--lr", o.lr, "peak learning rate (warm-up 100 steps, cosine decay to lr/10)")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--ema", o.ema, "EMA decay tau")->check(CLI::Range(0.0, 1.0))->capture_default_str();
  app.add_option("--bootstrap-fraction", o.bootstrap_fraction, "share of each shortcut batch on self-consistency rows")
      ->check(CLI::Range(0.01, 0.99))->capture_default_str();
  app.add_option("--eval-samples", o.eval_samples, "samples per model and step count for the metrics")
      ->check(CLI::Range(100, 1000000))->capture_default_str();
  app.add_option("--seed", o.seed, "random seed")->capture_default_str();
  app.add_option("--objectives", o.objectives,
                 "comma-separated objectives to train and compare, or 'all': shortcut, flow, progressive_distillation, "
                 "consistency_distillation, consistency_training, live_reflow, meanflow, alpha_flow (the distillations "
                 "share a flow-matching teacher trained for half of --steps and train for the other half)")
      ->capture_default_str();
  bool quiet = false;
  app.add_flag("-q,--quiet", quiet, "no progress bars");
  CLI11_PARSE(app, argc, argv);
  o.progress = !quiet;

  try {
    fs::create_directories(o.out);
    Be be;
    std::printf("training on %s: %lld steps per model, batch %d, MLP width %d depth %d, %d Fourier features\n",
                o.distribution.c_str(), (long long)o.steps, o.batch, o.hidden, o.depth, o.fourier);
    const std::vector<std::string> names = parse_objectives(o.objectives);
    const bool classic = names == std::vector<std::string>{"shortcut", "flow"};
    std::vector<Trained> runs = train_all(be, o, names);

    SlicedWassersteinOptions swo;
    Rng data_rng(o.seed ^ 0xda7a, 0);
    const int n = o.eval_samples;
    auto ref = data::sample_toy2d(o.distribution, n, data_rng);
    auto ref2 = data::sample_toy2d(o.distribution, n, data_rng);
    const bool board = o.distribution == "checkerboard";
    nlohmann::json results = nlohmann::json::array();
    const io::ScatterPanel data_panel("data", ref.data(), size_t(n), {20, 20, 20});
    std::vector<io::ScatterPanel> panels;
    if (classic) panels.push_back(data_panel);
    const uint64_t noise_seed = o.seed + 12345;
    std::printf("\n%-25s %6s %10s%s\n", "model", "steps", "distance", board ? "  on_board" : "");
    // the classic figure shows flow matching first (its 1-step collapse beside the data)
    std::vector<Trained*> order;
    for (auto& t : runs) order.push_back(&t);
    if (classic) std::swap(order[0], order[1]);
    for (Trained* t : order) {
      const std::string& name = t->name;
      if (!classic) panels.push_back(data_panel);
      for (int steps = 1; steps <= 128; steps *= 2) {
        auto x = sample(be, *t->model, t->sc, n, steps, noise_seed);
        nlohmann::json r = {{"model", name}, {"steps", steps}, {"distance", sliced_wasserstein(x, ref, 2, swo)}};
        if (board) r["on_board"] = on_board_fraction(x);
        std::printf("%-25s %6d %10.4f", name.c_str(), steps, r["distance"].get<double>());
        if (board) std::printf("  %8.3f", r["on_board"].get<double>());
        std::printf("\n");
        results.push_back(r);
        const bool panel = classic ? (name == "flow" ? (steps == 1 || steps == 128) : (steps <= 4 || steps == 128))
                                   : (steps <= 8 || steps == 128);
        if (panel) panels.push_back(io::ScatterPanel(cat(classic ? name : short_name(name), " ", steps), x.data(), size_t(n)));
      }
    }
    double floor = sliced_wasserstein(ref2, ref, 2, swo);
    std::printf("data vs fresh data: %.4f (the distance's noise floor at %d samples)\n", floor, n);
    double total = 0;
    nlohmann::json training = nlohmann::json::object();
    for (auto& t : runs) {
      total += t.seconds;
      training[t.name] = {{"seconds", t.seconds}, {"steps", t.steps}, {"teacher_steps", t.teacher_steps}};
    }
    nlohmann::json out = {{"distribution", o.distribution},
                          {"metric", swo.name()},
                          {"metric_projections", swo.projections},
                          {"eval_samples", n},
                          {"data_floor", floor},
                          {"seconds", total},
                          {"train_steps", o.steps},
                          {"batch", o.batch},
                          {"objectives", names},
                          {"training", training},
                          {"recipe", {{"hidden", o.hidden}, {"depth", o.depth}, {"mlp_ratio", o.mlp_ratio},
                                      {"fourier", o.fourier}, {"fourier_scale", o.fourier_scale},
                                      {"t_scale", o.t_scale}, {"lr", o.lr}, {"ema", o.ema},
                                      {"bootstrap_fraction", o.bootstrap_fraction}, {"seed", o.seed}}},
                          {"results", results}};
    for (auto& t : runs) out["seconds_" + t.name] = t.seconds;
    std::ofstream(fs::path(o.out) / "metrics.json") << out.dump(2) << "\n";
    fs::path png = fs::path(o.out) / (o.distribution + ".png");
    io::ScatterOptions so;
    so.size = 220;
    so.xlim = 4.5;
    if (!classic) so.columns = 6;
    const std::string what =
        classic ? std::string("panels: data; flow matching at 1 and 128 steps; shortcut at 1, 2, 4, 128 steps")
                : std::string("one row per objective (") + o.objectives + "): data, then 1, 2, 4, 8 and 128 steps";
    io::scatter_png(png, panels, so,
                    {{"Title", "shortcut 2-D demo: " + o.distribution},
                     {"Comment", cat(what, "; ", o.steps, " training steps per objective (a teacher's counted), batch ",
                                     o.batch, ", seed ", o.seed)}});
    std::printf("wrote %s and %s (training took %.1f s)\n", png.c_str(), (fs::path(o.out) / "metrics.json").c_str(),
                total);
  } catch (const shortcut::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
