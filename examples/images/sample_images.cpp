// Loads a checkpoint (folder or weights file) and generates images: a PNG grid (rows = classes or the
// labels given), optionally raw float32 files, or noise-interpolation strips per class (the seed's
// experiment 3: x0(n) = n xa + sqrt(1 - n^2) xb). PNGs carry the generation parameters in tEXt chunks.
#include <cstdio>
#include <fstream>
#include <sstream>

#include "image_generator.hpp"

using namespace examples;

struct SampleOptions {
  std::string checkpoint, out = "samples.png", raw, labels, objective, device = "cpu", noise, precision = "fp32";
  int steps = 128, per_class = 8, interpolate = 0, chunk = 256;
  double guidance = 1.0;
  uint64_t seed = 0;
  bool quiet = false;
};

static std::vector<int32_t> parse_labels(const std::string& s, int classes) {
  std::vector<int32_t> y;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t used = 0;
    int v = -1;
    try {
      v = std::stoi(item, &used);
    } catch (...) {
      used = 0;
    }
    if (used != item.size() || v < 0 || v > classes)
      throw ConfigError(cat("--labels: '", item, "' is not a label in [0, ", classes, "] (", classes, " = unconditional)"));
    y.push_back(v);
  }
  if (y.empty()) throw ConfigError("--labels is empty");
  return y;
}

// Noise [N, H, W, C] (float) from a .npy file or a safetensors file (tensor 'noise' or its only tensor).
static std::vector<float> read_noise(const std::string& path, int H, int C, int64_t& count) {
  std::vector<int64_t> shape;
  std::vector<float> v;
  std::string where = "--noise " + path;
  if (data::detail::is_npy_file(path)) {
    io::NpyArray a = io::read_npy(path);
    if (!a.is_float()) throw FileError(cat(where, ": noise must be floating point, got ", a.descr));
    shape = a.shape;
    v = a.values<float>();
  } else {
    io::SafetensorsReader r(path);
    std::string name = r.contains("noise") ? "noise" : r.tensors().size() == 1 ? r.tensors()[0].name : "";
    if (name.empty()) throw FileError(where + ": no tensor 'noise' (and not exactly one tensor)");
    shape = r.info(name).shape;
    v = r.read<float>(name, true);
  }
  if (shape.size() != 4 || shape[1] != H || shape[2] != H || shape[3] != C)
    throw ShapeError(cat(where, ": noise must be [N, ", H, ", ", H, ", ", C, "] (NHWC), got ", shape_str(shape)));
  count = shape[0];
  return v;
}

static int run(const SampleOptions& o) {
  std::unique_ptr<ImageGenerator> gen;
  try {
    gen = open_image_generator(o.device, o.checkpoint, generator_options(o.checkpoint, o.objective), o.precision);
  } catch (const FileError& e) {
    if (std::string(e.what()).find("has no 'training' metadata") == std::string::npos) throw;
    throw FileError(std::string(e.what()) + " (here: --objective shortcut or --objective flow)");
  }
  const nn::DiTConfig& dc = gen->config();
  const SamplingSchedule& sc = gen->sampling();
  const int H = dc.image, C = dc.channels;
  const int64_t n = int64_t(H) * H * C;
  std::vector<int32_t> labels;
  std::vector<float> noise;
  int rows, cols;
  if (!o.noise.empty()) {
    if (o.interpolate > 0) throw ConfigError("--noise and --interpolate exclude each other");
    int64_t count = 0;
    noise = read_noise(o.noise, H, C, count);
    if (!o.labels.empty()) {
      labels = parse_labels(o.labels, dc.classes);
      if (int64_t(labels.size()) != count)
        throw ConfigError(cat("--labels gives ", labels.size(), " labels, --noise holds ", count, " images"));
    } else {
      for (int64_t i = 0; i < count; ++i) labels.push_back(int32_t(i % dc.classes));
    }
    cols = std::min<int>(int(labels.size()), 16);
    rows = int((labels.size() + cols - 1) / cols);
  } else if (o.interpolate > 0) {
    // one strip per class: K interpolation weights between two fixed noises xa, xb
    const int K = o.interpolate;
    rows = dc.classes;
    cols = K;
    auto xa = sample_noise<float>(n, 0, 1, o.seed, 1), xb = sample_noise<float>(n, 0, 1, o.seed, 2);
    for (int c = 0; c < rows; ++c)
      for (int j = 0; j < K; ++j) {
        double a = K == 1 ? 1.0 : double(j) / (K - 1);
        for (int64_t i = 0; i < n; ++i) noise.push_back(float(a * xa[i] + std::sqrt(1 - a * a) * xb[i]));
        labels.push_back(c);
      }
  } else if (!o.labels.empty()) {
    labels = parse_labels(o.labels, dc.classes);
    cols = std::min<int>(int(labels.size()), 16);
    rows = int((labels.size() + cols - 1) / cols);
  } else {
    labels = class_rows(dc.classes, o.per_class);
    rows = dc.classes;
    cols = o.per_class;
  }
  ProgressBar bar("sampling", int64_t(labels.size()), 0, !o.quiet);
  auto imgs = gen->generate(labels, o.steps, o.guidance, o.seed, o.chunk, noise.empty() ? nullptr : &noise, &bar);
  bar.finish();
  std::vector<float> grid(imgs.begin(), imgs.end());
  grid.resize(size_t(rows) * cols * n, -1.0f);  // pad a partial last row with black
  io::GridOptions g;
  g.cols = cols;
  int shown = C;
  auto display = displayable(grid.data(), size_t(rows) * cols, H, H, C, shown);
  io::Image img = io::image_grid(display.data(), rows * cols, H, H, shown, g);
  std::string params = cat("steps=", o.steps, " guidance=", o.guidance, " seed=", o.seed, " objective=",
                           sc.reads_d ? "shortcut" : "flow",
                           o.interpolate ? cat(" interpolate=", o.interpolate) : std::string(),
                           " checkpoint=", o.checkpoint);
  io::write_png(o.out, img, {{"Software", "shortcut sample_images"}, {"Parameters", params}, {"Config", dc.to_json().dump()}});
  std::printf("wrote %s (%zu images, %s)\n", o.out.c_str(), labels.size(), params.c_str());
  if (!o.raw.empty()) {
    std::ofstream f(o.raw, std::ios::binary);
    f.write(reinterpret_cast<const char*>(imgs.data()), std::streamsize(imgs.size() * sizeof(float)));
    if (!f) throw FileError("cannot write " + o.raw);
    nlohmann::json meta = {{"dtype", "float32"}, {"shape", {labels.size(), H, H, C}}, {"layout", "NHWC"},
                           {"range", {-1, 1}}, {"labels", labels}, {"parameters", params}};
    std::ofstream(o.raw + ".json") << meta.dump(2) << "\n";
    std::printf("wrote %s and %s.json\n", o.raw.c_str(), o.raw.c_str());
  }
  return 0;
}

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // lines appear in order with the progress bar
  SampleOptions o;
  CLI::App app{"Generate images from a shortcut (or flow-matching) DiT checkpoint into a PNG grid"};
  app.add_option("checkpoint", o.checkpoint, "checkpoint folder (its EMA weights) or a .safetensors weights file")
      ->required()->check(CLI::ExistingPath);
  app.add_option("-o,--out", o.out, "PNG file to write")->capture_default_str();
  app.add_option("--steps", o.steps, "sampling steps: 1, 2, 4, ..., 128")->capture_default_str();
  app.add_option("--guidance", o.guidance, "classifier-free guidance scale (1: none)")->capture_default_str();
  app.add_option("--labels", o.labels, "comma-separated labels to generate (default: every class, --per-class each)");
  app.add_option("--per-class", o.per_class, "images per class when no --labels")->check(CLI::Range(1, 1024))->capture_default_str();
  app.add_option("--interpolate", o.interpolate, "K > 0: one strip per class of K noise interpolations n in [0, 1]")
      ->check(CLI::Range(0, 256))->capture_default_str();
  app.add_option("--seed", o.seed, "noise seed")->capture_default_str();
  app.add_option("--noise", o.noise, "start from this noise instead: a .npy or safetensors file of [N, H, W, C] floats "
                 "(labels: --labels, or i mod classes)")->check(CLI::ExistingFile);
  app.add_option("--raw", o.raw, "also write the samples as raw float32 NHWC in [-1, 1] (+ a .json sidecar)");
  app.add_option("--objective", o.objective, "override how the model was trained: shortcut or flow (default: the "
                 "checkpoint's 'training' metadata, which a file without it needs this for; M then 128)")
      ->check(CLI::IsMember({"shortcut", "flow"}));
  app.add_option("--chunk", o.chunk, "images per network batch")->check(CLI::Range(1, 1 << 16))->capture_default_str();
  app.add_option("--device", o.device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
  app.add_option("--precision", o.precision, "with --device cuda: fp32, tf32 or bf16 (products and attention on the "
                 "bf16 tensor cores, the rest fp32; docs/cuda.md)")
      ->check(CLI::IsMember(precision_names()))->capture_default_str();
  app.add_flag("-q,--quiet", o.quiet, "no progress bar");
  CLI11_PARSE(app, argc, argv);
  try {
    return run(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
