// Embedding kernels and their launchers: the sinusoidal features of t and of the step index k, the
// label table lookup and its gradient (a scatter-add with atomics, since several rows of a batch
// share a label), and the patch gather/scatter between images [B,H,W,C] and tokens [B,G*G,p*p*C]
// in either order of a patch's values (see shortcut::PatchOrder: channel-major is the conv weight's
// (c, row, col), channel-minor the final linear's (row, col, c)).
#pragma once
#include "kernels/common.cuh"

namespace shortcut::kernels {

// out[b, j] = cos(a f_j), out[b, half + j] = sin(a f_j); f_j = exp(-ln(10000) j / half), a = values[b]
template <class I, class T>
__global__ void timestep_embedding_kernel(T* out, const T* values, I total, int dim) {
  const int half = dim / 2;
  for (I i = I(global_thread()); i < total; i += I(grid_threads())) {
    const int b = int(i / I(half)), j = int(i % I(half));
    // same evaluation order as the CPU backend: (-ln(10000) * j) / half
    const float f = expf(-logf(10000.f) * float(j) / float(half));
    const float a = to_f32(values[b]) * f;
    out[size_t(b) * dim + j] = from_f32<T>(cosf(a));
    out[size_t(b) * dim + half + j] = from_f32<T>(sinf(a));
  }
}

// out[b, :] = table[ids[b], :]
template <class I, class T>
__global__ void embedding_forward_kernel(T* out, const T* table, const int32_t* ids, I total, int D) {
  for (I i = I(global_thread()); i < total; i += I(grid_threads())) {
    const I b = i / I(D), j = i % I(D);
    out[i] = table[size_t(ids[b]) * D + j];
  }
}

// dtable[ids[b], :] += dout[b, :]  (rows sharing a label add up through atomics)
template <class I, class T>
__global__ void embedding_backward_kernel(T* dtable, const T* dout, const int32_t* ids, I total, int D) {
  for (I i = I(global_thread()); i < total; i += I(grid_threads())) {
    const I b = i / I(D), j = i % I(D);
    atomicAdd(dtable + size_t(ids[b]) * D + j, dout[i]);
  }
}

// The one index map of both directions: token element ti <-> image element ii. The token's feature
// index is (c p + pr) p + pc (channel-major) or (pr p + pc) C + c (channel-minor).
struct PatchGeom {
  int B, H, W, C, p, G, Gw;
  bool channel_major;
  size_t tokens_total() const { return size_t(B) * G * Gw * p * p * C; }
  // I: the loop's index type (32-bit where the tokens fit, see by_index_width)
  template <class I>
  __device__ I image_of_token(I ti) const {
    const I P = I(p) * p * C;
    const int feat = int(ti % P);
    const I tok = ti / P;
    const int gc = int(tok % I(Gw)), gr = int((tok / I(Gw)) % I(G));
    const I b = tok / (I(G) * Gw);
    int c, pr, pc;
    if (channel_major) {
      pc = feat % p;
      pr = (feat / p) % p;
      c = feat / (p * p);
    } else {
      c = feat % C;
      pc = (feat / C) % p;
      pr = feat / (C * p);
    }
    return ((b * I(H) + I(gr) * p + pr) * W + I(gc) * p + pc) * C + c;
  }
};

// tokens[ti] = img[image_of_token(ti)]: writes coalesced, reads gathered
template <class I, class T>
__global__ void patch_gather_kernel(T* tokens, const T* img, PatchGeom g, I total) {
  for (I ti = I(global_thread()); ti < total; ti += I(grid_threads())) tokens[ti] = img[g.image_of_token(ti)];
}

// img[image_of_token(ti)] = tokens[ti]: a permutation, so every covered pixel is written once. As on
// the CPU, pixels past the last whole patch (H or W not a multiple of p) are left as they were.
template <class I, class T>
__global__ void patch_scatter_kernel(T* img, const T* tokens, PatchGeom g, I total) {
  for (I ti = I(global_thread()); ti < total; ti += I(grid_threads())) img[g.image_of_token(ti)] = tokens[ti];
}

// ---- launchers ---------------------------------------------------------------------------------
template <class T>
void timestep_embedding(T* out, const T* values, int B, int dim, cudaStream_t s) {
  const size_t total = size_t(B) * (dim / 2);
  if (!total) return;
  by_index_width(total, [&](auto i) {
    using I = decltype(i);
    launch("timestep_embedding_kernel", timestep_embedding_kernel<I, T>, blocks_for(total), kThreads, 0, s, out,
           values, I(total), dim);
  });
}
template <class T>
void embedding_forward(T* out, const T* table, const int32_t* ids, int B, int D, cudaStream_t s) {
  const size_t total = size_t(B) * D;
  if (!total) return;
  by_index_width(total, [&](auto i) {
    using I = decltype(i);
    launch("embedding_forward_kernel", embedding_forward_kernel<I, T>, blocks_for(total), kThreads, 0, s, out, table,
           ids, I(total), D);
  });
}
template <class T>
void embedding_backward(T* dtable, const T* dout, const int32_t* ids, int B, int D, cudaStream_t s) {
  const size_t total = size_t(B) * D;
  if (!total) return;
  by_index_width(total, [&](auto i) {
    using I = decltype(i);
    launch("embedding_backward_kernel", embedding_backward_kernel<I, T>, blocks_for(total), kThreads, 0, s, dtable,
           dout, ids, I(total), D);
  });
}
inline PatchGeom patch_geom(int B, int H, int W, int C, int p, bool channel_major) {
  return PatchGeom{B, H, W, C, p, H / p, W / p, channel_major};
}
// The index type covers the image (which may hold pixels past the last whole patch) as well as the tokens.
template <class T>
void patch_gather(T* tokens, const T* img, int B, int H, int W, int C, int p, bool channel_major, cudaStream_t s) {
  const PatchGeom g = patch_geom(B, H, W, C, p, channel_major);
  const size_t total = g.tokens_total();
  if (!total) return;
  by_index_width(size_t(B) * H * W * C, [&](auto i) {
    using I = decltype(i);
    launch("patch_gather_kernel", patch_gather_kernel<I, T>, blocks_for(total), kThreads, 0, s, tokens, img, g,
           I(total));
  });
}
template <class T>
void patch_scatter(T* img, const T* tokens, int B, int H, int W, int C, int p, bool channel_major, cudaStream_t s) {
  const PatchGeom g = patch_geom(B, H, W, C, p, channel_major);
  const size_t total = g.tokens_total();
  if (!total) return;
  by_index_width(size_t(B) * H * W * C, [&](auto i) {
    using I = decltype(i);
    launch("patch_scatter_kernel", patch_scatter_kernel<I, T>, blocks_for(total), kThreads, 0, s, img, tokens, g,
           I(total));
  });
}

}  // namespace shortcut::kernels
