// A checkpoint's model loaded for sampling on one device (--device cpu | cuda), behind one interface,
// so that sample_images and evaluate_images are written once and the CUDA instantiation lives in a
// .cu translation unit (image_generator_cuda.cu) built only where nvcc is.
#pragma once
#include <memory>

#include "image_common.hpp"

namespace examples {

class ImageGenerator {
 public:
  virtual ~ImageGenerator() = default;
  virtual const nn::DiTConfig& config() const = 0;
  // generate() of the library on the checkpoint's EMA weights: [labels.size(), sample] on the host.
  virtual std::vector<float> generate(const ShortcutConfig& train, const std::vector<int32_t>& labels,
                                      const SamplerConfig& s, uint64_t seed, int chunk,
                                      const std::vector<float>* noise, ProgressBar* bar) = 0;
};

template <class Be>
class ImageGeneratorOn final : public ImageGenerator {
 public:
  template <class... BackendArgs>
  explicit ImageGeneratorOn(const std::string& checkpoint, BackendArgs&&... args)
      : be_(std::forward<BackendArgs>(args)...),
        model_(be_, nn::DiTConfig::from_json(io::read_config(checkpoint)), 0) {
    io::load_sampling_weights(checkpoint, model_.net(), model_.arena());
  }
  const nn::DiTConfig& config() const override { return model_.net().config(); }
  std::vector<float> generate(const ShortcutConfig& train, const std::vector<int32_t>& labels, const SamplerConfig& s,
                              uint64_t seed, int chunk, const std::vector<float>* noise, ProgressBar* bar) override {
    return shortcut::generate(model_, train, labels, s, seed, 0, chunk, noise, bar);
  }

 private:
  Be be_;
  ShortcutModel<nn::DiT<Be>> model_;
};

#ifdef SHORTCUT_EXAMPLES_CUDA
std::unique_ptr<ImageGenerator> load_generator_cuda(const std::string& checkpoint);  // image_generator_cuda.cu
#endif

// The device is checked first, so that "no CUDA device" is the answer on a machine without one.
inline std::unique_ptr<ImageGenerator> load_generator(const std::string& device, const std::string& checkpoint) {
  check_device(device);
#ifdef SHORTCUT_EXAMPLES_CUDA
  if (device == "cuda") return load_generator_cuda(checkpoint);
#endif
  return std::make_unique<ImageGeneratorOn<cpu::Backend<float>>>(checkpoint);
}

}  // namespace examples
