// Two ranks on CUDA devices, in the CPU emulation of CUDA (tests/emulation: each process has its own
// emulated device): the trainer on cuda::Backend over MPI, with the gradients staged through pinned
// host memory (this MPI is not CUDA-aware), takes the steps of one process on the same backend with
// the whole batch. Run by CTest as `mpiexec -n 2 mpi_cuda_emulated_test`; exits non-zero on any
// rank's failure. On a real GPU the same program runs unchanged (one device per local rank).
#include <cstdio>

#include "dist_common.hpp"
#include "shortcut/cuda.hpp"
#include "shortcut/dist/mpi.hpp"

using namespace disttest;
using CBe = cuda::Backend;
using CModel = ShortcutModel<nn::MlpNet<CBe>>;

int main(int argc, char** argv) {
  dist::MpiSession session(argc, argv);
  int failed = 0;
  {
    dist::MpiCommunicator comm;
    CBe be(cuda::Options{.device = -1, .tf32 = false});
    ShortcutConfig sc;
    AdamWConfig oc;
    oc.lr = 3e-3;
    TrainerConfig tc;
    tc.batch = 48;
    tc.steps = 4;
    tc.seed = 17;
    tc.progress = false;

    CModel distributed(be, net(), 5);
    Trainer<CModel, dist::MpiCommunicator> t(distributed, sc, oc, tc, comm);
    t.run(Trainer<CModel, dist::MpiCommunicator>::RowsFn(rows<float>));
    CModel alone(be, net(), 5);
    Trainer<CModel> t1(alone, sc, oc, tc);
    t1.run(Trainer<CModel>::RowsFn(rows<float>));

    const double tol = float_weight_tolerance(tc.steps, oc.lr);
    for (Role r : {Role::Param, Role::Ema}) {
      const double d = max_abs_diff(distributed.arena().to_host(r), alone.arena().to_host(r));
      const bool ok = d <= tol;
      failed |= !ok;
      std::printf("rank %d of %d, %s: max |2 ranks - 1 process| = %.3g (tolerance %.3g): %s\n", comm.rank(), comm.size(),
                  role_name(r), d, tol, ok ? "ok" : "FAILED");
    }
    if (comm.rank() == 0)
      std::printf("gradients %s; %.3f s in all-reduces\n",
                  comm.device_memory() ? "all-reduced in device memory (CUDA-aware MPI)"
                                       : "staged through pinned host memory",
                  t.allreduce_seconds());
    int64_t worst = failed;
    comm.all_reduce(&worst, 1, dist::ReduceOp::Max);
    failed = int(worst);
  }
  return failed;
}
