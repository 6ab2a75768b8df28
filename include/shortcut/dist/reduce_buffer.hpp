// Sums a backend buffer over all ranks in place, wherever the buffer lives: host memory goes to the
// communicator directly; device memory too where the communicator can take it (CUDA-aware MPI,
// NCCL), after the backend's queued work is done; otherwise it is staged through the backend's
// HostBuffer (pinned memory on CUDA): one copy down, the all-reduce, one copy up.
#pragma once
#include <type_traits>
#include <vector>

#include "shortcut/core/concepts.hpp"
#include "shortcut/core/span.hpp"
#include "shortcut/dist/communicator.hpp"

namespace shortcut::dist {

namespace detail {
template <class Be, class T>
struct HostBufferOf {
  using type = std::vector<T>;
};
template <class Be, class T>
  requires requires { typename Be::template HostBuffer<T>; }
struct HostBufferOf<Be, T> {
  using type = typename Be::template HostBuffer<T>;
};
}  // namespace detail

template <ComputeBackend Be>
class BufferReducer {
 public:
  using T = typename Be::Scalar;

  // How the last sum() moved the data: "in place" or "staged through host memory".
  bool staged() const { return staged_; }

  template <Communicator C>
  void sum(C& comm, Be& be, T* p, size_t n) {
    if (comm.size() == 1 || n == 0) return;
    staged_ = !shortcut::detail::host_memory<Be>() && !comm.device_memory();
    if (!staged_) {
      be.synchronize();
      comm.all_reduce(p, n, ReduceOp::Sum);
      return;
    }
    stage_.resize(n);
    be.to_host(stage_.data(), p, n);
    comm.all_reduce(stage_.data(), n, ReduceOp::Sum);
    be.to_device(p, stage_.data(), n);
  }

 private:
  typename detail::HostBufferOf<Be, T>::type stage_;
  bool staged_ = false;
};

}  // namespace shortcut::dist
