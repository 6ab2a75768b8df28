// Emulation shim (tests/emulation): the CUDA runtime API subset the kernels and the backend use.
#pragma once
#include "emu/runtime.hpp"
