// Emulation shim (tests/emulation): the cuBLASLt subset the backend uses, checked and computed in double.
#pragma once
#include "emu/cublaslt.hpp"
