// The sample-quality metric: for each model and step count, the Fréchet distance between generated
// samples and the test split in the feature space of the small classifier (train_classifier), and the
// classifier's accuracy on class-conditional samples. Writes quality.json. Not the Inception FID: see
// docs/images.md.
#include <cstdio>
#include <fstream>
#include <sstream>

#include "image_generator.hpp"

using namespace examples;
using Be = cpu::Backend<float>;
using Clf = nn::Classifier<Be>;

struct Features {
  std::vector<float> f;
  int correct = 0;
};

// Classifier features [N, feature_dim] of host images, and how many argmax predictions hit `labels`.
static Features features(const Clf& clf, const float* P, const float* images, const int32_t* labels, int N,
                         int64_t image_size) {
  Features out;
  Clf::Context ctx;
  const int d = clf.feature_dim(), K = clf.config().classes;
  for (int first = 0; first < N; first += 500) {
    const int c = std::min(500, N - first);
    const float* logits = clf.forward(ctx, P, images + size_t(first) * image_size, c);
    const float* f = clf.features(ctx);
    out.f.insert(out.f.end(), f, f + size_t(c) * d);
    int hits = 0;
    nn::softmax_cross_entropy(logits, labels + first, c, K, (float*)nullptr, &hits);
    out.correct += hits;
  }
  return out;
}

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // lines appear in order with the progress bar
  std::string dataset = "fashion-mnist", data_dir, classifier, out = "quality.json", steps_s = "1,2,4,8,128",
              device = "cpu", precision = "fp32";
  std::vector<std::string> models;
  std::string figure;
  int samples = 1000, chunk = 250, figure_columns = 6;
  double guidance = 1.0;
  uint64_t seed = 0;
  bool quiet = false;
  CLI::App app{"Sample-quality metric: Fréchet distance in a small classifier's feature space and class accuracy "
               "of conditional samples, for each model and step count; writes quality.json"};
  app.add_option("--dataset", dataset, "dataset name")->check(CLI::IsMember(dataset_names()))->capture_default_str();
  app.add_option("--data", data_dir, "folder with the four IDX files (default: data/<dataset>)");
  app.add_option("--classifier", classifier, "classifier weights (default: out/classifier/<dataset>.safetensors)");
  app.add_option("--model", models, "NAME=CHECKPOINT, repeatable (e.g. shortcut=out/.../checkpoints/last)")->required();
  app.add_option("--samples", samples, "generated samples per model and step count")->check(CLI::Range(10, 1000000))->capture_default_str();
  app.add_option("--steps", steps_s, "comma-separated step counts")->capture_default_str();
  app.add_option("--guidance", guidance, "classifier-free guidance scale (1: none)")->capture_default_str();
  app.add_option("--seed", seed, "noise seed")->capture_default_str();
  app.add_option("--chunk", chunk, "images per network batch")->check(CLI::Range(1, 1 << 16))->capture_default_str();
  app.add_option("-o,--out", out, "JSON file to write")->capture_default_str();
  app.add_option("--device", device, "where the models sample: cpu or cuda (the classifier runs on the CPU)")
      ->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
  app.add_option("--precision", precision, "with --device cuda: fp32, tf32 or bf16 (docs/cuda.md)")
      ->check(CLI::IsMember(precision_names()))->capture_default_str();
  app.add_option("--figure", figure,
                 "also write a PNG: one row per model, one block per step count, its first samples (classes 0, 1, ...)");
  app.add_option("--figure-columns", figure_columns, "samples per block in --figure")
      ->check(CLI::Range(1, 64))->capture_default_str();
  app.add_flag("-q,--quiet", quiet, "no progress bars");
  CLI11_PARSE(app, argc, argv);
  try {
    check_device(device);
    check_precision(device, precision);
    // the outputs' folders before minutes of sampling, not after
    for (const std::string& path : {out, figure}) {
      const fs::path folder = fs::path(path).parent_path();
      if (!path.empty() && !folder.empty() && !fs::is_directory(folder))
        throw FileError(cat("cannot write '", path, "': the folder '", folder.string(), "' does not exist"));
    }
    if (data_dir.empty()) data_dir = "data/" + dataset;
    if (classifier.empty()) classifier = "out/classifier/" + dataset + ".safetensors";
    std::vector<int> steps;
    {
      std::stringstream ss(steps_s);
      std::string it;
      while (std::getline(ss, it, ',')) {
        int v = 0;
        try { v = std::stoi(it); } catch (...) { v = 0; }
        if (!is_power_of_two(v)) throw ConfigError("--steps: '" + it + "' is not a power of two");
        steps.push_back(v);
      }
    }
    // the models first: a bad checkpoint or a missing GPU is reported before minutes of feature work
    struct Loaded {
      std::string name, path;
      std::unique_ptr<ImageGenerator> gen;
    };
    std::vector<Loaded> loaded;
    for (const std::string& spec : models) {
      auto eq = spec.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
        throw ConfigError("--model must be NAME=CHECKPOINT, got '" + spec + "'");
      const std::string name = spec.substr(0, eq), path = spec.substr(eq + 1);
      loaded.push_back({name, path, open_image_generator(device, path, {}, precision)});
    }
    auto test = load_split(data_dir, "t10k");
    auto train = load_split(data_dir, "train");
    Be be;
    if (!fs::exists(classifier))
      throw FileError("no classifier at '" + classifier + "': run train_classifier --dataset " + dataset + " first");
    Clf clf(be, nn::ClassifierConfig::from_json(io::read_config(classifier)));
    ParamArena<Be> ca(be, clf.layout());
    io::load_sampling_weights(classifier, clf, ca, Role::Param);
    const float* CP = ca.data(Role::Param);
    const int d = clf.feature_dim();
    auto ft = features(clf, CP, test.images.data(), test.labels.data(), test.n, test.image_size());
    auto test_stats = metrics::gaussian_stats(std::span<const float>(ft.f), d);
    const double clf_acc = double(ft.correct) / test.n;
    // the metric's floor: real training images, as many as the samples, against the test split
    const int nf = std::min(samples, train.n);
    auto fr = features(clf, CP, train.images.data(), train.labels.data(), nf, train.image_size());
    const double floor = metrics::frechet_distance(metrics::gaussian_stats(std::span<const float>(fr.f), d), test_stats);
    std::printf("classifier test accuracy %.4f; FD of %d real training images vs the test split: %.3f\n", clf_acc, nf,
                floor);
    nlohmann::json results = nlohmann::json::array();
    const int shown = std::min(figure_columns, samples);
    std::vector<Block> blocks;  // --figure: one per step count, rows = models
    for (int N : steps) blocks.push_back({cat(N, N == 1 ? " step" : " steps"), {}});
    int name_w = 12;
    for (const Loaded& m : loaded) name_w = std::max(name_w, int(m.name.size()));
    std::printf("%-*s %6s %10s %9s\n", name_w, "model", "steps", "fd", "accuracy");
    for (const Loaded& model : loaded) {
      const std::string& name = model.name;
      ImageGenerator* gen = model.gen.get();
      const nn::DiTConfig& dc = gen->config();
      if (dc.image != test.h || dc.channels != test.c || dc.classes != test.classes)
        throw ShapeError(cat("model '", name, "' makes ", dc.image, "x", dc.image, "x", dc.channels, " images of ",
                             dc.classes, " classes; the dataset has ", test.h, "x", test.w, "x", test.c, " and ",
                             test.classes));
      std::vector<int32_t> labels(samples);
      for (int i = 0; i < samples; ++i) labels[i] = i % dc.classes;
      for (size_t si = 0; si < steps.size(); ++si) {
        const int N = steps[si];
        ProgressBar bar(cat(name, " ", N, " steps"), samples, 0, !quiet);
        auto imgs = gen->generate(labels, N, guidance, seed, chunk, nullptr, &bar);
        bar.finish();
        if (!figure.empty())
          blocks[si].images.insert(blocks[si].images.end(), imgs.begin(),
                                   imgs.begin() + static_cast<std::ptrdiff_t>(shown * test.image_size()));
        auto fg = features(clf, CP, imgs.data(), labels.data(), samples, test.image_size());
        double fd = metrics::frechet_distance(metrics::gaussian_stats(std::span<const float>(fg.f), d), test_stats);
        double acc = double(fg.correct) / samples;
        std::printf("%-*s %6d %10.3f %9.3f\n", name_w, name.c_str(), N, fd, acc);
        results.push_back({{"model", name}, {"steps", N}, {"fd", fd}, {"accuracy", acc}});
      }
    }
    if (!figure.empty()) {
      std::vector<std::string> names;
      for (const Loaded& m : loaded) names.push_back(m.name);
      io::Image img = compose_blocks(blocks, int(loaded.size()), shown, test.h, test.w, test.c, names);
      io::write_png(figure, img, {{"Software", "shortcut evaluate_images"}, {"guidance", cat(guidance)},
                                  {"seed", cat(seed)}});
      std::printf("wrote %s\n", figure.c_str());
    }
    nlohmann::json j = {{"dataset", dataset},       {"samples", samples},    {"guidance", guidance},
                        {"classifier", classifier}, {"classifier_test_accuracy", clf_acc},
                        {"data_floor_fd", floor},   {"results", results}};
    std::ofstream f(out);
    f << j.dump(2) << "\n";
    if (!f) throw FileError("cannot write " + out);
    std::printf("wrote %s\n", out.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
