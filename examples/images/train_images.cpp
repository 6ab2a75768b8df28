// Trains a class-conditional DiT shortcut model (or the flow-matching baseline) on MNIST or
// Fashion-MNIST; writes checkpoints, metrics.jsonl and sample grids at 1, 2, 4, 8 and 128 steps.
#include "train_images_run.hpp"

#ifdef SHORTCUT_EXAMPLES_CUDA
namespace examples {
int train_images_cuda(const TrainImagesOptions& o);  // train_images_cuda.cu
}
#endif

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // lines appear in order with the progress bar
  using namespace examples;
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
  app.add_option("--objective", o.objective, "shortcut, or flow for the plain flow-matching baseline")
      ->check(CLI::IsMember({"shortcut", "flow"}))->capture_default_str();
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
  app.add_option("--sample-every", o.sample_every, "sample grid every N steps (0: only at the end)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--per-class", o.per_class, "samples per class in the grids")->check(CLI::Range(1, 64))->capture_default_str();
  app.add_option("--resume", o.resume, "checkpoint folder to resume from (weights, EMA, optimizer, step, RNG)")
      ->check(CLI::ExistingDirectory);
  app.add_option("--minutes", o.minutes, "wall-time budget: stop after the step that passes it (0: none; the "
                 "learning rate is constant after warm-up, so a cut-short run is a complete run)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--device", o.device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
  app.add_flag("--tf32", o.tf32, "with --device cuda: matrix products on the TF32 tensor cores (about 3e-4 relative "
               "error per product instead of fp32's 1e-7)");
  app.add_flag("-q,--quiet", o.quiet, "no progress bar");
  CLI11_PARSE(app, argc, argv);
  try {
    check_device(o.device);
    if (o.tf32 && o.device != "cuda") throw ConfigError("--tf32 needs --device cuda");
#ifdef SHORTCUT_EXAMPLES_CUDA
    if (o.device == "cuda") return train_images_cuda(o);
#endif
    cpu::Backend<float> be;
    return train_images(be, o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
