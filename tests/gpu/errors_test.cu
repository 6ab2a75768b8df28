// What a user meets when a launch or a library call is wrong: the launch checks (block size, dynamic
// shared memory above 48 KB without the opt-in, above the sm_90 limit), cuBLAS's argument checks,
// and how a fault inside a kernel is reported (late, naming the kernels that may have caused it).
// The cases in the first half hold on a GPU as in the emulation. Those tagged [emulation] test the
// emulator's own checks (a barrier not reached by every thread, a warp collective with a bad mask,
// a host pointer passed to a kernel, a misaligned vector load, reading never-written memory, a copy read before its stream was
// waited for); those tagged [.fault] leave the device faulted (sticky), so each runs in a process of
// its own (tests/gpu/CMakeLists.txt registers them one by one).
#include <cstring>

#include "gpu_test_util.hpp"
#include "kernels/mma.cuh"

using namespace shortcut;
using namespace gputest;

namespace errtest {

template <class T>
__global__ void write_index_kernel(T* out, int n) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) out[i] = T(i);
}

// Every thread writes its slot of dynamic shared memory, then (after the barrier) reads its neighbour's.
template <class T>
__global__ void smem_rotate_kernel(T* out, int n) {
  SHORTCUT_DYNAMIC_SMEM(float, s);
  const int t = int(threadIdx.x);
  s[t] = float(t);
  __syncthreads();
  if (t < n) out[t] = T(s[(t + 1) % blockDim.x]);
}

// A 16-byte vector load one element past an aligned address.
template <class T>
__global__ void misaligned_load_kernel(const T* in, T* out) {
  const auto pk = kernels::load_pack<4>(in + 1);
  out[threadIdx.x] = pk.v[0];
}

template <class T>
__global__ void trap_kernel(T* out) {
  if (threadIdx.x == 3) __trap();
  out[threadIdx.x] = T(1);
}

// Threads 0..15 return early; the others wait at a barrier they can never pass together.
template <class T>
__global__ void divergent_barrier_kernel(T* out) {
  if (threadIdx.x < 16) return;
  __syncthreads();
  out[threadIdx.x] = T(1);
}

// A full-warp shuffle in a block of 48 threads: the second warp has 16 lanes.
template <class T>
__global__ void partial_warp_shuffle_kernel(T* out) {
  out[threadIdx.x] = T(__shfl_xor_sync(0xffffffffu, float(threadIdx.x), 1));
}

template <class T>
__global__ void warp_sum_kernel(T* out) {
  out[threadIdx.x] = T(kernels::warp_sum(float(threadIdx.x)));
}

// A two-warp pipeline on one 16 x 8 bf16 tile in dynamic shared memory: warp 1 reads it by ldmatrix,
// warp 0 refills it from src by cp.async and waits, warp 1 reads it again into out. `barriers` bit 0:
// a __syncthreads between the first read and the refill (write after read); bit 1: between the
// refill's wait and the second read (read after write). Both are needed on a GPU.
template <class T>
__global__ void two_warp_pipeline_kernel(const __nv_bfloat16* src, T* out, int barriers) {
  SHORTCUT_DYNAMIC_SMEM(__nv_bfloat16, tile);
  const int t = int(threadIdx.x), lane = t % 32;
  if (t < 128) tile[t] = __float2bfloat16(0.f);
  __syncthreads();
  uint32_t r[2];
  if (t >= 32) kernels::ldmatrix_x2_trans(r, tile + 8 * (lane % 16));
  if (barriers & 1) __syncthreads();
  if (t < 16) {
    kernels::cp_async_16(tile + 8 * t, src + 8 * t, 16);
    kernels::cp_async_commit();
    kernels::cp_async_wait<0>();
  }
  if (barriers & 2) __syncthreads();
  if (t >= 32) {
    kernels::ldmatrix_x2_trans(r, tile + 8 * (lane % 16));
    out[lane] = T(r[0] == 0x3F803F80u ? 1 : 0);  // two bf16 ones: the refill
  }
}
inline std::string run_two_warp_pipeline(int barriers, std::vector<float>* values = nullptr) {
  auto& be = gpu();
  const std::vector<__nv_bfloat16> ones(128, __float2bfloat16(1.f));
  cuda::DeviceBuffer<__nv_bfloat16> src(128);
  cuda::DeviceBuffer<float> out(32);
  be.to_device(src.data(), ones.data(), 128);
  be.fill(out.data(), 0.f, 32);
  kernels::launch("two_warp_pipeline_kernel", two_warp_pipeline_kernel<float>, 1, 64, 256, be.stream(), src.data(),
                  out.data(), barriers);
  std::string msg;
  try {
    be.synchronize();
  } catch (const Error& e) {
    return e.what();
  }
  if (values) {
    values->resize(32);
    be.to_host(values->data(), out.data(), 32);
  }
  return msg;
}

template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace errtest

using namespace errtest;

TEST_CASE("a cp.async pipeline with its barriers runs clean", "[errors][bf16]") {
  std::vector<float> v;
  CHECK(run_two_warp_pipeline(3, &v).empty());
  REQUIRE(v.size() == 32);
  for (float x : v) CHECK(x == 1.f);  // every lane of warp 1 read the landed refill
}

TEST_CASE("a launch with more than 1024 threads per block fails at once, named", "[errors]") {
  auto& be = gpu();
  cuda::DeviceBuffer<float> out(2048);
  const std::string msg = error_of([&] {
    kernels::launch("write_index_kernel", write_index_kernel<float>, 1, 2048, 0, be.stream(), out.data(), 2048);
  });
  INFO(msg);
  CHECK(msg.find("launch of write_index_kernel failed") != std::string::npos);
  CHECK(msg.find("cudaErrorInvalidConfiguration") != std::string::npos);
  // the error is not sticky: the device still works
  kernels::launch("write_index_kernel", write_index_kernel<float>, 2, 1024, 0, be.stream(), out.data(), 2048);
  std::vector<float> h(2048);
  be.to_host(h.data(), out.data(), h.size());
  CHECK(h[2047] == 2047.f);
}

TEST_CASE("dynamic shared memory above 48 KB needs the opt-in and stays under the device limit", "[errors]") {
  auto& be = gpu();
  cuda::DeviceBuffer<float> out(256);
  const size_t big = 64 * 1024;
  auto k = smem_rotate_kernel<float>;
  // without cudaFuncSetAttribute the launch is refused
  const std::string msg = error_of([&] { kernels::launch("smem_rotate_kernel", k, 1, 256, big, be.stream(), out.data(), 256); });
  INFO(msg);
  CHECK(msg.find("launch of smem_rotate_kernel failed") != std::string::npos);
  // opted in, it runs, and the barrier makes every neighbour's value visible
  SHORTCUT_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(big)));
  kernels::launch("smem_rotate_kernel", k, 1, 256, big, be.stream(), out.data(), 256);
  std::vector<float> h(256);
  be.to_host(h.data(), out.data(), h.size());
  for (int t = 0; t < 256; ++t) CHECK(h[t] == float((t + 1) % 256));
  // above what an sm_90 block can have, even the opt-in fails
  CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, 300 * 1024) != cudaSuccess);
  cudaGetLastError();
}

TEST_CASE("cuBLAS refuses a leading dimension smaller than the matrix", "[errors]") {
  auto& be = gpu();
  cuda::DeviceBuffer<float> a(64), b(64), c(64);
  const float one = 1.f, zero = 0.f;
  // A is 8 x 8 column-major (op N): lda must be at least 8
  CHECK(cublasGemmEx(be.cublas(), CUBLAS_OP_N, CUBLAS_OP_N, 8, 8, 8, &one, a.data(), CUDA_R_32F, 4, b.data(),
                     CUDA_R_32F, 8, &zero, c.data(), CUDA_R_32F, 8, CUBLAS_COMPUTE_32F,
                     CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_INVALID_VALUE);
  // and a correct call goes through
  CHECK(cublasGemmEx(be.cublas(), CUBLAS_OP_N, CUBLAS_OP_N, 8, 8, 8, &one, a.data(), CUDA_R_32F, 8, b.data(),
                     CUDA_R_32F, 8, &zero, c.data(), CUDA_R_32F, 8, CUBLAS_COMPUTE_32F,
                     CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
  be.synchronize();
}

TEST_CASE("warp sums see every lane", "[errors]") {
  auto& be = gpu();
  cuda::DeviceBuffer<float> out(64);
  kernels::launch("warp_sum_kernel", warp_sum_kernel<float>, 1, 64, 0, be.stream(), out.data());
  std::vector<float> h(64);
  be.to_host(h.data(), out.data(), h.size());
  for (int t = 0; t < 32; ++t) CHECK(h[t] == 496.f);       // 0 + ... + 31
  for (int t = 32; t < 64; ++t) CHECK(h[t] == 1520.f);     // 32 + ... + 63
}

#if defined(SHORTCUT_CUDA_EMULATION)
// ---- the emulator's own checks ------------------------------------------------------------------

TEST_CASE("emulation: never-written device memory reads as NaN", "[emulation]") {
  auto& be = gpu();
  float* p = nullptr;
  SHORTCUT_CUDA_CHECK(cudaMalloc(&p, 16 * sizeof(float)));
  std::vector<float> h(16, 0.f);
  be.to_host(h.data(), p, h.size());
  for (float v : h) CHECK(std::isnan(v));
  SHORTCUT_CUDA_CHECK(cudaFree(p));
}

TEST_CASE("emulation: a copy into pinned memory lands only when its stream is waited for", "[emulation]") {
  auto& be = gpu();
  cuda::DeviceBuffer<float> d(8);
  be.fill(d.data(), 7.f, 8);
  float* pinned = nullptr;
  SHORTCUT_CUDA_CHECK(cudaMallocHost(&pinned, 8 * sizeof(float)));
  std::fill(pinned, pinned + 8, 0.f);
  SHORTCUT_CUDA_CHECK(cudaMemcpyAsync(pinned, d.data(), 8 * sizeof(float), cudaMemcpyDeviceToHost, be.stream()));
  CHECK(pinned[0] == 0.f);  // not waited for: a host that reads now reads stale data
  be.synchronize();
  CHECK(pinned[0] == 7.f);
  SHORTCUT_CUDA_CHECK(cudaFreeHost(pinned));
}

TEST_CASE("emulation: a device-to-device copy from host memory is refused", "[emulation]") {
  auto& be = gpu();
  cuda::DeviceBuffer<float> d(8);
  std::vector<float> h(8, 1.f);
  const std::string msg = error_of([&] { be.copy(d.data(), h.data(), 8); });
  INFO(msg);
  CHECK(msg.find("cudaErrorInvalidValue") != std::string::npos);
}

TEST_CASE("emulation: a kernel fault is reported late and names the kernels that may have caused it", "[.fault][emulation]") {
  auto& be = gpu();
  cuda::DeviceBuffer<float> out(64);
  be.synchronize();
  kernels::launch("write_index_kernel", write_index_kernel<float>, 1, 64, 0, be.stream(), out.data(), 64);
  kernels::launch("trap_kernel", trap_kernel<float>, 1, 32, 0, be.stream(), out.data());
  kernels::launch("warp_sum_kernel", warp_sum_kernel<float>, 1, 32, 0, be.stream(), out.data());
  const std::string msg = error_of([&] { be.synchronize(); });
  INFO(msg);
  CHECK(msg.find("cudaErrorLaunchFailure") != std::string::npos);
  CHECK(msg.find("fault inside a kernel") != std::string::npos);
  CHECK(msg.find("write_index_kernel, trap_kernel, warp_sum_kernel") != std::string::npos);
  CHECK(msg.find("SHORTCUT_CUDA_SYNC_CHECK") != std::string::npos);
  // sticky: the next launch fails too, and says the fault is older than it
  const std::string next = error_of(
      [&] { kernels::launch("write_index_kernel", write_index_kernel<float>, 1, 64, 0, be.stream(), out.data(), 64); });
  INFO(next);
  CHECK(next.find("found at the launch of write_index_kernel") != std::string::npos);
  CHECK(next.find("one of the kernels launched before") != std::string::npos);
}

TEST_CASE("emulation: a misaligned vector load is a fault", "[.fault][emulation]") {
  auto& be = gpu();
  cuda::DeviceBuffer<float> in(64), out(64);
  kernels::launch("misaligned_load_kernel", misaligned_load_kernel<float>, 1, 32, 0, be.stream(), in.data(),
                  out.data());
  const std::string msg = error_of([&] { be.synchronize(); });
  INFO(msg);
  CHECK(msg.find("cudaErrorMisalignedAddress") != std::string::npos);
  CHECK(msg.find("misaligned_load_kernel") != std::string::npos);
}

TEST_CASE("emulation: a barrier that some threads never reach is a fault", "[.fault][emulation]") {
  auto& be = gpu();
  cuda::DeviceBuffer<float> out(64);
  kernels::launch("divergent_barrier_kernel", divergent_barrier_kernel<float>, 1, 64, 0, be.stream(), out.data());
  const std::string msg = error_of([&] { be.synchronize(); });
  INFO(msg);
  CHECK(msg.find("cudaErrorLaunchFailure") != std::string::npos);
  CHECK(msg.find("divergent_barrier_kernel") != std::string::npos);
}

// The emulation's shared-memory race check (scheduler.cpp, SmemWord): without either barrier of the
// pipeline above the launch faults, naming the race, whatever order the warps ran in — reported at
// whichever of the read and the write came second in that order (SHORTCUT_EMU_ORDER), so the checks
// ask for the race and the kernel, not for one side's wording.
inline void check_pipeline_race(const std::string& msg) {
  INFO(msg);
  CHECK(msg.find("two_warp_pipeline_kernel") != std::string::npos);
  CHECK(msg.find("shared-memory race") != std::string::npos);
  CHECK(msg.find("ldmatrix") != std::string::npos);
  CHECK(msg.find("cp.async") != std::string::npos);
}
TEST_CASE("emulation: a cp.async refill of a tile another warp read, without a barrier, is a race",
          "[.fault][emulation]") {
  CHECK(!run_two_warp_pipeline(2).empty());
  check_pipeline_race(emu::sticky_fault());
}

TEST_CASE("emulation: an ldmatrix of another warp's landed cp.async, without a barrier, is a race",
          "[.fault][emulation]") {
  CHECK(!run_two_warp_pipeline(1).empty());
  check_pipeline_race(emu::sticky_fault());
}

TEST_CASE("emulation: a full-warp shuffle in a partial warp is a fault", "[.fault][emulation]") {
  auto& be = gpu();
  cuda::DeviceBuffer<float> out(48);
  kernels::launch("partial_warp_shuffle_kernel", partial_warp_shuffle_kernel<float>, 1, 48, 0, be.stream(),
                  out.data());
  const std::string msg = error_of([&] { be.synchronize(); });
  INFO(msg);
  CHECK(msg.find("cudaErrorIllegalInstruction") != std::string::npos);
  CHECK(msg.find("partial_warp_shuffle_kernel") != std::string::npos);
}

TEST_CASE("emulation: a host pointer passed to a kernel is an illegal address", "[.fault][emulation]") {
  auto& be = gpu();
  std::vector<float> host(64);
  kernels::launch("write_index_kernel", write_index_kernel<float>, 1, 64, 0, be.stream(), host.data(), 64);
  const std::string msg = error_of([&] { be.synchronize(); });
  INFO(msg);
  CHECK(msg.find("cudaErrorIllegalAddress") != std::string::npos);
  CHECK(host[5] == 0.f);  // the kernel did not run
}
#endif

// bf16 mode's tensor-core kernels need sm_80 (mma.sync, cp.async, ldmatrix); compiled for less they
// are traps, and an older device cannot run them. The backend refuses bf16 mode at construction with
// what it found, and accepts fp32 and TF32 there. On a GPU: this device and this build.
TEST_CASE("bf16 mode is accepted on a device and build of sm_80 or later", "[errors][bf16]") {
  int major = 0;
  SHORTCUT_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0));
  if (major < 8) {
    CHECK_THROWS_AS(Gpu(cuda::Options{.precision = cuda::Precision::bf16}), ConfigError);
    return;
  }
  Gpu be(cuda::Options{.precision = cuda::Precision::bf16});
  CHECK(be.precision() == cuda::Precision::bf16);
}

#if defined(SHORTCUT_CUDA_EMULATION)
namespace {
// The emulated device's compute capability and the kernels' compiled architectures for one scope.
struct EmulatedHardware {
  EmulatedHardware(int cc, int sass, int ptx) {
    emu::set_compute_capability(cc);
    emu::set_kernel_arch(sass, ptx);
  }
  ~EmulatedHardware() {
    emu::set_compute_capability(90);
    emu::set_kernel_arch(90, 90);
  }
};
std::string refusal(const cuda::Options& o) {
  try {
    Gpu be(o);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("emulation: bf16 mode is refused on a device or a build without sm_80", "[errors][bf16][emulation]") {
  const cuda::Options bf16{.precision = cuda::Precision::bf16};
  SECTION("a Turing device (7.5)") {
    EmulatedHardware hw(75, 75, 75);
    const std::string why = refusal(bf16);
    INFO(why);
    CHECK_THAT(why, Catch::Matchers::Contains("compute capability 8.0 or later"));
    CHECK_THAT(why, Catch::Matchers::Contains("compute capability 7.5"));
    CHECK(refusal(cuda::Options{}).empty());  // fp32 and TF32 run there
    CHECK(refusal(cuda::Options{.precision = cuda::Precision::tf32}).empty());
  }
  SECTION("an H100 running code built for 75 (CMake's default with nvcc 13), JIT-compiled from compute_75") {
    EmulatedHardware hw(90, 75, 75);
    const std::string why = refusal(bf16);
    INFO(why);
    CHECK_THAT(why, Catch::Matchers::Contains("compiled for compute_75"));
    CHECK_THAT(why, Catch::Matchers::Contains("running as sm_90"));
    CHECK_THAT(why, Catch::Matchers::Contains("CMAKE_CUDA_ARCHITECTURES"));
    CHECK(refusal(cuda::Options{}).empty());
  }
  SECTION("an A10 (8.6) running a build with sm_90 machine code only: no code for it") {
    EmulatedHardware hw(86, 90, 0);
    const std::string why = refusal(bf16);
    INFO(why);
    CHECK_THAT(why, Catch::Matchers::Contains("no code for CUDA device"));
    CHECK_THAT(why, Catch::Matchers::Contains("cudaErrorNoKernelImageForDevice"));
  }
  SECTION("accepted: an A100 with code for 80, an H100 with PTX for 80 (JIT), an H100 with code for 90") {
    for (auto [cc, sass, ptx] : {std::tuple{80, 80, 80}, std::tuple{90, 0, 80}, std::tuple{90, 90, 90}}) {
      EmulatedHardware hw(cc, sass, ptx);
      INFO("device " << cc << ", sm_" << sass << " + compute_" << ptx);
      CHECK(refusal(bf16).empty());
    }
  }
  // nothing of the refusals is left behind as an error
  CHECK(cudaGetLastError() == cudaSuccess);
  Gpu be(bf16);
  CHECK(be.precision() == cuda::Precision::bf16);
}
#endif
