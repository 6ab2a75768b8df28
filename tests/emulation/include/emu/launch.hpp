// Kernel launches in the emulation: emu::launch_kernel checks the configuration as a device does, records
// the kernel and its arguments, and queues it on the stream; it runs when the host next waits.
#pragma once
#include <memory>
#include <tuple>
#include <type_traits>
#include <vector>

namespace emu {

// One CUDA thread's run of a kernel with its arguments (each thread gets its own copy of them).
struct Kernel {
  virtual ~Kernel() = default;
  virtual void run_thread() const = 0;
};
template <class... P>
struct KernelCall final : Kernel {
  void (*fn)(P...);
  std::tuple<P...> args;
  KernelCall(void (*f)(P...), P... a) : fn(f), args(a...) {}
  void run_thread() const override { std::apply(fn, args); }
};

struct LaunchRequest {
  const char* name;
  const void* fn;
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
  std::vector<std::pair<int, const void*>> pointers;  // (argument index, value) of the pointer arguments
};
// Checks the request; on a bad configuration sets the (non-sticky) launch error, else queues the kernel.
void submit(const LaunchRequest& r, std::shared_ptr<const Kernel> k);

template <class... P>
void launch_kernel(const char* name, void (*fn)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
            std::type_identity_t<P>... args) {
  LaunchRequest r{name, reinterpret_cast<const void*>(fn), grid, block, smem, s, {}};
  int i = 0;
  auto note = [&](auto a) {
    if constexpr (std::is_pointer_v<decltype(a)>) r.pointers.emplace_back(i, static_cast<const void*>(a));
    ++i;
  };
  (note(args), ...);
  submit(r, std::make_shared<const KernelCall<P...>>(fn, args...));
}

}  // namespace emu
