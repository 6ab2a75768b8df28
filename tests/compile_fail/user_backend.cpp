// Compile-fail test of the backend contract (shortcut::ComputeBackend, core/concepts.hpp): a user's
// backend that replaces one op of the CPU backend, used by a network. Built twice by
// tests/CMakeLists.txt: as is, it must compile; with CF_BROKEN defined its silu_forward takes `int n`
// instead of `size_t n` (a call would still compile, the contract does not) and the build must fail
// with an error that names the concept, the op group and the op (checked by check_compile.cmake).
#include "shortcut/cpu/backend.hpp"
#include "shortcut/nn/mlp_net.hpp"

namespace {

#ifdef CF_BROKEN
using Count = int;
#else
using Count = size_t;
#endif

struct MyBackend : shortcut::cpu::Backend<float> {
  void silu_forward(float* out, const float* in, Count n) const {
    shortcut::cpu::Backend<float>::silu_forward(out, in, size_t(n));
  }
};

}  // namespace

void build_on_my_backend() {
  MyBackend be;
  shortcut::nn::MlpNet<MyBackend> net(be, shortcut::nn::MlpNetConfig{});
}
