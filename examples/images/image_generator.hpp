// A checkpoint's model loaded for sampling on one device (--device cpu | cuda), behind one interface,
// so that sample_images and evaluate_images are written once and the CUDA instantiation lives in a
// .cu translation unit (image_generator_cuda.cu) built only where nvcc is. The loading is the
// library's load_generator (train/generator.hpp): the network, its config, the objective and M come
// from the checkpoint's metadata, and only the weights to sample with are allocated.
#pragma once
#include <memory>

#include "image_common.hpp"

namespace examples {

class ImageGenerator {
 public:
  virtual ~ImageGenerator() = default;
  virtual const nn::DiTConfig& config() const = 0;
  // How the model samples (from the checkpoint, or the --objective override).
  virtual const SamplingSchedule& sampling() const = 0;
  // Samples on the checkpoint's EMA weights: [labels.size(), sample] on the host.
  virtual std::vector<float> generate(const std::vector<int32_t>& labels, int steps, double guidance, uint64_t seed,
                                      int chunk, const std::vector<float>* noise, ProgressBar* bar) = 0;
};

template <class Be>
class ImageGeneratorOn final : public ImageGenerator {
 public:
  template <class... BackendArgs>
  ImageGeneratorOn(const std::string& checkpoint, const GeneratorOptions& opt, BackendArgs&&... args)
      : be_(std::forward<BackendArgs>(args)...), gen_(be_, checkpoint, opt), cfg_(dit_config(gen_)) {}
  const nn::DiTConfig& config() const override { return cfg_; }
  const SamplingSchedule& sampling() const override { return gen_.sampling(); }
  std::vector<float> generate(const std::vector<int32_t>& labels, int steps, double guidance, uint64_t seed, int chunk,
                              const std::vector<float>* noise, ProgressBar* bar) override {
    typename Generator<Be>::SampleOptions so;
    so.chunk = chunk;
    so.bar = bar;
    return noise ? gen_.sample_from(*noise, labels, steps, guidance, so) : gen_.sample(labels, steps, guidance, seed, so);
  }

 private:
  static nn::DiTConfig dit_config(const Generator<Be>& g) {
    if (g.network() != "dit")
      throw ConfigError("checkpoint " + g.info().file.string() + " holds an '" + g.network() +
                        "' network; the image programs sample DiTs (an 'mlp' is a 2-D model: see toy2d)");
    return nn::DiTConfig::from_json(g.info().network_config);
  }
  Be be_;
  Generator<Be> gen_;
  nn::DiTConfig cfg_;
};

// The loader's options for --objective: the checkpoint's sampling schedule with reads_d replaced
// (the library defaults, M = 128, for a file without "training" metadata, e.g. from PyTorch); none
// (everything from the file, which must then have it) without --objective.
inline GeneratorOptions generator_options(const std::string& checkpoint, const std::string& objective) {
  GeneratorOptions opt;
  if (objective.empty()) return opt;
  SamplingSchedule s;
  if (io::SafetensorsReader(io::weights_file(checkpoint, Role::Ema)).metadata("training"))
    s = read_checkpoint_info(checkpoint).sampling;
  s.reads_d = objective != "flow";
  opt.sampling = s;
  return opt;
}

#ifdef SHORTCUT_EXAMPLES_CUDA
std::unique_ptr<ImageGenerator> open_image_generator_cuda(const std::string& checkpoint, const GeneratorOptions& opt,
                                                          const std::string& precision);  // image_generator_cuda.cu
#endif

// The device is checked first, so that "no CUDA device" is the answer on a machine without one.
inline std::unique_ptr<ImageGenerator> open_image_generator(const std::string& device, const std::string& checkpoint,
                                                            const GeneratorOptions& opt = {},
                                                            const std::string& precision = "fp32") {
  check_device(device);
  check_precision(device, precision);
#ifdef SHORTCUT_EXAMPLES_CUDA
  if (device == "cuda") return open_image_generator_cuda(checkpoint, opt, precision);
#endif
  return std::make_unique<ImageGeneratorOn<cpu::Backend<float>>>(checkpoint, opt);
}

}  // namespace examples
