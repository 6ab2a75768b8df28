// placeholder
#include "gpu_test_util.hpp"
