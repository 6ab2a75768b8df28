// Trains the small classifier (nn::Classifier: the library's own Linear and GELU layers) whose feature
// space the sample-quality metric uses, on a dataset's training split; reports test accuracy and
// saves the weights as a safetensors file.
#include <cstdio>

#include "image_common.hpp"

using namespace examples;
using Be = cpu::Backend<float>;

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // lines appear in order with the progress bar
  std::string dataset = "fashion-mnist", data_dir, out;
  int epochs = 4, batch = 128;
  double lr = 1e-3;
  uint64_t seed = 0;
  bool quiet = false;
  CLI::App app{"Train the feature classifier of the sample-quality metric (see docs/images.md)"};
  app.add_option("--dataset", dataset, "dataset name")->check(CLI::IsMember(dataset_names()))->capture_default_str();
  app.add_option("--data", data_dir, "folder with the four IDX files (default: data/<dataset>)");
  app.add_option("-o,--out", out, "weights file to write (default: out/classifier/<dataset>.safetensors)");
  app.add_option("--epochs", epochs, "passes over the training split")->check(CLI::Range(1, 1000))->capture_default_str();
  app.add_option("--batch", batch, "batch size")->check(CLI::Range(1, 1 << 16))->capture_default_str();
  app.add_option("--lr", lr, "AdamW learning rate")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--seed", seed, "random seed")->capture_default_str();
  app.add_flag("-q,--quiet", quiet, "no progress bar");
  CLI11_PARSE(app, argc, argv);
  try {
    if (data_dir.empty()) data_dir = "data/" + dataset;
    if (out.empty()) out = "out/classifier/" + dataset + ".safetensors";
    auto train = load_split(data_dir, "train");
    auto test = load_split(data_dir, "t10k");
    Be be;
    nn::ClassifierConfig cc;
    cc.image = train.h;
    cc.channels = train.c;
    cc.classes = train.classes;
    nn::Classifier<Be> net(be, cc);
    ParamArena<Be> arena(be, net.layout());
    arena.initialize(seed);
    AdamWConfig oc;
    oc.lr = lr;
    oc.weight_decay = 1e-4;
    const int64_t steps = int64_t(epochs) * (train.n / batch);
    oc.cosine_steps = steps;
    AdamW opt(oc);
    data::ImageBatcher batcher(train);
    Rng rng(seed);
    nn::Classifier<Be>::Context ctx;
    std::vector<float> x(size_t(batch) * train.image_size()), dlog(size_t(batch) * cc.classes);
    std::vector<int32_t> y(batch);
    ProgressBar bar("classifier", steps, 0, !quiet);
    double avg = 0;
    for (int64_t s = 1; s <= steps; ++s) {
      batcher.next_into(batch, rng, x.data(), y.data());
      arena.zero_grad();
      const float* logits = net.forward(ctx, arena.data(Role::Param), x.data(), batch);
      double loss = nn::softmax_cross_entropy(logits, y.data(), batch, cc.classes, dlog.data());
      net.backward(ctx, arena.data(Role::Param), arena.data(Role::Grad), dlog.data());
      opt.step(arena);
      avg = s == 1 ? loss : 0.98 * avg + 0.02 * loss;
      bar.update(s, {{"loss", avg}});
    }
    bar.finish();
    int correct = 0;
    for (int first = 0; first < test.n; first += 1000) {
      int c = std::min(1000, test.n - first), hits = 0;
      const float* logits = net.forward(ctx, arena.data(Role::Param), test.image(first), c);
      nn::softmax_cross_entropy(logits, test.labels.data() + first, c, cc.classes, (float*)nullptr, &hits);
      correct += hits;
    }
    double acc = double(correct) / test.n;
    fs::create_directories(fs::path(out).parent_path().empty() ? "." : fs::path(out).parent_path());
    io::SaveOptions so;
    so.metadata["test_accuracy"] = std::to_string(acc);
    so.metadata["dataset"] = dataset;
    io::save_weights(out, net, arena, Role::Param, so);
    std::printf("test accuracy %.4f on %d images; wrote %s\n", acc, test.n, out.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
