// The GPU test program's entry point: where no CUDA device exists it checks that the backend says
// so ("no CUDA device") and exits 77, which CTest reports as Skipped (SKIP_RETURN_CODE), never as a
// pass; with a device it runs the Catch2 tests.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <string>

// Defined in device_test.cu (nvcc): constructs a CUDA backend and returns the error it throws, or
// an empty string if construction succeeded.
std::string cuda_backend_construction_error();

int main(int argc, char** argv) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    const std::string err = cuda_backend_construction_error();
    if (err.find("no CUDA device") == std::string::npos) {
      std::printf("FAILED: without a CUDA device the backend should throw 'no CUDA device', got '%s'\n", err.c_str());
      return 1;
    }
    std::printf("no CUDA device: GPU tests skipped (the backend reports: %s)\n", err.c_str());
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
