// The device memory of the CUDA backend's bf16 mode (cuda::Precision::bf16):
//
// WeightCopies: a bf16 copy beside each registered fp32 weight set (ParamArena registers its raw
//   and EMA weights through Backend::keep_weight_copy), so that a product reads 2 bytes per weight
//   and the conversion is not paid per call. The copy is kept exact = bf16(master) this way:
//   - AdamW and EMA update a fresh copy in the same pass as the master (the optimizer kernels'
//     `copy` argument);
//   - every other write the backend makes into a registered set (to_device: initialization and
//     checkpoint loads; copy: the EMA reset; fill) marks the copy stale, and the next product that
//     reads from the set converts the whole set once.
//   Writes that bypass the backend's ops are not seen: code that writes weights with its own kernels
//   or cudaMemcpy must call Backend::weights_written(p, n) afterwards.
// Scratch: bf16 operands of one op at a time (activations rounded as they enter a product or the
//   attention), one slot per operand of that op (A: the input, B: weights without a kept copy or
//   attention's output, C: dout, D: attention's dqkv), reused by the next op: the stream orders them.
#pragma once
#include <cuda_bf16.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/elementwise.cuh"
#include "shortcut/cuda/device_buffer.hpp"

namespace shortcut::cuda {

class WeightCopies {
 public:
  // Registers [p, p + n) (again: its copy is resized and marked stale).
  void keep(const float* p, size_t n) {
    if (!p || !n) return;
    drop(p);
    sets_.push_back(Set{p, n, DeviceBuffer<__nv_bfloat16>(n), false});
  }
  void drop(const float* p) {
    for (size_t i = 0; i < sets_.size(); ++i)
      if (sets_[i].master == p) {
        sets_.erase(sets_.begin() + std::ptrdiff_t(i));
        return;
      }
  }
  // Marks every set that [p, p + bytes) overlaps as stale.
  void written(const void* p, size_t bytes) {
    for (auto& s : sets_)
      if (overlaps(s, p, bytes)) stale(s);
  }
  // Marks every set stale (after a broken graph capture: its refreshes were recorded, never run).
  void all_written() {
    for (auto& s : sets_) stale(s);
  }
  // The bf16 copy of [p, p + n) for an update that writes exactly bf16 of the new masters into it, or
  // null (no set holds the range, or its copy is stale and stays so; a partial overlap makes it stale).
  __nv_bfloat16* copy_for_update(const float* p, size_t n) {
    for (auto& s : sets_) {
      if (contains(s, p, n)) return s.fresh ? s.copy.data() + (p - s.master) : nullptr;
      if (overlaps(s, p, n * sizeof(float))) stale(s);
    }
    return nullptr;
  }
  // The bf16 copy of [p, p + n) to read, refreshed first if stale; null where no set holds it.
  const __nv_bfloat16* read(const float* p, size_t n, cudaStream_t st) {
    for (auto& s : sets_)
      if (contains(s, p, n)) {
        if (!s.fresh) kernels::convert(s.copy.data(), s.master, s.n, st);
        s.fresh = true;
        return s.copy.data() + (p - s.master);
      }
    return nullptr;
  }

 private:
  struct Set {
    const float* master;
    size_t n;
    DeviceBuffer<__nv_bfloat16> copy;
    bool fresh;
  };
  std::vector<Set> sets_;

  static void stale(Set& s) { s.fresh = false; }

  static bool contains(const Set& s, const float* p, size_t n) {
    const auto a = reinterpret_cast<uintptr_t>(p), b = reinterpret_cast<uintptr_t>(s.master);
    return a >= b && a + n * sizeof(float) <= b + s.n * sizeof(float);
  }
  static bool overlaps(const Set& s, const void* p, size_t bytes) {
    const auto a = reinterpret_cast<uintptr_t>(p), b = reinterpret_cast<uintptr_t>(s.master);
    return a < b + s.n * sizeof(float) && b < a + bytes;
  }
};

// Growable device buffers by slot; what a slot held is gone at the next get of that slot.
class Scratch {
 public:
  enum Slot { A, B, C, D, kSlots };
  __nv_bfloat16* bf16(Slot s, size_t n) { return grow(b_[s], n); }
  float* f32(size_t n) { return grow(f_, n); }

 private:
  DeviceBuffer<__nv_bfloat16> b_[kSlots];
  DeviceBuffer<float> f_;
  template <class U>
  static U* grow(DeviceBuffer<U>& b, size_t n) {
    if (b.size() < n) b = DeviceBuffer<U>(n);
    return b.data();
  }
};

}  // namespace shortcut::cuda
