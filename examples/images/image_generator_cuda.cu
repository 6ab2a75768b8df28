// The CUDA instantiation of the sampling programs' generator (image_generator.hpp).
#include <shortcut/cuda.hpp>

#include "image_generator.hpp"

namespace examples {

std::unique_ptr<ImageGenerator> open_image_generator_cuda(const std::string& checkpoint, const GeneratorOptions& opt,
                                                          const std::string& precision) {
  shortcut::cuda::Options o;
  o.precision = shortcut::cuda::parse_precision(precision);
  return std::make_unique<ImageGeneratorOn<shortcut::cuda::Backend>>(checkpoint, opt, o);
}

}  // namespace examples
