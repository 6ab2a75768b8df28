// The bf16 tensor-core kernels: the mma wrapper (kernels/mma.cuh) against a plain product, which pins
// the fragment layouts, cp.async and ldmatrix.trans against the layout the B fragment needs, and attention forward on the tensor cores (kernels/attention_tc.cuh) against
// the double CPU backend, forward and backward.
//
// Tolerance, as flash-attention's tests derive theirs: the inputs are rounded to bf16 once and the
// double reference runs on those rounded values; the same math done naively in bf16 (logits rounded to
// bf16, softmax in fp32, probabilities rounded to bf16, products accumulated in fp32, output rounded to
// bf16) is measured against that reference on the same inputs. The kernel's error in the 2-norm may be
// at most twice the naive one's (over 8640 cases the ratio stayed under 1.25, mean 0.8), and its
// largest error at most four times the naive largest: maxima of a few hundred values are heavy-tailed
// (a ratio of 2.1 was seen once in 100 runs at T = 7), while a wrong tile is off by O(1), not 4x. The row statistic lse is fp32 in the kernel (logits from exact bf16
// products with fp32 accumulation), so it is held to fp32's reduction tolerance instead.
#include "kernels/attention_tc.cuh"
#include "kernels/attention_tc_backward.cuh"
#include "op_cases.hpp"

namespace tc_test {

using namespace gputest;
namespace kn = shortcut::kernels;
using bf16 = __nv_bfloat16;

// One warp: D = A B + C with A [16][16] row-major, B [16][8] as [k][n], C and D [16][8], every
// fragment loaded and stored by the layout tables of kernels/mma.cuh.
__global__ void mma_once_kernel(float* d, const bf16* A, const bf16* B, const float* C) {
  const int lane = threadIdx.x, g = lane / 4, q = lane % 4;
  uint32_t a[4], b[2];
  float c[4], o[4];
  for (int j = 0; j < 4; ++j) a[j] = kn::load_bf16x2(A + (g + 8 * (j % 2)) * 16 + 2 * q + 8 * (j / 2));
  for (int j = 0; j < 2; ++j) {
    const int k = 2 * q + 8 * j;
    b[j] = kn::pack_bf16x2(__bfloat162float(B[k * 8 + g]), __bfloat162float(B[(k + 1) * 8 + g]));
  }
  for (int i = 0; i < 4; ++i) c[i] = C[(g + 8 * (i / 2)) * 8 + 2 * q + i % 2];
  kn::mma_bf16_16816(o, a, b, c);
  for (int i = 0; i < 4; ++i) d[(g + 8 * (i / 2)) * 8 + 2 * q + i % 2] = o[i];
}

// One warp: rows 0-15 of M ([16][8] bf16, row-major) into shared memory by cp.async (row stride 24
// elements, rows from `valid` on read 8 bytes (row valid) or none (after it): zero-filled), then the
// ldmatrix.x2.trans fragments of that [k][n] tile: frag[2 lane + j] = register j of the lane.
__global__ void cp_async_ldmatrix_kernel(uint32_t* frag, const bf16* M, int valid) {
  SHORTCUT_DYNAMIC_SMEM(bf16, ldm_smem);
  const int lane = threadIdx.x, r = lane & 15;
  if (lane < 16) kn::cp_async_16(ldm_smem + r * 24, M + r * 8, r < valid ? 16 : r == valid ? 8 : 0);
  kn::cp_async_commit();
  kn::cp_async_wait<0>();
  __syncthreads();
  uint32_t b[2];
  kn::ldmatrix_x2_trans(b, ldm_smem + r * 24);
  frag[2 * lane] = b[0];
  frag[2 * lane + 1] = b[1];
}
// One thread: a cp.async of 16 bytes read back before its wait (emulation: NaN while in flight) and
// after it.
__global__ void cp_async_early_read_kernel(float* out, const float* src) {
  SHORTCUT_DYNAMIC_SMEM(float, early_smem);
  early_smem[0] = 1.f;
  kn::cp_async_16(early_smem, src, 16);
  kn::cp_async_commit();
  out[0] = early_smem[0];
  kn::cp_async_wait<0>();
  out[1] = early_smem[0];
}

// Attention done naively in bf16 (see the top of the file): out [B,T,D] and lse [B,H,T].
inline void naive_bf16_attention(std::vector<double>& out, std::vector<double>& lse, const std::vector<double>& qkv,
                                 const AttnShape& s, double scale) {
  const int D = s.H * s.hd, T = s.Tn;
  out.assign(size_t(s.B) * T * D, 0.0);
  lse.assign(size_t(s.B) * s.H * T, 0.0);
  std::vector<float> S(T), P(T);
  for (int b = 0; b < s.B; ++b)
    for (int h = 0; h < s.H; ++h) {
      auto at = [&](int t, int part, int j) { return qkv[(size_t(b) * T + t) * 3 * D + part * D + h * s.hd + j]; };
      for (int i = 0; i < T; ++i) {
        float mx = -INFINITY, sum = 0.f;
        for (int j = 0; j < T; ++j) {
          float dot = 0.f;
          for (int c = 0; c < s.hd; ++c) dot += float(at(i, 0, c)) * float(at(j, 1, c));
          S[j] = float(round_bf16(dot * float(scale)));
          mx = std::max(mx, S[j]);
        }
        for (int j = 0; j < T; ++j) sum += (P[j] = std::exp(S[j] - mx));
        for (int j = 0; j < T; ++j) P[j] = float(round_bf16(P[j] / sum));
        lse[(size_t(b) * s.H + h) * T + i] = mx + std::log(sum);
        for (int c = 0; c < s.hd; ++c) {
          float acc = 0.f;
          for (int j = 0; j < T; ++j) acc += P[j] * float(at(j, 2, c));
          out[(size_t(b) * T + i) * D + h * s.hd + c] = round_bf16(acc);
        }
      }
    }
}

// The backward done naively in bf16, each product's result rounded as a bf16 autograd would round it:
// P and dP = dO V^T rounded, dS = P (dP - rowsum(dP P)) rounded, dV = P^T dO, dK = scale dS^T Q and
// dQ = scale dS K rounded; sums in fp32. dqkv [B,T,3D].
inline std::vector<double> naive_bf16_attention_backward(const std::vector<double>& qkv, const std::vector<double>& dout,
                                                         const AttnShape& s, double scale) {
  const int D = s.H * s.hd, T = s.Tn, hd = s.hd;
  std::vector<double> dqkv(size_t(s.B) * T * 3 * D, 0.0);
  std::vector<float> P(size_t(T) * T), dS(size_t(T) * T);
  for (int b = 0; b < s.B; ++b)
    for (int h = 0; h < s.H; ++h) {
      auto at = [&](int t, int part, int j) {
        return float(qkv[(size_t(b) * T + t) * 3 * D + part * D + h * hd + j]);
      };
      auto go = [&](int t, int j) { return float(dout[(size_t(b) * T + t) * D + h * hd + j]); };
      auto grad = [&](int t, int part, int j) -> double& {
        return dqkv[(size_t(b) * T + t) * 3 * D + part * D + h * hd + j];
      };
      for (int i = 0; i < T; ++i) {
        std::vector<float> S(T);
        float mx = -INFINITY, sum = 0.f;
        for (int j = 0; j < T; ++j) {
          float dot = 0.f;
          for (int c = 0; c < hd; ++c) dot += at(i, 0, c) * at(j, 1, c);
          S[j] = float(round_bf16(dot * float(scale)));
          mx = std::max(mx, S[j]);
        }
        for (int j = 0; j < T; ++j) sum += (S[j] = std::exp(S[j] - mx));
        std::vector<float> dP(T);
        float rowdot = 0.f;
        for (int j = 0; j < T; ++j) {
          P[size_t(i) * T + j] = float(round_bf16(S[j] / sum));
          float acc = 0.f;
          for (int c = 0; c < hd; ++c) acc += go(i, c) * at(j, 2, c);
          dP[j] = float(round_bf16(acc));
          rowdot += dP[j] * P[size_t(i) * T + j];
        }
        for (int j = 0; j < T; ++j) dS[size_t(i) * T + j] = float(round_bf16(P[size_t(i) * T + j] * (dP[j] - rowdot)));
      }
      for (int j = 0; j < T; ++j)
        for (int c = 0; c < hd; ++c) {
          float v = 0.f, k = 0.f;
          for (int i = 0; i < T; ++i) {
            v += P[size_t(i) * T + j] * go(i, c);
            k += dS[size_t(i) * T + j] * at(i, 0, c);
          }
          grad(j, 2, c) = round_bf16(v);
          grad(j, 1, c) = round_bf16(float(scale) * k);
        }
      for (int i = 0; i < T; ++i)
        for (int c = 0; c < hd; ++c) {
          float q = 0.f;
          for (int j = 0; j < T; ++j) q += dS[size_t(i) * T + j] * at(j, 1, c);
          grad(i, 0, c) = round_bf16(float(scale) * q);
        }
    }
  return dqkv;
}


// Every case of the attention tests: 9 shapes (T = 1 ... 197 with partial tiles, every head dim) x
// both logit scales of the DiT x inputs of sd 1 and 3 (peaked rows), the inputs rounded to bf16.
template <class F>
void for_each_case(F&& f) {
  for (AttnShape s : {AttnShape{1, 1, 1, 32}, AttnShape{2, 7, 2, 64}, AttnShape{2, 49, 3, 32}, AttnShape{3, 65, 2, 32},
                      AttnShape{1, 33, 1, 72}, AttnShape{2, 64, 2, 128}, AttnShape{1, 130, 1, 128},
                      AttnShape{1, 197, 2, 64}, AttnShape{1, 197, 1, 72}})
    for (bool inv_sqrt : {false, true})
      for (double sd : {1.0, 3.0}) {
        const double scale = inv_sqrt ? 1.0 / std::sqrt(double(s.hd)) : 1.0 / s.hd;
        const std::string label = "B=" + std::to_string(s.B) + " T=" + std::to_string(s.Tn) + " H=" +
                                  std::to_string(s.H) + " hd=" + std::to_string(s.hd) +
                                  (inv_sqrt ? " 1/sqrt(hd)" : " 1/hd") + " sd=" + std::to_string(int(sd));
        f(s, scale, rounded(testutil::randn(size_t(s.B) * s.Tn * 3 * s.H * s.hd, sd)), label);
      }
}

}  // namespace tc_test

TEST_CASE("tensor cores: one mma.m16n8k16 bf16 product matches the plain product", "[attention][bf16]") {
  using namespace tc_test;
  auto A = rounded(testutil::randn(16 * 16)), B = rounded(testutil::randn(16 * 8)), C = testutil::randn(16 * 8);
  std::vector<double> ref(16 * 8);
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 8; ++n) {
      double acc = double(float(C[r * 8 + n]));
      for (int k = 0; k < 16; ++k) acc += A[r * 16 + k] * B[k * 8 + n];
      ref[r * 8 + n] = acc;
    }
  auto dA = upload_bf16(A), dB = upload_bf16(B);
  auto dC = upload_d(gpu(), C);
  auto dD = poisoned(gpu(), 16 * 8);
  kn::launch("mma_once_kernel", mma_once_kernel, 1, 32, 0, gpu().stream(), dD.data(), dA.data(), dB.data(),
             dC.data());
  const auto got = download_d(gpu(), dD);
  // exact bf16 products, 17 terms summed in fp32: within a few fp32 roundings of the largest partial sum
  double scale = 0;
  for (double v : ref) scale = std::max(scale, std::abs(v));
  INFO("max |D - ref| = " << max_abs_diff(got, ref) << ", max |ref| = " << scale);
  CHECK(max_abs_diff(got, ref) <= 1e-5 * (1 + scale));
}

TEST_CASE("cp.async zero-fills past its source bytes and ldmatrix.trans hands out the mma B fragment",
          "[attention][bf16]") {
  using namespace tc_test;
  for (int valid : {16, 11}) {
    INFO("rows read in full: " << valid);
    const auto M = rounded(testutil::randn(16 * 8));
    auto dM = upload_bf16(M);
    shortcut::cuda::DeviceBuffer<uint32_t> frag(64);
    kn::launch("cp_async_ldmatrix_kernel", cp_async_ldmatrix_kernel, 1, 32, 16 * 24 * sizeof(bf16), gpu().stream(),
               frag.data(), dM.data(), valid);
    std::vector<uint32_t> got(64);
    gpu().to_host(got.data(), frag.data(), 64);
    // what landed: rows past `valid` zero, row `valid` its first 4 values (8 bytes) only
    auto landed = [&](int k, int n) { return k < valid || (k == valid && n < 4) ? M[k * 8 + n] : 0.0; };
    auto half = [](uint32_t reg, int hi) {
      const uint32_t u = (hi ? reg >> 16 : reg & 0xffffu) << 16;
      float v;
      std::memcpy(&v, &u, 4);
      return double(v);
    };
    // the B fragment of mma.m16n8k16 (kernels/mma.cuh): lane 4g + q, register j holds rows (k)
    // 2q + 8j and 2q + 8j + 1 of column (n) g
    int wrong = 0;
    for (int lane = 0; lane < 32; ++lane)
      for (int j = 0; j < 2; ++j) {
        const int g = lane / 4, q = lane % 4, k = 2 * q + 8 * j;
        wrong += half(got[2 * lane + j], 0) != landed(k, g) || half(got[2 * lane + j], 1) != landed(k + 1, g);
      }
    CHECK(wrong == 0);
  }
}

TEST_CASE("bf16 attention refuses operands that do not start on 16 bytes, before any launch", "[attention][bf16]") {
  using namespace tc_test;
  auto qkv = upload_bf16(rounded(testutil::randn(2 * 3 * 64 + 8)));
  auto out = upload_bf16(std::vector<double>(2 * 64, 0.0));
  auto lse = poisoned(gpu(), 2);
  CHECK_THROWS_WITH(kn::attention_forward_tc(out.data(), lse.data(), qkv.data() + 1, 1, 2, 1, 64, 0.125f,
                                             gpu().stream()),
                    Catch::Matchers::Contains("qkv must start on a 16-byte boundary"));
  kn::attention_forward_tc(out.data(), lse.data(), qkv.data() + 8, 1, 2, 1, 64, 0.125f, gpu().stream());
  for (double v : download_bf16(out)) REQUIRE(std::isfinite(v));  // 16 bytes in: fine
}

#if defined(SHORTCUT_CUDA_EMULATION)
TEST_CASE("emulation: a cp.async destination holds NaN until the wait that retires its group",
          "[attention][bf16][emulation]") {
  using namespace tc_test;
  auto src = upload_d(gpu(), std::vector<double>{2.0, 3.0, 4.0, 5.0});
  auto out = poisoned(gpu(), 2);
  kn::launch("cp_async_early_read_kernel", cp_async_early_read_kernel, 1, 1, 16, gpu().stream(), out.data(),
             src.data());
  const auto got = download_d(gpu(), out);
  CHECK(std::isnan(got[0]));
  CHECK(got[1] == 2.0);
}
#endif

TEST_CASE("tensor cores: bf16 attention forward matches the double CPU backend within bf16's own error",
          "[attention][bf16]") {
  using namespace tc_test;
  for_each_case([](const AttnShape& s, double scale, const std::vector<double>& qkv, const std::string& label) {
        const int D = s.H * s.hd;
        // the reference: the library's double attention on the bf16-rounded inputs
        Ref ref_be;
        std::vector<double> ref_out(size_t(s.B) * s.Tn * D), ref_lse(size_t(s.B) * s.H * s.Tn);
        ref_be.attention_forward(ref_out.data(), ref_lse.data(), qkv.data(), s.B, s.Tn, s.H, s.hd, scale);
        std::vector<double> naive_out, naive_lse;
        naive_bf16_attention(naive_out, naive_lse, qkv, s, scale);
        // the kernel, its outputs poisoned with NaN first
        auto dqkv = upload_bf16(qkv);
        auto out = upload_bf16(std::vector<double>(ref_out.size(), std::nan("")));
        auto lse = poisoned(gpu(), ref_lse.size());
        kn::attention_forward_tc(out.data(), lse.data(), dqkv.data(), s.B, s.Tn, s.H, s.hd, float(scale),
                                 gpu().stream());
        const auto got_out = download_bf16(out), got_lse = download_d(gpu(), lse);
        const double err = max_abs_diff(got_out, ref_out), naive = max_abs_diff(naive_out, ref_out);
        double lse_err = 0, lse_scale = 1;
        for (size_t i = 0; i < ref_lse.size(); ++i) {
          lse_err = std::max(lse_err, std::isnan(got_lse[i]) ? INFINITY : std::abs(got_lse[i] - ref_lse[i]));
          lse_scale = std::max(lse_scale, std::abs(ref_lse[i]));
        }
        INFO(label << ": max |out - ref| " << err << " (naive bf16: " << naive << "), max |lse - ref| "
                  << lse_err);
        CHECK(l2_diff(got_out, ref_out) <= 2 * l2_diff(naive_out, ref_out) + 1e-6);
        CHECK(err <= 4 * naive + 1e-6);
        CHECK(lse_err <= kReductionTol * lse_scale);
  });
}

TEST_CASE("tensor cores: bf16 attention backward matches the double CPU backend within bf16's own error",
          "[attention][bf16]") {
  using namespace tc_test;
  for_each_case([](const AttnShape& s, double scale, const std::vector<double>& qkv, const std::string& label) {
        const int D = s.H * s.hd;
        const auto dout = rounded(testutil::randn(size_t(s.B) * s.Tn * D));
        const AttnRef r = reference_attention(qkv, dout, s, scale);
        const std::vector<double>&out = r.out, &lse = r.lse, &ref = r.dqkv;
        const auto naive = naive_bf16_attention_backward(qkv, dout, s, scale);
        // the kernels: the tensor-core forward's out and lse feed the backward, as in training
        auto dqkv_in = upload_bf16(qkv), ddout = upload_bf16(dout);
        auto dout_tc = upload_bf16(std::vector<double>(out.size(), std::nan("")));
        auto dlse = poisoned(gpu(), lse.size());
        kn::attention_forward_tc(dout_tc.data(), dlse.data(), dqkv_in.data(), s.B, s.Tn, s.H, s.hd, float(scale),
                                 gpu().stream());
        auto dqkv = upload_bf16(std::vector<double>(qkv.size(), std::nan("")));
        auto work = poisoned(gpu(), kn::attention_backward_tc_workspace(s.B, s.Tn, s.H, s.hd));
        kn::attention_backward_tc(dqkv.data(), ddout.data(), dqkv_in.data(), dout_tc.data(), dlse.data(), s.B, s.Tn,
                                  s.H, s.hd, float(scale), work.data(), gpu().stream());
        const auto got = download_bf16(dqkv);
        const double floor = fp32_cancellation_floor(qkv, dout, s, scale);
        for (int part = 0; part < 3; ++part) {
          const auto g = part_of(got, D, part), r = part_of(ref, D, part), n = part_of(naive, D, part);
          const double err = max_abs_diff(g, r), nerr = max_abs_diff(n, r);
          const double l2 = l2_diff(g, r), nl2 = l2_diff(n, r);
          INFO(label << " d" << "qkv"[part] << ": max |kernel - ref| " << err << " (naive bf16: " << nerr
                    << "), ||kernel - ref|| " << l2 << " (naive bf16: " << nl2 << "), fp32 floor " << floor);
          CHECK(l2 <= 2 * nl2 + floor * std::sqrt(double(g.size())));
          CHECK(err <= 4 * nerr + floor);
        }
  });
}

// The shared-memory row strides of the tensor-core kernels: the 8 rows that one ldmatrix reads (16
// bytes each), or one K fragment load (8 rows g, 4 words q4 each), must fall on 32 distinct banks
// (4-byte words modulo 32), at every column a load starts from (multiples of 8 bf16). The emulation
// has no banks, so this checks the arithmetic the kernels rely on: an even count of 16-byte chunks per
// row (kVs = 80 at head dim 72) puts rows r and r + 4 on the same banks.
TEST_CASE("tensor cores: the shared-memory row strides are free of bank conflicts", "[attention][bf16]") {
  using namespace tc_test;
  auto conflict_free = [](int stride) {  // stride in bf16
    for (int col = 0; col < stride; col += 8) {
      bool seen[32] = {};
      for (int r = 0; r < 8; ++r)
        for (int w = 0; w < 4; ++w) {
          const int bank = ((r * stride + col) / 2 + w) % 32;
          if (seen[bank]) return false;
          seen[bank] = true;
        }
    }
    return true;
  };
  auto check = [&](const char* what, int hd, int stride) {
    INFO(what << " at head dim " << hd << ": row stride " << stride << " bf16");
    CHECK(stride % 8 == 0);  // rows 16-byte aligned: cp.async and ldmatrix
    CHECK(conflict_free(stride));
  };
  auto per_hd = [&]<int HD>() {
    check("forward K", HD, kn::TcHeadDim<HD>::kKs);
    check("forward V", HD, kn::TcHeadDim<HD>::kVs);
    check("backward Q, dO, K", HD, kn::TcBwd<HD>::kRowS);
    check("backward dS", HD, kn::TcBwd<HD>::kDsS);
  };
  per_hd.template operator()<32>();
  per_hd.template operator()<64>();
  per_hd.template operator()<72>();
  per_hd.template operator()<128>();
  CHECK(kn::TcHeadDim<72>::kVs == 88);
  CHECK(!conflict_free(80));  // the old V stride at head dim 72
}

// The tensor-core kernels' grid: (b, h) in x, whose limit is 2^31 - 1, tiles along T in y (65535):
// B H passes 65535 in real runs (a batch of 1024 at 64 heads), T / 64 tiles does not. The kernels read
// blockIdx.x as (b, h) and blockIdx.y as the tile; every attention test with several heads or tiles
// checks that they agree with this function.
TEST_CASE("tensor cores: the attention grid puts (sample, head) pairs in x", "[attention][bf16]") {
  using namespace tc_test;
  const dim3 g = kn::tc_grid(4096, 64, 1000, kn::kTcBR, "test");
  CHECK(g.x == 4096u * 64u);
  CHECK(g.y == 16u);
  CHECK(g.z == 1u);
  CHECK(kn::tc_grid(1, 1, 1, 64, "test").x == 1u);
  CHECK_THROWS_AS(kn::tc_grid(1 << 16, 1 << 15, 64, 64, "test"), shortcut::ShapeError);  // 2^31 pairs
}

// B H = 65537 (sample, head) pairs, one query each, run through both kernels: more than grid.y's
// 65535. With T = 1 the softmax is 1: out = v exactly, and dV = dO, dQ = dK = 0 up to the fp32
// cancellation of D = dO.O against dP = dO.V (bounded far below bf16's step of dO). Hidden: 2.5
// minutes in the emulation (8.4 million emulated threads); run it by name.
TEST_CASE("tensor cores: bf16 attention takes more than 65535 (sample, head) pairs", "[.][large][attention]") {
  using namespace tc_test;
  const int B = 65537, Tn = 1, H = 1, hd = 32, D = H * hd;
  const auto qkv = rounded(testutil::randn(size_t(B) * 3 * D));
  const auto dout = rounded(testutil::randn(size_t(B) * D));
  auto dq = upload_bf16(qkv), dg = upload_bf16(dout);
  auto out = upload_bf16(std::vector<double>(size_t(B) * D, std::nan("")));
  auto lse = poisoned(gpu(), size_t(B) * H);
  kn::attention_forward_tc(out.data(), lse.data(), dq.data(), B, Tn, H, hd, 0.2f, gpu().stream());
  auto dqkv = upload_bf16(std::vector<double>(qkv.size(), std::nan("")));
  auto work = poisoned(gpu(), kn::attention_backward_tc_workspace(B, Tn, H, hd));
  kn::attention_backward_tc(dqkv.data(), dg.data(), dq.data(), out.data(), lse.data(), B, Tn, H, hd, 0.2f,
                            work.data(), gpu().stream());
  const auto o = download_bf16(out), g = download_bf16(dqkv);
  size_t wrong_out = 0, wrong_grad = 0;
  for (size_t b = 0; b < size_t(B); ++b)
    for (int c = 0; c < D; ++c) {
      if (o[b * D + c] != qkv[b * 3 * D + 2 * D + c]) ++wrong_out;
      const double dv = g[b * 3 * D + 2 * D + c], want = dout[b * D + c];
      if (!(std::abs(dv - want) <= 1e-6 * std::abs(want)) || !(std::abs(g[b * 3 * D + c]) < 1e-4) ||
          !(std::abs(g[b * 3 * D + D + c]) < 1e-4))
        ++wrong_grad;
    }
  CHECK(wrong_out == 0);
  CHECK(wrong_grad == 0);
}
