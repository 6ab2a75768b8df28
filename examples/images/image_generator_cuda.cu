// The CUDA instantiation of the sampling programs' generator (image_generator.hpp).
#include <shortcut/cuda.hpp>

#include "image_generator.hpp"

namespace examples {

std::unique_ptr<ImageGenerator> load_generator_cuda(const std::string& checkpoint) {
  return std::make_unique<ImageGeneratorOn<shortcut::cuda::Backend>>(checkpoint);
}

}  // namespace examples
