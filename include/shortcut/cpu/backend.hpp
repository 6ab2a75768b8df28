// The CPU reference backend: every op the networks and the training method need, on host memory,
// with Eigen for the matrix products (multithreaded through OpenMP where it is enabled). Templated
// on the scalar so that float runs the examples and double runs the finite-difference checks.
//
// Threads: an op uses one thread per kWorkPerThread of work, at most BackendOptions::threads (default
// OpenMP's count). A parallel region ends in a barrier, and where another process competes for the
// cores a descheduled thread holds that barrier for a scheduler time slice (milliseconds) while
// OpenMP's idle threads spin (libgomp's default wait policy, fixed when the program starts): small
// ops in parallel made a 2-core machine with one busy neighbour train 3-20x slower than one thread.
//
// Conventions shared with the CUDA backend (kernels/ and shortcut/cuda/backend.hpp):
//  - all tensors row-major, raw pointers, shapes in the comments;
//  - parameter gradients accumulate (+=), activation gradients overwrite (=) unless the name or a
//    flag says otherwise (the residual stream's dx accumulates);
//  - adaLN modulation vectors (shift, scale, gate) are read from the rows of the modulation output,
//    one row of `mod_stride` values per sample.
#pragma once
#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>
#include <vector>

#include "shortcut/core/bias_correction.hpp"
#include "shortcut/core/concepts.hpp"
#include "shortcut/core/error.hpp"
#include "shortcut/core/patch_order.hpp"
#include "shortcut/core/rng.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace shortcut {

namespace cpu {

struct BackendOptions {
  // The most threads one op may use; 0: OpenMP's count (OMP_NUM_THREADS, else every core). 1 suits
  // a machine whose cores other processes keep busy.
  int threads = 0;
};

// Buffers start on a 64-byte boundary: Eigen's vectorised loops (AVX-512 under -march=native) peel
// off a different head depending on a pointer's alignment, which changes the summation order. With
// every buffer aligned alike, the same computation gives the same bits wherever its memory lies
// (exact resume depends on it), and the vector loads are aligned.
template <class U>
struct AlignedAllocator {
  using value_type = U;
  static constexpr std::align_val_t kAlign{64};
  AlignedAllocator() noexcept = default;
  template <class V>
  AlignedAllocator(const AlignedAllocator<V>&) noexcept {}
  U* allocate(size_t n) { return static_cast<U*>(::operator new(n * sizeof(U), kAlign)); }
  void deallocate(U* p, size_t) noexcept { ::operator delete(p, kAlign); }
  template <class V>
  bool operator==(const AlignedAllocator<V>&) const noexcept { return true; }
};

template <class T>
class Backend {
 public:
  using Scalar = T;
  template <class U>
  using Buffer = std::vector<U, AlignedAllocator<U>>;
  static constexpr bool host_memory = true;  // Buffer memory is the host's (dist/reduce_buffer.hpp)
  static constexpr const char* name() { return "cpu"; }

  Backend() = default;
  explicit Backend(const BackendOptions& opt) : opt_(opt) {
    if (opt.threads < 0) throw ConfigError(cat("cpu::BackendOptions::threads must be >= 0, got ", opt.threads));
  }
  const BackendOptions& options() const { return opt_; }

  template <class U>
  void to_device(U* dst, const U* src, size_t n) const { if (n) std::memcpy(dst, src, n * sizeof(U)); }
  template <class U>
  void to_host(U* dst, const U* src, size_t n) const { if (n) std::memcpy(dst, src, n * sizeof(U)); }
  template <class U>
  void copy(U* dst, const U* src, size_t n) const { if (n) std::memmove(dst, src, n * sizeof(U)); }
  void fill(T* p, T v, size_t n) const { std::fill(p, p + n, v); }
  void synchronize() const {}

  // ---- matrix products ----------------------------------------------------------------------
  // out[N,O] = in[N,I] W[O,I]^T + b[O]  (b may be null)
  void linear_forward(T* out, const T* in, const T* W, const T* b, int N, int I, int O) const {
    product_rows(N, double(N) * I * O, [&](int r0, int r1) {
      MapM o(out + size_t(r0) * O, r1 - r0, O);
      o.noalias() = CMapM(in + size_t(r0) * I, r1 - r0, I) * CMapM(W, O, I).transpose();
      if (b) o.rowwise() += CMapV(b, O);
    });
  }
  // din[N,I] (= or += with accumulate; null skips) = dout W; dW[O,I] += dout^T in; db[O] += sum dout
  void linear_backward(T* din, T* dW, T* db, const T* dout, const T* in, const T* W, int N, int I, int O,
                       bool accumulate_din = false) const {
    const double work = double(N) * I * O;
    CMapM g(dout, N, O);
    if (din)
      product_rows(N, work, [&](int r0, int r1) {
        MapM d(din + size_t(r0) * I, r1 - r0, I);
        if (accumulate_din) d.noalias() += g.middleRows(r0, r1 - r0) * CMapM(W, O, I);
        else d.noalias() = g.middleRows(r0, r1 - r0) * CMapM(W, O, I);
      });
    if (dW)
      product_rows(O, work, [&](int r0, int r1) {
        MapM(dW + size_t(r0) * I, r1 - r0, I).noalias() += g.middleCols(r0, r1 - r0).transpose() * CMapM(in, N, I);
      });
    if (db) MapV(db, O) += g.colwise().sum();
  }
  // A linear layer and GELU: a[N,O] = in W^T + b (kept for the backward), g = GELU(a). The CUDA
  // backend's bf16 mode runs it as one product with a GELU epilogue.
  void linear_gelu_forward(T* g, T* a, const T* in, const T* W, const T* b, int N, int I, int O) const {
    linear_forward(a, in, W, b, N, I, O);
    gelu_forward(g, a, size_t(N) * size_t(O));
  }
  // The backward of out = GELU(a) W^T + b, whose input in = GELU(a): da[N,I] = (dout W) * GELU'(a)
  // (written), dW[O,I] += dout^T in, db[O] += sum dout.
  void gelu_linear_backward(T* da, T* dW, T* db, const T* dout, const T* in, const T* a, const T* W, int N, int I,
                            int O) const {
    linear_backward(da, dW, db, dout, in, W, N, I, O);
    gelu_backward(da, da, a, size_t(N) * size_t(I));
  }

  // ---- elementwise -------------------------------------------------------------------------
  // The transcendental loops run on Eigen arrays (vectorised exp / tanh; libm's scalar tanhf was a
  // quarter of a small MLP's CPU step), in fixed chunks so that the bits do not depend on threads.
  void silu_forward(T* out, const T* in, size_t n) const {
    chunked(n, [&](size_t o, size_t m) {
      CMapA x(in + o, m);
      MapA(out + o, m) = x / (T(1) + (-x).exp());
    });
  }
  void silu_backward(T* din, const T* dout, const T* in, size_t n) const {
    chunked(n, [&](size_t o, size_t m) {
      CMapA x(in + o, m);
      ArrayT s = T(1) / (T(1) + (-x).exp());
      MapA(din + o, m) = CMapA(dout + o, m) * s * (T(1) + x * (T(1) - s));
    });
  }
  // GELU, tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
  void gelu_forward(T* out, const T* in, size_t n) const {
    chunked(n, [&](size_t o, size_t m) {
      CMapA x(in + o, m);
      MapA(out + o, m) = T(0.5) * x * (T(1) + (kGeluC * (x + T(0.044715) * x.cube())).tanh());
    });
  }
  void gelu_backward(T* din, const T* dout, const T* in, size_t n) const {
    chunked(n, [&](size_t o, size_t m) {
      CMapA x(in + o, m);
      ArrayT th = (kGeluC * (x + T(0.044715) * x.cube())).tanh();
      MapA(din + o, m) = CMapA(dout + o, m) * (T(0.5) * (T(1) + th) + T(0.5) * x * (T(1) - th.square()) * kGeluC *
                                                                          (T(1) + T(3 * 0.044715) * x.square()));
    });
  }
  void add_inplace(T* y, const T* x, size_t n) const { for (size_t i = 0; i < n; ++i) y[i] += x[i]; }
  // y += a x
  void axpy(T* y, T a, const T* x, size_t n) const { for (size_t i = 0; i < n; ++i) y[i] += a * x[i]; }
  // x[b, :] += row[:] for b < B  (the fixed position embedding)
  void add_rows(T* x, const T* row, int B, int R) const {
    for (int b = 0; b < B; ++b) MapV(x + size_t(b) * R, R) += CMapV(row, R);
  }

  // ---- LayerNorm (no affine, eps) + adaLN modulate ------------------------------------------
  // x, out [B,T,D]; mean, rstd [B*T]; shift/scale: row b at shift + b*mod_stride
  void ln_modulate_forward(T* out, T* mean, T* rstd, const T* x, const T* shift, const T* scale, int mod_stride,
                           int B, int Tn, int D, T eps) const {
    const int nt = team(double(size_t(B) * Tn * D));
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t r = 0; r < int64_t(B) * Tn; ++r) {
      const T* xr = x + r * D;
      T* o = out + r * D;
      const T* sh = shift + (r / Tn) * mod_stride;
      const T* sc = scale + (r / Tn) * mod_stride;
      T m = 0;
      for (int j = 0; j < D; ++j) m += xr[j];
      m /= D;
      T v = 0;
      for (int j = 0; j < D; ++j) v += (xr[j] - m) * (xr[j] - m);
      v /= D;
      T rs = T(1) / std::sqrt(v + eps);
      mean[r] = m;
      rstd[r] = rs;
      for (int j = 0; j < D; ++j) o[j] = (xr[j] - m) * rs * (T(1) + sc[j]) + sh[j];
    }
  }
  // dx += d/dx; dshift[b] += sum_t dout; dscale[b] += sum_t dout * xhat (same stride as mod)
  void ln_modulate_backward(T* dx, T* dshift, T* dscale, const T* dout, const T* x, const T* mean, const T* rstd,
                            const T* scale, int mod_stride, int B, int Tn, int D) const {
    const int nt = team(double(size_t(B) * Tn * D));
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int b = 0; b < B; ++b) {
      const T* sc = scale + size_t(b) * mod_stride;
      T* dsh = dshift + size_t(b) * mod_stride;
      T* dsc = dscale + size_t(b) * mod_stride;
      for (int t = 0; t < Tn; ++t) {
        size_t r = size_t(b) * Tn + t;
        const T* xr = x + r * D;
        const T* g = dout + r * D;
        T* d = dx + r * D;
        T m = mean[r], rs = rstd[r];
        T s1 = 0, s2 = 0;
        for (int j = 0; j < D; ++j) {
          T xh = (xr[j] - m) * rs;
          T dxh = g[j] * (T(1) + sc[j]);
          s1 += dxh;
          s2 += dxh * xh;
          dsh[j] += g[j];
          dsc[j] += g[j] * xh;
        }
        s1 /= D;
        s2 /= D;
        for (int j = 0; j < D; ++j) {
          T xh = (xr[j] - m) * rs;
          d[j] += rs * (g[j] * (T(1) + sc[j]) - s1 - xh * s2);
        }
      }
    }
  }
  // x[B,T,D] += gate[b] * y
  void gated_residual_forward(T* x, const T* gate, const T* y, int mod_stride, int B, int Tn, int D) const {
    const int nt = team(double(size_t(B) * Tn * D));
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t r = 0; r < int64_t(B) * Tn; ++r) {
      const T* g = gate + (r / Tn) * mod_stride;
      for (int j = 0; j < D; ++j) x[r * D + j] += g[j] * y[r * D + j];
    }
  }
  // dy = gate * dx (overwrite); dgate[b] += sum_t dx * y
  void gated_residual_backward(T* dy, T* dgate, const T* dx, const T* gate, const T* y, int mod_stride, int B,
                               int Tn, int D) const {
    const int nt = team(double(size_t(B) * Tn * D));
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int b = 0; b < B; ++b) {
      const T* g = gate + size_t(b) * mod_stride;
      T* dg = dgate + size_t(b) * mod_stride;
      for (int t = 0; t < Tn; ++t) {
        size_t r = size_t(b) * Tn + t;
        for (int j = 0; j < D; ++j) {
          dy[r * D + j] = g[j] * dx[r * D + j];
          dg[j] += dx[r * D + j] * y[r * D + j];
        }
      }
    }
  }

  // ---- attention ----------------------------------------------------------------------------
  // qkv [B,T,3D] (q | k | v, each D = H*hd, head h at columns h*hd), out [B,T,D], lse [B,H,T]
  void attention_forward(T* out, T* lse, const T* qkv, int B, int Tn, int H, int hd, T scale) const {
    const int D = H * hd;
    const SerialEigen serial;  // the per-head products: parallel over heads, or not at all
    const int nt = team(double(size_t(B) * Tn * Tn * H) * hd);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int bh = 0; bh < B * H; ++bh) {
      int b = bh / H, h = bh % H;
      const T* base = qkv + size_t(b) * Tn * 3 * D + h * hd;
      SMapC Q(base, Tn, hd, Eigen::OuterStride<>(3 * D)), K(base + D, Tn, hd, Eigen::OuterStride<>(3 * D)),
          V(base + 2 * D, Tn, hd, Eigen::OuterStride<>(3 * D));
      Mat S = (Q * K.transpose()) * scale;
      T* l = lse + size_t(bh) * Tn;
      for (int i = 0; i < Tn; ++i) {
        T mx = S.row(i).maxCoeff();
        S.row(i) = (S.row(i).array() - mx).exp().matrix();
        T s = S.row(i).sum();
        S.row(i) /= s;
        l[i] = mx + std::log(s);
      }
      SMap O(out + size_t(b) * Tn * D + h * hd, Tn, hd, Eigen::OuterStride<>(D));
      O.noalias() = S * V;
    }
  }
  // dqkv [B,T,3D] overwritten; recomputes the probabilities from lse (nothing T x T is stored)
  void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const T* lse, int B, int Tn, int H,
                          int hd, T scale) const {
    const int D = H * hd;
    const SerialEigen serial;
    const int nt = team(double(size_t(B) * Tn * Tn * H) * hd);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int bh = 0; bh < B * H; ++bh) {
      int b = bh / H, h = bh % H;
      const T* base = qkv + size_t(b) * Tn * 3 * D + h * hd;
      T* dbase = dqkv + size_t(b) * Tn * 3 * D + h * hd;
      SMapC Q(base, Tn, hd, Eigen::OuterStride<>(3 * D)), K(base + D, Tn, hd, Eigen::OuterStride<>(3 * D)),
          V(base + 2 * D, Tn, hd, Eigen::OuterStride<>(3 * D));
      SMapC dO(dout + size_t(b) * Tn * D + h * hd, Tn, hd, Eigen::OuterStride<>(D));
      SMapC O(out + size_t(b) * Tn * D + h * hd, Tn, hd, Eigen::OuterStride<>(D));
      const T* l = lse + size_t(bh) * Tn;
      Mat P = (Q * K.transpose()) * scale;
      for (int i = 0; i < Tn; ++i) P.row(i) = (P.row(i).array() - l[i]).exp().matrix();
      Mat dP = dO * V.transpose();
      for (int i = 0; i < Tn; ++i) {
        T di = dO.row(i).dot(O.row(i));
        dP.row(i) = (P.row(i).array() * (dP.row(i).array() - di)).matrix();
      }
      SMap dQ(dbase, Tn, hd, Eigen::OuterStride<>(3 * D)), dK(dbase + D, Tn, hd, Eigen::OuterStride<>(3 * D)),
          dV(dbase + 2 * D, Tn, hd, Eigen::OuterStride<>(3 * D));
      dQ.noalias() = (dP * K) * scale;
      dK.noalias() = (dP.transpose() * Q) * scale;
      dV.noalias() = P.transpose() * dO;
    }
  }

  // ---- forward mode (tangents, DESIGN.md §8) -------------------------------------------------
  // x[r, :] *= s[r]   x [rows, n], s [rows]
  void scale_rows(T* x, const T* s, int rows, int n) const {
    for (int r = 0; r < rows; ++r) MapV(x + size_t(r) * n, n) *= s[r];
  }
  // The tangent of ln_modulate_forward. With n = (x - mean) rstd, the LayerNorm's Jacobian applied to
  // x_dot is rstd (x_dot - mean_j x_dot - n mean_j(n x_dot)); the modulation adds the conditioning's
  // tangents: h_dot = J x_dot (1 + scale) + n scale_dot + shift_dot. x, x_dot, h_dot [B,T,D]; mean,
  // rstd [B*T] from the forward; scale, shift_dot, scale_dot: row b at + b*mod_stride.
  void ln_modulate_tangent(T* h_dot, const T* x, const T* x_dot, const T* mean, const T* rstd, const T* scale,
                           const T* shift_dot, const T* scale_dot, int mod_stride, int B, int Tn, int D) const {
    const int nt = team(double(size_t(B) * Tn * D));
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t r = 0; r < int64_t(B) * Tn; ++r) {
      const T* xr = x + r * D;
      const T* xd = x_dot + r * D;
      const size_t mrow = size_t(r / Tn) * mod_stride;
      const T m = mean[r], rs = rstd[r];
      T s1 = 0, s2 = 0;
      for (int j = 0; j < D; ++j) {
        s1 += xd[j];
        s2 += (xr[j] - m) * rs * xd[j];
      }
      s1 /= D;
      s2 /= D;
      for (int j = 0; j < D; ++j) {
        const T n = (xr[j] - m) * rs;
        h_dot[r * D + j] = rs * (xd[j] - s1 - n * s2) * (T(1) + scale[mrow + j]) + n * scale_dot[mrow + j] +
                           shift_dot[mrow + j];
      }
    }
  }
  // The tangent of attention_forward (DESIGN.md §8): with S = scale Q K^T, P = softmax(S) and
  // S_dot = scale (Q_dot K^T + Q K_dot^T),  out_dot = P V_dot + (P o S_dot) V - rowsum(P o S_dot) o O.
  // P comes back from the forward's lse, a block of kTangentRows query rows at a time, so nothing
  // T x T is held (the flash-style form the kernels take). qkv, qkv_dot [B,T,3D]; out, out_dot [B,T,D].
  void attention_tangent(T* out_dot, const T* qkv, const T* qkv_dot, const T* out, const T* lse, int B, int Tn,
                         int H, int hd, T scale) const {
    constexpr int kTangentRows = 64;
    const int D = H * hd;
    const SerialEigen serial;
    const int nt = team(double(size_t(B) * Tn * Tn * H) * hd);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int bh = 0; bh < B * H; ++bh) {
      const int b = bh / H, h = bh % H;
      const size_t off = size_t(b) * Tn * 3 * D + h * hd;
      const Eigen::OuterStride<> s3(3 * D), s1(D);
      SMapC Q(qkv + off, Tn, hd, s3), K(qkv + off + D, Tn, hd, s3), V(qkv + off + 2 * D, Tn, hd, s3);
      SMapC Qd(qkv_dot + off, Tn, hd, s3), Kd(qkv_dot + off + D, Tn, hd, s3), Vd(qkv_dot + off + 2 * D, Tn, hd, s3);
      SMapC O(out + size_t(b) * Tn * D + h * hd, Tn, hd, s1);
      SMap Od(out_dot + size_t(b) * Tn * D + h * hd, Tn, hd, s1);
      const T* l = lse + size_t(bh) * Tn;
      for (int i0 = 0; i0 < Tn; i0 += kTangentRows) {
        const int rows = std::min(kTangentRows, Tn - i0);
        Mat P = (Q.middleRows(i0, rows) * K.transpose()) * scale;
        for (int i = 0; i < rows; ++i) P.row(i) = (P.row(i).array() - l[i0 + i]).exp().matrix();
        Mat PS = (Qd.middleRows(i0, rows) * K.transpose() + Q.middleRows(i0, rows) * Kd.transpose()) * scale;
        PS = (P.array() * PS.array()).matrix();
        auto od = Od.middleRows(i0, rows);
        od.noalias() = P * Vd;
        od.noalias() += PS * V;
        for (int i = 0; i < rows; ++i) od.row(i) -= PS.row(i).sum() * O.row(i0 + i);
      }
    }
  }

  // ---- embeddings -------------------------------------------------------------------------
  // out[B, dim] = [cos(a f_j) | sin(a f_j)], f_j = exp(-ln(10000) j / (dim/2)), a = values[b]
  void timestep_embedding(T* out, const T* values, int B, int dim) const {
    const int half = dim / 2;
    for (int b = 0; b < B; ++b)
      for (int j = 0; j < half; ++j) {
        T f = std::exp(-std::log(T(10000)) * T(j) / T(half));
        T a = values[b] * f;
        out[size_t(b) * dim + j] = std::cos(a);
        out[size_t(b) * dim + half + j] = std::sin(a);
      }
  }
  // out[B,D] = table[ids[b]]
  void embedding_forward(T* out, const T* table, const int32_t* ids, int B, int D) const {
    for (int b = 0; b < B; ++b) std::memcpy(out + size_t(b) * D, table + size_t(ids[b]) * D, D * sizeof(T));
  }
  // dtable[ids[b]] += dout[b]
  void embedding_backward(T* dtable, const T* dout, const int32_t* ids, int B, int D) const {
    for (int b = 0; b < B; ++b) MapV(dtable + size_t(ids[b]) * D, D) += CMapV(dout + size_t(b) * D, D);
  }
  // tokens[B, G*G, p*p*C] <- img[B,H,W,C] (G = H/p, square images)
  void patch_gather(T* tokens, const T* img, int B, int H, int W, int C, int p, PatchOrder order) const {
    patch_loop(B, H, W, C, p, order, [&](size_t ti, size_t ii) { tokens[ti] = img[ii]; });
  }
  // img[B,H,W,C] <- tokens (overwrite; a bijection, so it is also the adjoint of patch_gather)
  void patch_scatter(T* img, const T* tokens, int B, int H, int W, int C, int p, PatchOrder order) const {
    patch_loop(B, H, W, C, p, order, [&](size_t ti, size_t ii) { img[ii] = tokens[ti]; });
  }

  // ---- training targets -------------------------------------------------------------------
  // x0 <- standard normals number [first, first + n) of (seed, stream); `first` lets a data-parallel
  // rank draw its rows of a batch's noise without drawing the rest
  void normal(T* x0, size_t n, uint64_t seed, uint64_t stream, uint64_t first = 0) const {
    for (size_t i = 0; i < n; ++i) x0[i] = T(philox_normal(seed, stream, first + i));
  }
  // xt = (1 - (1 - 1e-5) t) x0 + t x1; target (if not null) = x1 - (1 - 1e-5) x0   [rows, n]
  void flow_rows(T* xt, T* target, const T* x1, const T* x0, const T* t, int rows, int n) const {
    const T a = T(1) - T(1e-5);
    for (int r = 0; r < rows; ++r)
      for (int j = 0; j < n; ++j) {
        size_t i = size_t(r) * n + j;
        xt[i] = (T(1) - a * t[r]) * x0[i] + t[r] * x1[i];
        if (target) target[i] = x1[i] - a * x0[i];
      }
  }
  // v1 = guided velocity (rows < n_cfg: vu + w (vc - vu); others: vc); x2 = clip(x + hd[r] v1)
  void bootstrap_half_step(T* x2, T* v1, const T* x, const T* vc, const T* vu, int n_cfg, T w, const T* hd, int rows,
                           int n, T clip) const {
    for (int r = 0; r < rows; ++r)
      for (int j = 0; j < n; ++j) {
        size_t i = size_t(r) * n + j;
        T v = r < n_cfg ? vu[i] + w * (vc[i] - vu[i]) : vc[i];
        v1[i] = v;
        x2[i] = std::clamp(x[i] + hd[r] * v, -clip, clip);
      }
  }
  // target = clip((v1 + guided(vc2, vu2)) / 2)
  void bootstrap_target(T* target, const T* v1, const T* vc, const T* vu, int n_cfg, T w, int rows, int n,
                        T clip) const {
    for (int r = 0; r < rows; ++r)
      for (int j = 0; j < n; ++j) {
        size_t i = size_t(r) * n + j;
        T v2 = r < n_cfg ? vu[i] + w * (vc[i] - vu[i]) : vc[i];
        target[i] = std::clamp((v1[i] + v2) * T(0.5), -clip, clip);
      }
  }
  // target = (xp + (1 - tp[r]) v - xt) / (1 - t[r]): the velocity from x_t at t to the endpoint that
  // the model predicts from the later point xp at tp (the consistency objectives, DESIGN.md §7)
  void consistency_target(T* target, const T* xt, const T* xp, const T* v, const T* t, const T* tp, int rows,
                          int n) const {
    for (int r = 0; r < rows; ++r)
      for (int j = 0; j < n; ++j) {
        size_t i = size_t(r) * n + j;
        target[i] = (xp[i] + (T(1) - tp[r]) * v[i] - xt[i]) / (T(1) - t[r]);
      }
  }
  // out = vu + w (vc - vu)
  void cfg_combine(T* out, const T* vc, const T* vu, T w, size_t n) const {
    for (size_t i = 0; i < n; ++i) out[i] = vu[i] + w * (vc[i] - vu[i]);
  }
  // row_loss[r] = mean_j (pred - target)^2; grad = grad_scale * 2 (pred - target) / n
  void mse_loss(T* grad, T* row_loss, const T* pred, const T* target, int rows, int n, T grad_scale) const {
    for (int r = 0; r < rows; ++r) {
      T s = 0;
      for (int j = 0; j < n; ++j) {
        size_t i = size_t(r) * n + j;
        T e = pred[i] - target[i];
        s += e * e;
        if (grad) grad[i] = grad_scale * T(2) * e / T(n);
      }
      row_loss[r] = s / T(n);
    }
  }

  // ---- optimizer --------------------------------------------------------------------------
  // AdamW as torch.optim.AdamW: decoupled decay p -= lr wd p, then the bias-corrected Adam step.
  void adamw_step(T* p, const T* g, T* m, T* v, size_t n, T lr, T b1, T b2, T eps, T wd, int64_t step) const {
    adamw_update(p, g, m, v, n, lr, b1, b2, eps, wd, adamw_bias_correction(b1, step), adamw_bias_correction(b2, step));
  }
  // ema = tau ema + (1 - tau) p
  void ema_update(T* ema, const T* p, T tau, size_t n) const {
    const int nt = team(double(n));
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t i = 0; i < int64_t(n); ++i) ema[i] = tau * ema[i] + (T(1) - tau) * p[i];
  }

 private:
  // c1, c2: the bias corrections (core/bias_correction.hpp)
  void adamw_update(T* p, const T* g, T* m, T* v, size_t n, T lr, T b1, T b2, T eps, T wd, T c1, T c2) const {
    const int nt = team(double(n));
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t i = 0; i < int64_t(n); ++i) {
      p[i] -= lr * wd * p[i];
      m[i] = b1 * m[i] + (T(1) - b1) * g[i];
      v[i] = b2 * v[i] + (T(1) - b2) * g[i] * g[i];
      p[i] -= lr * (m[i] / c1) / (std::sqrt(v[i] / c2) + eps);
    }
  }
  using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using RowV = Eigen::Matrix<T, 1, Eigen::Dynamic>;
  using MapM = Eigen::Map<Mat>;
  using CMapM = Eigen::Map<const Mat>;
  using MapV = Eigen::Map<RowV>;
  using CMapV = Eigen::Map<const RowV>;
  using SMap = Eigen::Map<Mat, 0, Eigen::OuterStride<>>;
  using SMapC = Eigen::Map<const Mat, 0, Eigen::OuterStride<>>;
  using ArrayT = Eigen::Array<T, Eigen::Dynamic, 1>;
  using MapA = Eigen::Map<ArrayT>;
  using CMapA = Eigen::Map<const ArrayT>;
  static constexpr T kGeluC = T(0.7978845608028654);  // sqrt(2 / pi)
  // f(offset, count) over [0, n) in chunks of kChunk (a multiple of every vector width), on the
  // OpenMP threads when n is large: each element's arithmetic is the same whatever the thread count.
  static constexpr size_t kChunk = 4096;
  template <class F>
  void chunked(size_t n, F&& f) const {
    const int64_t chunks = int64_t((n + kChunk - 1) / kChunk);
    const int nt = team(double(n));
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t c = 0; c < chunks; ++c) {
      const size_t o = size_t(c) * kChunk;
      f(o, std::min(kChunk, n - o));
    }
  }
  // One thread per this much work (multiply-adds, or elements of a loop): tenths of a millisecond of
  // a core's products, milliseconds of a loop, so that the barrier's cost stays small beside the op
  // (see the top). The memory-bound elementwise loops thus stay on one thread at the networks' sizes.
  static constexpr double kWorkPerThread = double(1 << 23);
  int team(double work) const {
#ifdef _OPENMP
    const int most = opt_.threads > 0 ? opt_.threads : omp_get_max_threads();
    return int(std::clamp(work / kWorkPerThread, 1.0, double(std::max(most, 1))));
#else
    (void)work;
    return 1;
#endif
  }
  // A matrix product by output rows: f(r0, r1) computes rows [r0, r1) with Eigen on one thread.
  // Several threads take blocks of rows cut at multiples of kRowGrain, a multiple of every row panel
  // of Eigen's kernels, so each row is computed as on one thread: the bits do not depend on the thread
  // count. Not Eigen's own parallel product: its threads spin-wait on each other inside (where a
  // thread is descheduled the others spin through its time slice), and its k-blocking, hence the
  // rounding, depends on the thread count.
  static constexpr int kRowGrain = 96;
  template <class F>
  void product_rows(int rows, double work, F&& f) const {
    const SerialEigen serial;
    const int nt = std::min(team(work), rows / kRowGrain);
    if (nt <= 1) {
      f(0, rows);
      return;
    }
    const int grains = rows / kRowGrain;
    auto cut = [&](int i) { return i == nt ? rows : grains * i / nt * kRowGrain; };
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int i = 0; i < nt; ++i) f(cut(i), cut(i + 1));
  }
  // Eigen's products take their thread count from omp_get_max_threads() of the calling thread
  // (unless the program called Eigen::setNbThreads): one, while in scope.
  struct SerialEigen {
#ifdef _OPENMP
    int saved = omp_get_max_threads();
    SerialEigen() { omp_set_num_threads(1); }
    ~SerialEigen() { omp_set_num_threads(saved); }
#else
    SerialEigen() = default;
#endif
    SerialEigen(const SerialEigen&) = delete;
    SerialEigen& operator=(const SerialEigen&) = delete;
  };
  BackendOptions opt_;

  template <class F>
  static void patch_loop(int B, int H, int W, int C, int p, PatchOrder order, F&& f) {
    const int G = H / p, Gw = W / p, P = p * p * C;
    for (int b = 0; b < B; ++b)
      for (int gr = 0; gr < G; ++gr)
        for (int gc = 0; gc < Gw; ++gc)
          for (int pr = 0; pr < p; ++pr)
            for (int pc = 0; pc < p; ++pc)
              for (int c = 0; c < C; ++c) {
                int feat = order == PatchOrder::ChannelMajor ? (c * p + pr) * p + pc : (pr * p + pc) * C + c;
                size_t ti = (size_t(b) * G * Gw + gr * Gw + gc) * P + feat;
                size_t ii = ((size_t(b) * H + gr * p + pr) * W + gc * p + pc) * C + c;
                f(ti, ii);
              }
  }
};

}  // namespace cpu

// The reference offers every op of the contract with exactly its signature (core/concepts.hpp).
static_assert(ComputeBackend<cpu::Backend<float>>, "cpu::Backend<float> must offer every op of ComputeBackend");
static_assert(ComputeBackend<cpu::Backend<double>>, "cpu::Backend<double> must offer every op of ComputeBackend");
static_assert(ForwardModeBackend<cpu::Backend<float>> && ForwardModeBackend<cpu::Backend<double>>,
              "cpu::Backend must offer the forward-mode ops");

}  // namespace shortcut
