// The CUDA instantiation of the image training run: the same code as the CPU run, on cuda::Backend.
#include <shortcut/cuda.hpp>

#include "train_images_run.hpp"

namespace examples {

// Under MPI each rank drives the GPU of its local rank (the ranks of one machine share its GPUs); the
// backend refuses an index past the machine's GPUs, and main() names the rank in the message.
int train_images_cuda(const TrainImagesOptions& o, dist::AnyCommunicator& comm) {
  shortcut::cuda::Options opt;
  opt.precision = o.tf32 ? shortcut::cuda::Precision::tf32 : shortcut::cuda::parse_precision(o.precision);
  if (comm.size() > 1) opt.device = o.local_rank;
  shortcut::cuda::Backend be(opt);  // says "no CUDA device" where there is none
  return train_images(be, o, comm);
}

}  // namespace examples
