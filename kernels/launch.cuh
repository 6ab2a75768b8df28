// How a kernel is launched, on a GPU or in the CPU emulation (tests/emulation), and the one place
// where the kernels' source differs between the two:
//  - launch(name, kernel, grid, block, smem, stream, args...): under nvcc the <<<>>> launch, under
//    the emulation (g++, SHORTCUT_CUDA_EMULATION) the emulator's launch, which makes the checks a
//    device makes at launch (block and grid limits, shared memory above 48 KB only after
//    cudaFuncSetAttribute). Either way the launch error is checked at once and reported under the
//    kernel's name, and the launch is recorded for fault reports (shortcut/cuda/check.hpp).
//  - SHORTCUT_DYNAMIC_SMEM(type, name): the block's dynamic shared memory as `type* name` (under nvcc
//    `extern __shared__ __align__(16) type name[]`: declared with its type's alignment alone, a bf16
//    array promises the compiler 2 bytes, while cp.async and ldmatrix address it in 16-byte rows; the
//    emulator's is 16-byte aligned too, and poisoned at every block start, so a read of a value no
//    thread of the block wrote shows as NaN).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>

#include "shortcut/cuda/check.hpp"

#if defined(SHORTCUT_CUDA_EMULATION)
#define SHORTCUT_DYNAMIC_SMEM(type, name) type* name = ::emu::dynamic_shared_memory<type>()
#else
#define SHORTCUT_DYNAMIC_SMEM(type, name) extern __shared__ __align__(16) type name[]
#endif

namespace shortcut::kernels {

template <class... P, class... A>
void launch(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "launch: the argument count differs from the kernel's");
  cuda::note_launch(name);
#if defined(SHORTCUT_CUDA_EMULATION)
  ::emu::launch_kernel(name, kernel, grid, block, smem, s, static_cast<P>(args)...);
#else
  kernel<<<grid, block, smem, s>>>(static_cast<P>(args)...);
#endif
  cuda::check_launch(name);
}

}  // namespace shortcut::kernels
