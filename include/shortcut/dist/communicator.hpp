// Communicators for data-parallel training: the contract (a C++20 concept), the single-process one
// that is every program's default, and a type-erased holder so that code compiled without MPI (a
// .cu translation unit, a library) can take whichever communicator main() built.
//
//   rank(), size()              this process and the world
//   all_reduce(p, n, op)        p[0..n) <- op over all ranks, in place; float, double, int64_t;
//                               every rank ends with the same bits (Trainer relies on that)
//   broadcast(p, bytes, root)   root's bytes to every rank
//   barrier()
//   abort(message, code)        the error path: ends every rank at once (no rank left waiting)
//   device_memory()             whether all_reduce may be given device (CUDA) pointers
//
// The MPI implementation is shortcut/dist/mpi.hpp (needs <mpi.h>: link shortcut::mpi). An NCCL
// communicator would satisfy the same concept with device_memory() true.
#pragma once
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>

#include "shortcut/core/error.hpp"

namespace shortcut::dist {

enum class ReduceOp { Sum, Max, Min };

// A collective operation failed or the ranks disagree (configuration, checkpoint, batch).
struct DistributedError : Error {
  using Error::Error;
};

template <class C>
concept Communicator = requires(C& c, const C& cc, float* f, double* d, int64_t* i, void* p, size_t n, int root,
                                std::string_view msg) {
  { cc.rank() } -> std::same_as<int>;
  { cc.size() } -> std::same_as<int>;
  { cc.device_memory() } -> std::same_as<bool>;
  c.all_reduce(f, n, ReduceOp::Sum);
  c.all_reduce(d, n, ReduceOp::Sum);
  c.all_reduce(i, n, ReduceOp::Max);
  c.broadcast(p, n, root);
  c.barrier();
  c.abort(msg, 1);
};

// One process: every collective is the identity.
class LocalCommunicator {
 public:
  int rank() const { return 0; }
  int size() const { return 1; }
  bool device_memory() const { return true; }
  template <class T>
  void all_reduce(T*, size_t, ReduceOp) {}
  void broadcast(void*, size_t, int root) {
    if (root != 0) throw DistributedError(cat("broadcast from rank ", root, " in a single-process run"));
  }
  void barrier() {}
  [[noreturn]] void abort(std::string_view msg, int code) {
    std::fprintf(stderr, "%.*s\n", int(msg.size()), msg.data());
    std::exit(code);
  }
};

// Holds any Communicator by reference behind one type (virtual calls, once per step: negligible).
class AnyCommunicator {
 public:
  template <Communicator C>
    requires(!std::same_as<std::remove_cvref_t<C>, AnyCommunicator>)
  explicit AnyCommunicator(C& c) : impl_(std::make_shared<Model<C>>(c)) {}

  int rank() const { return impl_->rank(); }
  int size() const { return impl_->size(); }
  bool device_memory() const { return impl_->device_memory(); }
  void all_reduce(float* p, size_t n, ReduceOp op) { impl_->all_reduce(p, n, op); }
  void all_reduce(double* p, size_t n, ReduceOp op) { impl_->all_reduce(p, n, op); }
  void all_reduce(int64_t* p, size_t n, ReduceOp op) { impl_->all_reduce(p, n, op); }
  void broadcast(void* p, size_t bytes, int root) { impl_->broadcast(p, bytes, root); }
  void barrier() { impl_->barrier(); }
  [[noreturn]] void abort(std::string_view msg, int code) {
    impl_->abort(msg, code);
    std::abort();  // an implementation that returned
  }

 private:
  struct Iface {
    virtual ~Iface() = default;
    virtual int rank() const = 0;
    virtual int size() const = 0;
    virtual bool device_memory() const = 0;
    virtual void all_reduce(float*, size_t, ReduceOp) = 0;
    virtual void all_reduce(double*, size_t, ReduceOp) = 0;
    virtual void all_reduce(int64_t*, size_t, ReduceOp) = 0;
    virtual void broadcast(void*, size_t, int) = 0;
    virtual void barrier() = 0;
    virtual void abort(std::string_view, int) = 0;
  };
  template <class C>
  struct Model final : Iface {
    explicit Model(C& c) : c_(&c) {}
    int rank() const override { return c_->rank(); }
    int size() const override { return c_->size(); }
    bool device_memory() const override { return c_->device_memory(); }
    void all_reduce(float* p, size_t n, ReduceOp op) override { c_->all_reduce(p, n, op); }
    void all_reduce(double* p, size_t n, ReduceOp op) override { c_->all_reduce(p, n, op); }
    void all_reduce(int64_t* p, size_t n, ReduceOp op) override { c_->all_reduce(p, n, op); }
    void broadcast(void* p, size_t bytes, int root) override { c_->broadcast(p, bytes, root); }
    void barrier() override { c_->barrier(); }
    void abort(std::string_view msg, int code) override { c_->abort(msg, code); }
    C* c_;
  };
  std::shared_ptr<Iface> impl_;
};

static_assert(Communicator<LocalCommunicator>);
static_assert(Communicator<AnyCommunicator>);

}  // namespace shortcut::dist
