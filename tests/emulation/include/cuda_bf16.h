// Emulation shim (tests/emulation): __nv_bfloat16 and its conversions.
#pragma once
#include "emu/bf16.hpp"
