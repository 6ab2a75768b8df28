// AdamW's bias correction, computed on the host in the backend's scalar type in one place: every
// backend's adamw_step and the recorded training step, which stages it for the device to read
// (train/training_step.hpp), then use the same bits.
#pragma once
#include <cmath>
#include <cstdint>

namespace shortcut {

// 1 - beta^step: the correction of a moment with decay beta after `step` updates.
template <class T>
T adamw_bias_correction(T beta, int64_t step) {
  return T(1) - std::pow(beta, T(step));
}

}  // namespace shortcut
