// The CUDA umbrella header: include it from a .cu file compiled by nvcc (CMake target
// shortcut::cuda). It brings everything of <shortcut/shortcut.hpp> (the backend-generic method,
// networks and training loop, and the CPU backend, which also serves as the reference in tests)
// and the CUDA backend, shortcut::cuda::Backend, which plugs into them as cpu::Backend<float> does:
//
//   shortcut::cuda::Backend be;  // throws Error("no CUDA device ...") without a GPU
//   shortcut::nn::DiT<shortcut::cuda::Backend> net(be, shortcut::nn::DiTConfig::preset("DiT-S", 32, 4));
#pragma once
#include "shortcut/shortcut.hpp"
#include "shortcut/cuda/backend.hpp"
#include "shortcut/cuda/device_buffer.hpp"
