// The image training run, templated on the backend so that the CPU build and the CUDA build
// (train_images_cuda.cu) share every line of it.
#pragma once
#include <chrono>
#include <cstdio>

#include <shortcut/dist/communicator.hpp>

#include "image_common.hpp"

namespace examples {

struct TrainImagesOptions {
  std::string dataset = "fashion-mnist";
  std::string data;  // default data/<dataset>
  std::string preset = "tiny";
  std::string objective = "shortcut";  // or flow, progressive_distillation, consistency_distillation, ...
  std::string teacher;  // the distillations' flow-matching teacher (checkpoint folder or weights file)
  std::string out;   // default out/images/<dataset>-<objective>
  std::string resume;
  bool allow_config_change = false;  // with resume: other training settings than the checkpoint's
  std::string init;         // weights file or checkpoint folder to start from (fine-tuning)
  std::string data_file;    // safetensors or .npy images [N, H, W, C] instead of --dataset
  std::string labels_file;  // .npy labels [N] for data_file
  int classes = 0;          // with data_file: the class count (0: largest label + 1)
  std::string device = "cpu";
  int batch = 64;
  int64_t steps = 6000;
  double lr = 3e-4;
  double weight_decay = 0.1;
  int64_t warmup = 200;
  double ema = 0.999;
  double cfg_scale = 1.5;
  double guidance = 1.0;
  double bootstrap_fraction = 0.25;
  double omega = 1.0;  // meanflow, alpha_flow: guidance inside the target (omega = 1, kappa = 0: none)
  double kappa = 0.0;
  int64_t checkpoint_every = 1000;
  int keep_checkpoints = 0;
  int64_t log_every = 50;
  int64_t sample_every = 1000;
  int per_class = 4;
  std::string precision = "fp32";  // CUDA: fp32, tf32 or bf16 (shortcut/cuda/precision.hpp)
  bool tf32 = false;                // --tf32: = --precision tf32
  double minutes = 0;  // wall-time budget: stop after the step that passes it (0: none)
  uint64_t seed = 0;
  bool quiet = false;
  int local_rank = 0;  // under MPI: this rank's index on its machine (the GPU it drives)
};

// The model config stored in an --init weights file or checkpoint folder (null when it has none).
inline nlohmann::json init_config(const std::string& path) {
  fs::path f = path;
  if (fs::is_directory(f)) f = fs::exists(f / io::kModelFile) ? f / io::kModelFile : f / io::kEmaFile;
  if (!fs::exists(f)) throw FileError("--init: " + f.string() + " does not exist");
  io::SafetensorsReader r(f);
  return io::detail::file_config(r);
}

// The training loop of train_images for one objective: progress, sample grids, checkpoints.
template <class Model, class Obj>
int train_objective(Model& model, Obj objective, const TrainImagesOptions& o, dist::AnyCommunicator& comm,
                    const data::ImageDataset& train, const nn::DiTConfig& dc, const std::string& name,
                    const fs::path& out) {
  const bool lead = comm.rank() == 0, from_file = !o.data_file.empty();
  AdamWConfig oc;
  oc.lr = o.lr;
  oc.weight_decay = o.weight_decay;
  oc.warmup_steps = o.warmup;
  TrainerConfig tc;
  tc.steps = o.steps;
  tc.batch = o.batch;
  tc.ema_tau = o.ema;
  tc.seed = o.seed;
  tc.out_dir = out.string();
  tc.checkpoint_every = o.checkpoint_every;
  tc.keep_checkpoints = o.keep_checkpoints;
  tc.log_every = o.log_every;
  tc.progress = !o.quiet;
  tc.label = o.objective;
  tc.max_seconds = o.minutes * 60;
  Trainer<Model, dist::AnyCommunicator, Obj> trainer(model, std::move(objective), oc, tc, comm);
  const SamplingSchedule sc = trainer.loss().sampling();  // how the grids are sampled
  if (!o.resume.empty()) {
    try {
      trainer.resume(o.resume, ResumeOptions{.allow_config_change = o.allow_config_change});
    } catch (const ConfigError& e) {  // the settings differ from the checkpoint's: say the flag, not the API
      throw ConfigError(cat(e.what(), "; here: --allow-config-change"));
    }
    if (lead) std::printf("resumed from %s at step %lld\n", o.resume.c_str(), (long long)trainer.step());
  }
  if (lead && comm.size() > 1)
    std::printf("data parallel: %d ranks, %d rows each of the global batch of %d\n", comm.size(),
                trainer.slice().rows(), o.batch);
  if (lead) std::printf("%s on %s (%d images %dx%dx%d, %d classes), DiT preset %s: D %d, depth %d, heads %d, patch %d, "
              "%.2fM parameters; batch %d, %lld steps, device %s\n",
              o.objective.c_str(), name.c_str(), train.n, train.h, train.w, train.c, train.classes,
              o.preset.c_str(), dc.hidden, dc.depth, dc.heads, dc.patch, model.net().layout().count() / 1e6, o.batch,
              (long long)o.steps, o.device.c_str());
  if (lead) fs::create_directories(out / "samples");
  data::ImageBatcher batcher(train);
  const int grid_classes = std::min(train.classes, 10);  // grid rows: the first ten classes at most
  const auto labels = class_rows(grid_classes, o.per_class);
  const auto names = class_names(from_file ? "" : o.dataset, grid_classes);
  auto write_grid = [&](int64_t step) {
    std::vector<Block> blocks;
    for (int N : grid_steps()) {
      SamplerConfig s{N, o.guidance, true};
      // the same noise at every step count and every checkpoint, so grids compare directly
      auto imgs = generate(model, sc, labels, s, o.seed + 777, 0);
      blocks.push_back({cat(N, N == 1 ? " STEP" : " STEPS"), std::vector<float>(imgs.begin(), imgs.end())});
    }
    io::Image img = compose_blocks(blocks, grid_classes, o.per_class, train.h, train.w, train.c, names);
    fs::path p = out / "samples" / cat("step_", step, ".png");
    io::write_png(p, img,
                  {{"Title", cat(o.objective, " model on ", name, ", EMA samples at 1, 2, 4, 8, 128 steps")},
                   {"Comment", cat("training step ", step, ", guidance ", o.guidance, ", preset ", o.preset,
                                   ", seed ", o.seed, "; rows are classes")}});
    if (!o.quiet) std::fprintf(stderr, "\nwrote %s\n", p.c_str());
  };
  using Run = decltype(trainer);
  const auto t0 = std::chrono::steady_clock::now();
  trainer.run(
      typename Run::RowsFn([&](Rng& rng, const BatchSlice& s, std::vector<float>& x, std::vector<int32_t>& y) {
        x.resize(size_t(s.rows()) * train.image_size());
        y.resize(size_t(s.rows()));
        batcher.rows_into(s, rng, x.data(), y.data());  // this rank's rows only
      }),
      [&](int64_t step) {
        if (lead && o.sample_every > 0 && (step % o.sample_every == 0 || step == o.steps)) write_grid(step);
      });
  if (!lead) return 0;
  // a run cut short by --minutes still ends with a grid of the model it leaves
  const int64_t last = trainer.step();
  if (o.sample_every > 0 && last < o.steps && last % o.sample_every != 0) write_grid(last);
  if (comm.size() > 1)
    std::printf("all-reduces took %.2f s of the %.2f s of training on rank 0\n", trainer.allreduce_seconds(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  std::printf("done: %lld steps; checkpoints in %s, sample grids in %s\n", (long long)trainer.step(),
              (out / "checkpoints").c_str(), (out / "samples").c_str());
  return 0;
}


// comm: the ranks of a data-parallel run (one process: a LocalCommunicator); --batch is the global
// batch, each rank computes batch / ranks rows; rank 0 alone prints, writes grids and checkpoints.
template <class Be>
int train_images(Be& be, const TrainImagesOptions& o, dist::AnyCommunicator& comm) {
  using Model = ShortcutModel<nn::DiT<Be>>;
  const bool lead = comm.rank() == 0;
  (void)BatchSlice::of_rank(o.batch, 0, comm.rank(), comm.size());  // an uneven split fails before the data loads
  const bool from_file = !o.data_file.empty();
  const std::string name = from_file ? fs::path(o.data_file).stem().string() : o.dataset;
  const fs::path out = o.out.empty() ? fs::path("out/images") / (name + "-" + o.objective) : fs::path(o.out);
  if (!o.init.empty() && !o.resume.empty())
    throw ConfigError("--init and --resume exclude each other (--resume continues a run, --init starts a new one)");
  if (!from_file && (!o.labels_file.empty() || o.classes != 0))
    throw ConfigError("--labels-file and --classes go with --data-file");
  (void)nn::DiTConfig::preset(o.preset);  // an unknown preset fails before the data loads
  data::ImageDataset train = from_file ? data::load_tensor_dataset(o.data_file, o.labels_file, o.classes)
                                       : load_split(o.data.empty() ? "data/" + o.dataset : o.data, "train");
  if (train.h != train.w)
    throw ShapeError(cat("images must be square (the DiT's image size is one number), got ", train.h, "x", train.w));
  nn::DiTConfig dc;
  const nlohmann::json init_cfg = o.init.empty() ? nlohmann::json() : init_config(o.init);
  if (!init_cfg.is_null()) {
    // the network the weights were made for; the data must fit it
    dc = nn::DiTConfig::from_json(init_cfg);
    if (dc.image != train.h || dc.channels != train.c)
      throw ShapeError(cat("--init ", o.init, " holds a DiT for ", dc.image, "x", dc.image, "x", dc.channels,
                           " images; the data has ", train.h, "x", train.w, "x", train.c));
    if (train.classes > dc.classes)
      throw ShapeError(cat("--init ", o.init, " holds a DiT for ", dc.classes, " classes; the data has labels up to ",
                           train.classes - 1));
    train.classes = dc.classes;
  } else {
    dc = nn::DiTConfig::preset(o.preset, train.h, train.c, train.classes);
  }
  Model model(be, dc, o.seed);
  if (!o.init.empty()) {
    io::InitReport r = io::load_initial_weights(o.init, model.net(), model.arena());
    if (lead) std::printf("initial weights: %s (EMA: %s)%s\n", r.weights_file.c_str(), r.ema_file.c_str(),
                init_cfg.is_null() ? "; the file has no config: the preset's network" : "; its network, --preset ignored");
    if (lead && !r.zero_initialised.empty())
      std::printf("the file has no d_embedder: %zu tensors zero-initialised (output layer zero, so the model starts "
                  "as the file's at every step size)\n", r.zero_initialised.size());
  }

  if (!o.teacher.empty() && !fs::exists(o.teacher)) throw FileError("--teacher " + o.teacher + " does not exist");
  if (!o.teacher.empty() && o.init.empty() && o.resume.empty()) {
    // a distillation's student starts from its teacher, as in the paper
    io::load_initial_weights(o.teacher, model.net(), model.arena());
    if (lead) std::printf("the student starts from the teacher's weights (%s)\n", o.teacher.c_str());
  }
  const int M = SamplingSchedule{}.denoise_timesteps;
  if (o.objective == "shortcut") {
    ShortcutConfig sc;
    sc.cfg_scale = o.cfg_scale;
    sc.bootstrap_fraction = o.bootstrap_fraction;
    return train_objective(model, SelfConsistencyLoss<Model>(sc), o, comm, train, dc, name, out);
  }
  if (o.objective == "flow") {
    FlowMatchingConfig c;
    c.cfg_scale = o.cfg_scale;
    return train_objective(model, FlowMatching<Model>(c), o, comm, train, dc, name, out);
  }
  if (o.objective == "progressive_distillation") {
    ProgressiveDistillationConfig c;
    c.denoise_timesteps = M;
    c.cfg_scale = o.cfg_scale;
    c.teacher = o.teacher;
    return train_objective(model, ProgressiveDistillation<Model>(c), o, comm, train, dc, name, out);
  }
  if (o.objective == "consistency_distillation") {
    ConsistencyDistillationConfig c;
    c.denoise_timesteps = M;
    c.teacher = o.teacher;
    return train_objective(model, ConsistencyDistillation<Model>(c), o, comm, train, dc, name, out);
  }
  if (o.objective == "consistency_training") {
    ConsistencyTrainingConfig c;
    c.denoise_timesteps = M;
    return train_objective(model, ConsistencyTraining<Model>(c), o, comm, train, dc, name, out);
  }
  if (o.objective == "meanflow" || o.objective == "alpha_flow") {
    AverageVelocityConfig a;
    a.denoise_timesteps = M;
    a.omega = o.omega;
    a.kappa = o.kappa;
    if (o.objective == "meanflow") return train_objective(model, MeanFlow<Model>({a}), o, comm, train, dc, name, out);
    AlphaFlowConfig c;
    static_cast<AverageVelocityConfig&>(c) = a;
    return train_objective(model, AlphaFlow<Model>(c), o, comm, train, dc, name, out);
  }
  LiveReflowConfig c;
  c.denoise_timesteps = M;
  c.cfg_scale = o.cfg_scale;
  return train_objective(model, LiveReflow<Model>(c), o, comm, train, dc, name, out);
}

}  // namespace examples
