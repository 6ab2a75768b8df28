// docs/cuda.md: built by nvcc where SHORTCUT_CUDA is on (run: skipped without a GPU) and, everywhere,
// as C++ on the CPU emulation of CUDA (tests/emulation), where it runs. The umbrella header comes
// first: the snippet's own #include sits inside main(), where #pragma once makes it empty.
#include <cstdio>
#include <shortcut/cuda.hpp>
#include <string>

int main() try {
  // [snippet begin]
  #include <shortcut/cuda.hpp>   // from a .cu file (nvcc -std=c++20); CMake target shortcut::cuda
  shortcut::cuda::Backend be;    // throws shortcut::Error("no CUDA device ...") without a GPU
  shortcut::nn::DiT<shortcut::cuda::Backend> net(be, shortcut::nn::DiTConfig::preset("DiT-S", 32, 4));
  // [snippet end]
  return net.sample_size() == 32 * 32 * 4 ? 0 : 1;
} catch (const shortcut::Error& e) {
  if (std::string(e.what()).find("no CUDA device") == std::string::npos) throw;
  std::printf("skipped: %s\n", e.what());
  return 77;
}
