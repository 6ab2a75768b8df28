// cuDNN's fused attention (benchmarks/reference/cudnn_sdpa.hpp) as a second oracle for the bf16
// tensor-core attention (kernels/attention_tc*.cuh): on the same bf16-rounded inputs, both against
// the library's double CPU attention, at the cases of attention_tc_test.cu (9 shapes x 2 logit scales x
// input sd 1 and 3).
//
// Criterion, attention_tc_test.cu's with cuDNN in place of the naive bf16 attention: our error in the
// 2-norm at most twice cuDNN's, our largest error at most four times cuDNN's largest (maxima are
// heavy-tailed), each plus a floor that no bf16 result can beat: the error of the exact result
// rounded to bf16 (and, for dQ and dK, attention_tc_test.cu's fp32 cancellation floor, where the exact
// dS is zero). cuDNN's backward gets cuDNN's forward out and stats, ours gets ours, as in training.
// cuDNN itself is held to the mirror image (its 2-norm error at most four times ours plus the floor),
// which a misread layout (an error of O(1)) fails, and its stats to our lse's tolerance, which checks
// that its stats are the natural-log lse. Shapes cuDNN refuses are reported (WARN) and skipped; at
// least one must run in each direction.
//
// Tagged [cudnn] only (not [attention]/[bf16]): the sanitizer passes of scripts/gpu-session.sh select
// those tags, and cuDNN's own kernels are not ours to sanitize. Compiled to nothing under the CPU
// emulation (no cuDNN there) and where CMake found no cuDNN (SHORTCUT_HAVE_CUDNN undefined).
#include <cuda_runtime.h>  // under the emulation its shim, which defines SHORTCUT_CUDA_EMULATION
#if !defined(SHORTCUT_CUDA_EMULATION) && defined(SHORTCUT_HAVE_CUDNN)
#include "benchmarks/reference/cudnn_sdpa.hpp"
#include "kernels/attention_tc.cuh"
#include "kernels/attention_tc_backward.cuh"
#include "op_cases.hpp"

namespace cudnn_test {

using namespace gputest;
namespace kn = shortcut::kernels;


// One output of both implementations against the reference; `floor` is added to the max-norm
// bounds, floor * sqrt(n) to the 2-norm ones, on top of the bf16 rounding of the reference.
inline void compare(const std::string& what, const std::vector<double>& ours, const std::vector<double>& cudnn,
                    const std::vector<double>& ref, double floor) {
  const auto ref_bf16 = rounded(ref);
  const double fl2 = l2_diff(ref_bf16, ref) + floor * std::sqrt(double(ref.size()));
  const double fmax = max_abs_diff(ref_bf16, ref) + floor;
  const double l2 = l2_diff(ours, ref), cl2 = l2_diff(cudnn, ref);
  const double mx = max_abs_diff(ours, ref), cmx = max_abs_diff(cudnn, ref);
  std::cout << "  " << what << ": ||ours - ref|| " << l2 << ", ||cudnn - ref|| " << cl2 << " (floor " << fl2
            << "); max " << mx << " vs " << cmx << "\n";
  INFO(what << ": ||ours - ref|| " << l2 << " ||cudnn - ref|| " << cl2 << " floor " << fl2 << "; max |ours - ref| "
            << mx << " max |cudnn - ref| " << cmx << " floor " << fmax);
  CHECK(l2 <= 2 * cl2 + fl2);
  CHECK(mx <= 4 * cmx + fmax);
  CHECK(cl2 <= 4 * l2 + fl2);  // cuDNN computes the same function (a misread layout is off by O(1))
}

}  // namespace cudnn_test

TEST_CASE("cuDNN SDPA: the bf16 tensor-core attention is as close to the double CPU backend as cuDNN's",
          "[cudnn]") {
  using namespace cudnn_test;
  int shapes_fwd = 0, shapes_bwd = 0;
  for (AttnShape s : {AttnShape{1, 1, 1, 32}, AttnShape{2, 7, 2, 64}, AttnShape{2, 49, 3, 32}, AttnShape{3, 65, 2, 32},
                      AttnShape{1, 33, 1, 72}, AttnShape{2, 64, 2, 128}, AttnShape{1, 130, 1, 128},
                      AttnShape{1, 197, 2, 64}, AttnShape{1, 197, 1, 72}}) {
    const int D = s.H * s.hd;
    const std::string shape = "B=" + std::to_string(s.B) + " T=" + std::to_string(s.Tn) + " H=" +
                              std::to_string(s.H) + " hd=" + std::to_string(s.hd);
    // one plan pair per shape: the scale is a by-value input of the plans
    shortcut::bench::CudnnSdpa sdpa(s.B, s.Tn, s.H, s.hd, 1.f / s.hd, gpu().stream());
    if (!sdpa.supported_forward()) {
      WARN("cuDNN SDPA refuses " << shape << ": " << sdpa.reason());
      continue;
    }
    ++shapes_fwd;
    if (!sdpa.supported_backward()) WARN("cuDNN SDPA backward refuses " << shape << ": " << sdpa.reason());
    else ++shapes_bwd;
    for (bool inv_sqrt : {false, true})
      for (double sd : {1.0, 3.0}) {
        const double scale = inv_sqrt ? 1.0 / std::sqrt(double(s.hd)) : 1.0 / s.hd;
        const std::string label = shape + (inv_sqrt ? " 1/sqrt(hd)" : " 1/hd") + " sd=" + std::to_string(int(sd));
        sdpa.set_scale(float(scale));
        const auto qkv = rounded(testutil::randn(size_t(s.B) * s.Tn * 3 * D, sd));
        const auto dout = rounded(testutil::randn(size_t(s.B) * s.Tn * D));
        const AttnRef r = reference_attention(qkv, dout, s, scale);
        const std::vector<double>&out = r.out, &lse = r.lse, &dqkv = r.dqkv;
        const auto nan_out = std::vector<double>(out.size(), std::nan(""));
        auto d_qkv = upload_bf16(qkv), d_dout = upload_bf16(dout);
        // forward, every output poisoned first
        auto o_tc = upload_bf16(nan_out), o_cd = upload_bf16(nan_out);
        auto l_tc = poisoned(gpu(), lse.size()), l_cd = poisoned(gpu(), lse.size());
        kn::attention_forward_tc(o_tc.data(), l_tc.data(), d_qkv.data(), s.B, s.Tn, s.H, s.hd, float(scale),
                                 gpu().stream());
        sdpa.forward(o_cd.data(), l_cd.data(), d_qkv.data(), gpu().stream());
        compare(label + " out", download_bf16(o_tc), download_bf16(o_cd), out, 0.0);
        const auto got_lse = download_d(gpu(), l_cd);
        double lse_err = 0, lse_scale = 1;
        for (size_t i = 0; i < lse.size(); ++i) {
          lse_err = std::max(lse_err, std::isnan(got_lse[i]) ? INFINITY : std::abs(got_lse[i] - lse[i]));
          lse_scale = std::max(lse_scale, std::abs(lse[i]));
        }
        INFO(label << ": max |cudnn stats - lse| " << lse_err);
        CHECK(lse_err <= kReductionTol * lse_scale);
        if (!sdpa.supported_backward()) continue;
        // backward: each from its own forward's out and stats
        const auto nan_qkv = std::vector<double>(qkv.size(), std::nan(""));
        auto g_tc = upload_bf16(nan_qkv), g_cd = upload_bf16(nan_qkv);
        auto work = poisoned(gpu(), kn::attention_backward_tc_workspace(s.B, s.Tn, s.H, s.hd));
        kn::attention_backward_tc(g_tc.data(), d_dout.data(), d_qkv.data(), o_tc.data(), l_tc.data(), s.B, s.Tn, s.H,
                                  s.hd, float(scale), work.data(), gpu().stream());
        sdpa.backward(g_cd.data(), d_dout.data(), d_qkv.data(), o_cd.data(), l_cd.data(), gpu().stream());
        const auto got_tc = download_bf16(g_tc), got_cd = download_bf16(g_cd);
        const double floor = fp32_cancellation_floor(qkv, dout, s, scale);
        for (int part = 0; part < 3; ++part)
          compare(label + " d" + "qkv"[part], part_of(got_tc, D, part), part_of(got_cd, D, part),
                  part_of(dqkv, D, part), part < 2 ? floor : 0.0);
      }
  }
  INFO("cuDNN SDPA ran forward on " << shapes_fwd << " and backward on " << shapes_bwd << " of 9 shapes");
  REQUIRE(shapes_fwd > 0);
  CHECK(shapes_bwd > 0);
}
#endif  // !SHORTCUT_CUDA_EMULATION && SHORTCUT_HAVE_CUDNN
