// Trains a class-conditional DiT shortcut model (or the flow-matching baseline) on MNIST or
// Fashion-MNIST; writes checkpoints, metrics.jsonl and sample grids at 1, 2, 4, 8 and 128 steps.
#include "train_images_run.hpp"

#ifdef SHORTCUT_EXAMPLES_MPI
#include <optional>
#include <shortcut/dist/mpi.hpp>
#endif

#ifdef SHORTCUT_EXAMPLES_CUDA
namespace examples {
int train_images_cuda(const TrainImagesOptions& o, dist::AnyCommunicator& comm);  // train_images_cuda.cu
}
#endif

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // lines appear in order with the progress bar
  using namespace examples;
  // Started by mpirun (and built with MPI): one rank of a data-parallel run; else one process.
  dist::LocalCommunicator local;
  dist::AnyCommunicator comm(local);
#ifdef SHORTCUT_EXAMPLES_MPI
  std::optional<dist::MpiSession> mpi;
  std::optional<dist::MpiCommunicator> world;
  if (dist::launched_by_mpi()) {
    mpi.emplace(argc, argv);
    world.emplace();
    comm = dist::AnyCommunicator(*world);
  }
#endif
  TrainImagesOptions o;
  CLI::App app{"Train a class-conditional DiT shortcut model on MNIST / Fashion-MNIST (IDX files from "
               "scripts/get-data.sh) or on any tensor file (--data-file). Writes <out>/checkpoints/, <out>/metrics.jsonl and <out>/samples/step_N.png "
               "(EMA samples at 1, 2, 4, 8, 128 steps; rows are classes)."};
  app.add_option("--dataset", o.dataset, "dataset name")->check(CLI::IsMember(dataset_names()))->capture_default_str();
  app.add_option("--data", o.data, "folder with the four IDX files (default: data/<dataset>)");
  app.add_option("--data-file", o.data_file, "instead of --dataset: a safetensors or .npy file of images [N, H, W, C] "
                 "(uint8 scaled to [-1, 1], float taken as is, e.g. latents) with labels [N] (tensor 'labels', or "
                 "--labels-file); see docs/data.md");
  app.add_option("--labels-file", o.labels_file, "with --data-file: the labels [N] (integers), a .npy file");
  app.add_option("--classes", o.classes, "with --data-file: the class count (default: largest label + 1)")
      ->check(CLI::Range(1, 1 << 24));
  app.add_option("--init", o.init, "start from these weights (a weights file or checkpoint folder, e.g. from "
                 "shortcut_torch.convert_dit): its network, a fresh optimizer and warm-up; a missing d_embedder starts "
                 "at zero output");
  app.add_option("--preset", o.preset, "DiT preset: tiny, small, medium, DiT-S/4, DiT-S, DiT-B, DiT-L, DiT-XL")
      ->capture_default_str();
  app.add_option("--objective", o.objective,
                 "shortcut; flow for the plain flow-matching baseline; or one of the paper's other baselines "
                 "(DESIGN.md section 7): progressive_distillation, consistency_distillation (both need --teacher), "
                 "consistency_training, live_reflow; or an average-velocity objective (section 8, the network reads d "
                 "itself): meanflow, alpha_flow")
      ->check(CLI::IsMember({"shortcut", "flow", "progressive_distillation", "consistency_distillation",
                             "consistency_training", "live_reflow", "meanflow", "alpha_flow"}))
      ->capture_default_str();
  app.add_option("--omega", o.omega, "meanflow, alpha_flow: guidance inside the target, omega v + kappa u(y) + "
                 "(1 - omega - kappa) u(null) (1: none)")->capture_default_str();
  app.add_option("--kappa", o.kappa, "meanflow, alpha_flow: the conditional velocity's share of that guidance, in [0, 1)")
      ->check(CLI::Range(0.0, 0.999999))->capture_default_str();
  app.add_option("--teacher", o.teacher,
                 "for progressive_distillation and consistency_distillation: a trained flow-matching checkpoint "
                 "folder (or weights file) of the same network; the student starts from it unless --init or "
                 "--resume is given");
  app.add_option("--batch", o.batch, "batch size")->check(CLI::Range(1, 1 << 16))->capture_default_str();
  app.add_option("--steps", o.steps, "total training steps")->check(CLI::Range(int64_t(0), int64_t(1) << 40))->capture_default_str();
  app.add_option("--lr", o.lr, "AdamW learning rate")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--weight-decay", o.weight_decay, "AdamW weight decay")->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--warmup", o.warmup, "linear learning-rate warm-up steps")->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--ema", o.ema, "EMA decay tau")->check(CLI::Range(0.0, 1.0))->capture_default_str();
  app.add_option("--cfg-scale", o.cfg_scale, "guidance scale inside the bootstrap targets (0: unconditional training)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--guidance", o.guidance, "guidance scale of the sample grids (1: none)")->capture_default_str();
  app.add_option("--bootstrap-fraction", o.bootstrap_fraction, "share of each batch used for self-consistency rows")
      ->capture_default_str();
  app.add_option("--seed", o.seed, "random seed (weights, data order, noise)")->capture_default_str();
  app.add_option("-o,--out", o.out, "output folder (default: out/images/<dataset>-<objective>)");
  app.add_option("--checkpoint-every", o.checkpoint_every, "checkpoint every N steps (0: only at the end)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--keep-checkpoints", o.keep_checkpoints,
                 "keep only the newest N step_* checkpoint folders (0: all; 'last' and a resumed-from folder stay)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--log-every", o.log_every, "a line of metrics.jsonl every N steps (0: none)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--sample-every", o.sample_every, "sample grid every N steps (0: only at the end)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--per-class", o.per_class, "samples per class in the grids")->check(CLI::Range(1, 64))->capture_default_str();
  app.add_option("--resume", o.resume, "checkpoint folder to resume from (weights, EMA, optimizer, step, RNG)")
      ->check(CLI::ExistingDirectory);
  app.add_flag("--allow-config-change", o.allow_config_change,
               "with --resume: continue although the training settings (learning rate, weight decay, objective, "
               "batch, EMA, ...) differ from the checkpoint's; without it such a resume is refused (--steps may "
               "always change)");
  app.add_option("--minutes", o.minutes, "wall-time budget: stop after the step that passes it (0: none; the "
                 "learning rate is constant after warm-up, so a cut-short run is a complete run)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--device", o.device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
  app.add_option("--precision", o.precision, "with --device cuda: fp32; tf32 (products on the TF32 tensor cores, "
                 "about 3e-4 relative error per product instead of fp32's 1e-7); bf16 (products and attention on "
                 "the bf16 tensor cores, about 4e-3; weights, optimizer, statistics and losses stay fp32; "
                 "docs/cuda.md)")
      ->check(CLI::IsMember(precision_names()))->capture_default_str();
  app.add_flag("--tf32", o.tf32, "= --precision tf32");
  app.add_flag("-q,--quiet", o.quiet, "no progress bar");
  app.footer("Data parallel: mpirun -np N train_images ... (docs/distributed.md); --batch is the global batch.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (comm.rank() == 0 || e.get_exit_code() != 0) {
      const int rc = app.exit(e);
      if (comm.size() > 1 && rc != 0) comm.abort(cat("error on rank ", comm.rank(), ": bad command line"), rc);
      return rc;
    }
    return 0;
  }
  try {
#ifdef SHORTCUT_EXAMPLES_MPI
    if (world) o.local_rank = world->local_rank();
#endif
    if (o.tf32 && o.precision != "fp32" && o.precision != "tf32")
      throw ConfigError("--tf32 and --precision " + o.precision + " contradict each other");
    check_device(o.device);
    if (o.tf32 && o.device != "cuda") throw ConfigError("--tf32 needs --device cuda");
    check_precision(o.device, o.precision);
#ifdef SHORTCUT_EXAMPLES_CUDA
    if (o.device == "cuda") return train_images_cuda(o, comm);
#endif
    cpu::Backend<float> be;
    return train_images(be, o, comm);
  } catch (const std::exception& e) {
    if (comm.size() == 1) {
      std::fprintf(stderr, "error: %s\n", e.what());
      return 1;
    }
    // one rank's error ends every rank: the others may be waiting in a collective
    comm.abort(cat("error on rank ", comm.rank(), " of ", comm.size(), ": ", e.what()), 1);
  }
}
