// The CUDA instantiation of the image training run: the same code as the CPU run, on cuda::Backend.
#include <shortcut/cuda.hpp>

#include "train_images_run.hpp"

namespace examples {

int train_images_cuda(const TrainImagesOptions& o) {
  shortcut::cuda::Options opt;
  opt.tf32 = o.tf32;
  shortcut::cuda::Backend be(opt);  // says "no CUDA device" where there is none
  return train_images(be, o);
}

}  // namespace examples
