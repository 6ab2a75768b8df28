// The arithmetic of the CUDA backend's matrix products and attention (cuda::Options::precision).
// Host-only: command-line code compiled without nvcc parses and names it.
//
//   fp32  fp32 operands, full fp32 products (CUBLAS_COMPUTE_32F); the tests' fp32 tolerances hold
//   tf32  fp32 storage, products on the TF32 matrix units (about 3e-4 relative error)
//   bf16  mixed precision: the products and attention read bf16 copies of their operands (weights
//         kept as bf16 copies beside the fp32 masters, activations rounded as they enter), on the
//         bf16 tensor cores with fp32 accumulation and fp32 results; everything else (LayerNorm
//         statistics, softmax, targets, losses, reductions, AdamW, EMA) stays fp32 and so does every
//         buffer the networks see: checkpoints are unchanged. About 4e-3 relative error per product.
#pragma once
#include <string>

#include "shortcut/core/error.hpp"

namespace shortcut::cuda {

enum class Precision { fp32, tf32, bf16 };
inline constexpr Precision kPrecisions[] = {Precision::fp32, Precision::tf32, Precision::bf16};

inline const char* precision_name(Precision p) {
  switch (p) {
    case Precision::tf32: return "tf32";
    case Precision::bf16: return "bf16";
    default: return "fp32";
  }
}
inline Precision parse_precision(const std::string& s) {
  for (Precision p : kPrecisions)
    if (s == precision_name(p)) return p;
  throw ConfigError(cat("unknown precision '", s, "' (expected fp32, tf32 or bf16)"));
}

}  // namespace shortcut::cuda
