// The two contracts of the library as C++20 concepts, checked where the templates are instantiated:
//
//   ComputeBackend<Be>   the op set that the networks and the method call (cpu::Backend<float/double>,
//                        cuda::Backend; a static_assert beside each backend proves it offers every op)
//   VelocityNetwork<Net> what ShortcutModel<Net> and the method templates call on a network
//   SamplingModel<M>     what OdeSampler and generate call on a model: the guided velocity on one
//                        weight set, no training parts (InferenceModel<Net>, and ShortcutModel<Net>)
//   VelocityModel<M>     a SamplingModel that can also be trained: what SelfConsistencyLoss and
//                        Trainer call on a model (ShortcutModel<Net> for any VelocityNetwork Net)
//   NamedNetwork<Net>    what checkpoint I/O needs of any network (the classifier too)
//
// Why concepts: the templates are written once over two backends, so a drift between them (an op
// missing, or taking other argument types) used to show up only when a network was instantiated on
// the backend that drifted, as a page of template errors deep inside a layer. Here every requirement
// is a named expression; the compiler's note names the group that failed (BackendAdaLnOps,
// VelocityNetworkQueries, ...) and the expression inside it (`n.sample_size()`, `&Be::silu_forward`).
//
// Naming: the concept is ComputeBackend, not Backend, because `Backend` is already the class name of
// both backends (cpu::Backend, cuda::Backend) and the member alias `Net::Backend` / `Model::Backend`
// that every network and model exports; a concept of the same name would be shadowed inside those
// classes and ambiguous under `using namespace`. All concepts live in namespace shortcut.
//
// Backend ops are checked by their exact signature (a pointer to a const member function of exactly
// that type must be formable), not by whether a call compiles: a call would silently accept an op
// taking `int` where the contract says `size_t`, or `float` where a double backend needs `double`,
// and the two backends would drift again. An op may still be a template (to_device<U>), inherited
// from a base class, or noexcept. Networks are checked by calls with the argument types ShortcutModel
// passes, which leaves a user's network free to take `const T*` where T* is passed, add defaults, etc.
#pragma once
#include <nlohmann/json.hpp>

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "shortcut/core/arena.hpp"
#include "shortcut/core/param_layout.hpp"
#include "shortcut/core/patch_order.hpp"

namespace shortcut {

// ---- backends ---------------------------------------------------------------------------------

namespace detail {
// The type of a const member op of Be returning void: `static_cast<Op<Be, A...>>(&Be::name)` compiles
// only when Be has an op `void name(A...) const` (after overload resolution or template deduction).
template <class Be, class... A>
using Op = void (Be::*)(A...) const;
}  // namespace detail

// A backend's Buffer<U>: default-constructible, movable, data(), size(), resize(n) (std::vector, or
// cuda::DeviceBuffer over device memory).
template <class Buf, class U>
concept BackendBuffer = std::default_initializable<Buf> && std::movable<Buf> && requires(Buf& b, const Buf& cb, size_t n) {
  { b.data() } -> std::same_as<U*>;
  { cb.data() } -> std::same_as<const U*>;
  { cb.size() } -> std::convertible_to<size_t>;
  b.resize(n);
};

// Scalar (float or double), Buffer<U> for the scalar and for labels, and a static name().
template <class Be>
concept BackendTypes = requires {
  typename Be::Scalar;
  typename Be::template Buffer<typename Be::Scalar>;
  typename Be::template Buffer<int32_t>;
  { Be::name() } -> std::convertible_to<const char*>;
} && std::floating_point<typename Be::Scalar> &&
    BackendBuffer<typename Be::template Buffer<typename Be::Scalar>, typename Be::Scalar> &&
    BackendBuffer<typename Be::template Buffer<int32_t>, int32_t>;

// Host <-> device moves and device copies for the scalar and for int32 labels; fill; synchronize.
template <class Be, class T>
concept BackendMemory = requires {
  static_cast<detail::Op<Be, T*, const T*, size_t>>(&Be::to_device);
  static_cast<detail::Op<Be, int32_t*, const int32_t*, size_t>>(&Be::to_device);
  static_cast<detail::Op<Be, T*, const T*, size_t>>(&Be::to_host);
  static_cast<detail::Op<Be, int32_t*, const int32_t*, size_t>>(&Be::to_host);
  static_cast<detail::Op<Be, T*, const T*, size_t>>(&Be::copy);
  static_cast<detail::Op<Be, int32_t*, const int32_t*, size_t>>(&Be::copy);
  static_cast<detail::Op<Be, T*, T, size_t>>(&Be::fill);
  static_cast<detail::Op<Be>>(&Be::synchronize);
};

// linear_forward(out, in, W, b, N, I, O); linear_backward(din, dW, db, dout, in, W, N, I, O, accumulate_din);
// the MLP's pair: linear_gelu_forward(g, a, in, W, b, N, I, O) (a = in W^T + b, g = GELU(a)) and
// gelu_linear_backward(da, dW, db, dout, in, a, W, N, I, O) (the backward of GELU(a) W^T + b).
template <class Be, class T>
concept BackendLinearOps = requires {
  static_cast<detail::Op<Be, T*, const T*, const T*, const T*, int, int, int>>(&Be::linear_forward);
  static_cast<detail::Op<Be, T*, T*, T*, const T*, const T*, const T*, int, int, int, bool>>(&Be::linear_backward);
  static_cast<detail::Op<Be, T*, T*, const T*, const T*, const T*, int, int, int>>(&Be::linear_gelu_forward);
  static_cast<detail::Op<Be, T*, T*, T*, const T*, const T*, const T*, const T*, int, int, int>>(
      &Be::gelu_linear_backward);
};

// SiLU and GELU forward/backward, y += x, y += a x, x[b] += row.
template <class Be, class T>
concept BackendElementwiseOps = requires {
  static_cast<detail::Op<Be, T*, const T*, size_t>>(&Be::silu_forward);
  static_cast<detail::Op<Be, T*, const T*, const T*, size_t>>(&Be::silu_backward);
  static_cast<detail::Op<Be, T*, const T*, size_t>>(&Be::gelu_forward);
  static_cast<detail::Op<Be, T*, const T*, const T*, size_t>>(&Be::gelu_backward);
  static_cast<detail::Op<Be, T*, const T*, size_t>>(&Be::add_inplace);
  static_cast<detail::Op<Be, T*, T, const T*, size_t>>(&Be::axpy);
  static_cast<detail::Op<Be, T*, const T*, int, int>>(&Be::add_rows);
};

// LayerNorm + adaLN modulation and the gated residual, forward and backward.
template <class Be, class T>
concept BackendAdaLnOps = requires {
  static_cast<detail::Op<Be, T*, T*, T*, const T*, const T*, const T*, int, int, int, int, T>>(&Be::ln_modulate_forward);
  static_cast<detail::Op<Be, T*, T*, T*, const T*, const T*, const T*, const T*, const T*, int, int, int, int>>(
      &Be::ln_modulate_backward);
  static_cast<detail::Op<Be, T*, const T*, const T*, int, int, int, int>>(&Be::gated_residual_forward);
  static_cast<detail::Op<Be, T*, T*, const T*, const T*, const T*, int, int, int, int>>(&Be::gated_residual_backward);
};

// attention_forward(out, lse, qkv, B, T, H, hd, scale); attention_backward(dqkv, dout, qkv, out, lse, ...)
template <class Be, class T>
concept BackendAttentionOps = requires {
  static_cast<detail::Op<Be, T*, T*, const T*, int, int, int, int, T>>(&Be::attention_forward);
  static_cast<detail::Op<Be, T*, const T*, const T*, const T*, const T*, int, int, int, int, T>>(
      &Be::attention_backward);
};

// Sinusoidal features, the label table, patchify / un-patchify.
template <class Be, class T>
concept BackendEmbeddingOps = requires {
  static_cast<detail::Op<Be, T*, const T*, int, int>>(&Be::timestep_embedding);
  static_cast<detail::Op<Be, T*, const T*, const int32_t*, int, int>>(&Be::embedding_forward);
  static_cast<detail::Op<Be, T*, const T*, const int32_t*, int, int>>(&Be::embedding_backward);
  static_cast<detail::Op<Be, T*, const T*, int, int, int, int, int, PatchOrder>>(&Be::patch_gather);
  static_cast<detail::Op<Be, T*, const T*, int, int, int, int, int, PatchOrder>>(&Be::patch_scatter);
};

// The training targets: noise, flow rows, bootstrap half step and target, the consistency objectives'
// target, guidance, MSE.
template <class Be, class T>
concept BackendTargetOps = requires {
  static_cast<detail::Op<Be, T*, size_t, uint64_t, uint64_t, uint64_t>>(&Be::normal);
  static_cast<detail::Op<Be, T*, T*, const T*, const T*, const T*, int, int>>(&Be::flow_rows);
  static_cast<detail::Op<Be, T*, T*, const T*, const T*, const T*, int, T, const T*, int, int, T>>(
      &Be::bootstrap_half_step);
  static_cast<detail::Op<Be, T*, const T*, const T*, const T*, int, T, int, int, T>>(&Be::bootstrap_target);
  static_cast<detail::Op<Be, T*, const T*, const T*, const T*, const T*, const T*, int, int>>(&Be::consistency_target);
  static_cast<detail::Op<Be, T*, const T*, const T*, T, size_t>>(&Be::cfg_combine);
  static_cast<detail::Op<Be, T*, T*, const T*, const T*, int, int, T>>(&Be::mse_loss);
};

// adamw_step(p, g, m, v, n, lr, b1, b2, eps, wd, step); ema_update(ema, p, tau, n)
template <class Be, class T>
concept BackendOptimizerOps = requires {
  static_cast<detail::Op<Be, T*, const T*, T*, T*, size_t, T, T, T, T, T, int64_t>>(&Be::adamw_step);
  static_cast<detail::Op<Be, T*, const T*, T, size_t>>(&Be::ema_update);
};

// Every op of cpu::Backend (the reference; its comments say what each op computes) with exactly its
// signature, over the backend's own Scalar.
template <class Be>
concept ComputeBackend =
    BackendTypes<Be> && BackendMemory<Be, typename Be::Scalar> && BackendLinearOps<Be, typename Be::Scalar> &&
    BackendElementwiseOps<Be, typename Be::Scalar> && BackendAdaLnOps<Be, typename Be::Scalar> &&
    BackendAttentionOps<Be, typename Be::Scalar> && BackendEmbeddingOps<Be, typename Be::Scalar> &&
    BackendTargetOps<Be, typename Be::Scalar> && BackendOptimizerOps<Be, typename Be::Scalar>;

// The forward-mode (tangent) ops of DESIGN.md §8, beyond what the ordinary ops already give (a
// linear layer's tangent is linear_forward without bias; GELU's and SiLU's are their backward with
// the tangent as dout): scale_rows(x, s, rows, n); ln_modulate_tangent(h_dot, x, x_dot, mean, rstd,
// scale, shift_dot, scale_dot, mod_stride, B, T, D); attention_tangent(out_dot, qkv, qkv_dot, out, lse,
// B, T, H, hd, scale). The networks' tangent passes and the average-velocity objectives need them.
template <class Be, class T>
concept BackendTangentOps = requires {
  static_cast<detail::Op<Be, T*, const T*, int, int>>(&Be::scale_rows);
  static_cast<detail::Op<Be, T*, const T*, const T*, const T*, const T*, const T*, const T*, const T*, int, int, int,
                         int>>(&Be::ln_modulate_tangent);
  static_cast<detail::Op<Be, T*, const T*, const T*, const T*, const T*, int, int, int, int, T>>(
      &Be::attention_tangent);
};

// A ComputeBackend that also runs forward mode.
template <class Be>
concept ForwardModeBackend = ComputeBackend<Be> && BackendTangentOps<Be, typename Be::Scalar>;

// ---- networks ---------------------------------------------------------------------------------

// What checkpoint I/O (io/checkpoint.hpp) needs of a network: its parameter layout (tensor names and
// shapes) and its config as JSON (written into every file, compared on load). A network may also
// provide pos_embed() and config().hidden: then the DiT's fixed pos_embed tensor is written too.
template <class Net>
concept NamedNetwork = requires(const Net& n) {
  { n.layout() } -> std::convertible_to<const ParamLayout&>;
  { n.config_json() } -> std::convertible_to<nlohmann::json>;
};

// The types: the backend it runs on, its scalar (the backend's), its Config (ShortcutModel builds the
// network as Net(backend, config)) and a default-constructible Context (what forward saves for
// backward; ShortcutModel keeps one for training and one for evaluation).
template <class Net>
concept VelocityNetworkTypes = requires {
  typename Net::Backend;
  typename Net::Scalar;
  typename Net::Config;
  typename Net::Context;
} && ComputeBackend<typename Net::Backend> && std::same_as<typename Net::Scalar, typename Net::Backend::Scalar> &&
    std::default_initializable<typename Net::Context> &&
    std::constructible_from<Net, typename Net::Backend&, const typename Net::Config&>;

// Shapes: one sample's shape and element count, and the number of classes (labels are 0..classes-1,
// and `classes` is the null label of classifier-free guidance).
template <class Net>
concept VelocityNetworkQueries = requires(const Net& n) {
  { n.sample_shape() } -> std::convertible_to<std::vector<int64_t>>;
  { n.sample_size() } -> std::convertible_to<int64_t>;
  { n.num_classes() } -> std::convertible_to<int>;
};

// The two passes, with the argument types ShortcutModel passes (all pointers device memory):
//   forward(ctx, params, x [B, sample], t [B], k [B], y [B], B, out [B, sample])
//   backward(ctx, params, grads (+=), dout [B, sample], dx [B, sample] or null)
// params and grads are base pointers of a weight set of the ParamArena built from layout().
template <class Net, class T = typename Net::Scalar>
concept VelocityNetworkPasses = requires(Net& n, typename Net::Context& ctx, const T* params, T* grads, const T* x,
                                         const T* t, const T* k, const int32_t* y, int B, T* out, const T* dout,
                                         T* dx) {
  n.forward(ctx, params, x, t, k, y, B, out);
  n.backward(ctx, params, grads, dout, dx);
};

// A velocity network s(x, t, k, y) that ShortcutModel<Net> can train and sample (nn::DiT, nn::MlpNet).
template <class Net>
concept VelocityNetwork =
    VelocityNetworkTypes<Net> && NamedNetwork<Net> && VelocityNetworkQueries<Net> && VelocityNetworkPasses<Net>;

// A velocity network that also runs forward mode (DESIGN.md §8): after forward(ctx, ...),
//   tangent(ctx, params, x_dot [B, sample], t_dot [B], k_dot [B], out_dot [B, sample])
// writes the derivative of the output along the input tangents, leaving what backward needs intact
// (nn::DiT and nn::MlpNet on a ForwardModeBackend). The average-velocity objectives need it.
template <class Net, class T = typename Net::Scalar>
concept TangentNetwork = VelocityNetwork<Net> && requires(const Net& n, typename Net::Context& ctx, const T* params,
                                                          const T* x_dot, const T* t_dot, const T* k_dot, T* out_dot) {
  n.tangent(ctx, params, x_dot, t_dot, k_dot, out_dot);
};

// ---- models -----------------------------------------------------------------------------------

// What OdeSampler and generate call on a model: its backend, shapes and the guided velocity
//   velocity(out [B, sample], x [B, sample], t [B], k [B], y [B], B, guidance, weights)
// on the weight set `weights` (Role::Ema or Role::Param; a model that does not hold that set throws).
// No gradients, no optimiser state: InferenceModel<Net> (train/inference_model.hpp) is exactly this.
template <class M>
concept SamplingModel = requires {
  typename M::Backend;
  typename M::T;
} && ComputeBackend<typename M::Backend> && std::same_as<typename M::T, typename M::Backend::Scalar> &&
    requires(M& m, const M& cm, typename M::T* p, const typename M::T* cp, const int32_t* y, int B, typename M::T w,
             Role r) {
      { cm.backend() } -> std::same_as<typename M::Backend&>;
      { cm.sample_size() } -> std::convertible_to<int64_t>;
      { cm.num_classes() } -> std::convertible_to<int>;
      { cm.null_label() } -> std::convertible_to<int32_t>;
      m.velocity(p, cp, cp, cp, y, B, w, r);
    };

// A SamplingModel that can be trained: what SelfConsistencyLoss and Trainer call on a model
// (ShortcutModel<Net>): the network, the parameter arena (raw weights, gradients, EMA, moments), a
// training forward/backward and an evaluation context.
template <class M>
concept VelocityModel = SamplingModel<M> && requires { typename M::Network; } &&
    VelocityNetwork<typename M::Network> && std::same_as<typename M::Backend, typename M::Network::Backend> &&
    requires(M& m, const M& cm, typename M::T* p, const typename M::T* cp, const int32_t* y, int B) {
      { m.net() } -> std::same_as<typename M::Network&>;
      { cm.net() } -> std::same_as<const typename M::Network&>;
      { m.arena() } -> std::same_as<ParamArena<typename M::Backend>&>;
      { m.eval_context() } -> std::same_as<typename M::Network::Context&>;
      { m.forward(cp, cp, cp, y, B) } -> std::convertible_to<const typename M::T*>;
      m.backward(cp, p);
    };

// A VelocityModel whose network runs forward mode: the training forward with tangents
//   forward_tangent(x, t, k, y, B, x_dot, t_dot, k_dot) -> {out, out_dot}
// (ShortcutModel<Net> for a TangentNetwork Net). The average-velocity objectives (DESIGN.md §8) train it.
template <class M>
concept TangentModel = VelocityModel<M> && TangentNetwork<typename M::Network> &&
    requires(M& m, const typename M::T* p, const int32_t* y, int B) {
      { m.forward_tangent(p, p, p, y, B, p, p, p).out } -> std::convertible_to<const typename M::T*>;
      { m.forward_tangent(p, p, p, y, B, p, p, p).out_dot } -> std::convertible_to<const typename M::T*>;
    };

}  // namespace shortcut
