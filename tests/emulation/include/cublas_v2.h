// Emulation shim (tests/emulation): the cuBLAS subset the backend uses, checked and computed in double.
#pragma once
#include "emu/cublas.hpp"
