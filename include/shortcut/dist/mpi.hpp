// The MPI communicator (shortcut::dist::Communicator over MPI_COMM_WORLD or any communicator).
// Needs <mpi.h>: link the CMake target shortcut::mpi (built where MPI is found; Debian
// libopenmpi-dev). Every MPI call returns its error (MPI_ERRORS_RETURN) and a failure becomes a
// DistributedError naming the call and the rank; abort() is MPI_Abort, which ends every rank.
//
//   shortcut::dist::MpiSession session(argc, argv);   // MPI_Init .. MPI_Finalize
//   shortcut::dist::MpiCommunicator comm;             // MPI_COMM_WORLD
//
// A rank that dies is seen by the launcher (mpirun ends the job and names the rank); a rank that
// throws must call abort() (the examples do) so that the others do not wait in a collective forever.
#pragma once
#include <mpi.h>
#if defined(OPEN_MPI) && __has_include(<mpi-ext.h>)
#include <mpi-ext.h>  // MPIX_CUDA_AWARE_SUPPORT, MPIX_Query_cuda_support
#endif

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "shortcut/dist/communicator.hpp"

namespace shortcut::dist {

// True where the program was started by an MPI launcher (mpirun / mpiexec / srun with PMI): then a
// program built with MPI initialises it; started plainly, it runs as one process without MPI.
inline bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(v)) return true;
  return false;
}

// MPI_Init_thread(FUNNELED) in the constructor and MPI_Finalize in the destructor (when this object
// initialised MPI).
class MpiSession {
 public:
  MpiSession(int& argc, char**& argv) {
    int done = 0;
    MPI_Initialized(&done);
    if (!done) {
      int provided = 0;
      if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        throw DistributedError("MPI_Init_thread failed");
      owner_ = true;
    }
  }
  ~MpiSession() {
    int fin = 0;
    MPI_Finalized(&fin);
    if (owner_ && !fin) MPI_Finalize();
  }
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

 private:
  bool owner_ = false;
};

class MpiCommunicator {
 public:
  explicit MpiCommunicator(MPI_Comm comm = MPI_COMM_WORLD) {
    check(MPI_Comm_dup(comm, &comm_), "MPI_Comm_dup");
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
    // the rank among the processes of this machine: which GPU a rank drives
    MPI_Comm node;
    check(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node), "MPI_Comm_split_type");
    MPI_Comm_rank(node, &local_rank_);
    MPI_Comm_size(node, &local_size_);
    MPI_Comm_free(&node);
  }
  ~MpiCommunicator() {
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Comm_free(&comm_);
  }
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  MPI_Comm handle() const { return comm_; }

  // CUDA-aware MPI reads and writes device memory itself; otherwise callers stage through the host.
  bool device_memory() const {
#if defined(MPIX_CUDA_AWARE_SUPPORT) && MPIX_CUDA_AWARE_SUPPORT
    return MPIX_Query_cuda_support() == 1;
#else
    return false;
#endif
  }

  void all_reduce(float* p, size_t n, ReduceOp op) { reduce(p, n, MPI_FLOAT, op); }
  void all_reduce(double* p, size_t n, ReduceOp op) { reduce(p, n, MPI_DOUBLE, op); }
  void all_reduce(int64_t* p, size_t n, ReduceOp op) { reduce(p, n, MPI_INT64_T, op); }
  void broadcast(void* p, size_t bytes, int root) {
    if (root < 0 || root >= size_) throw DistributedError(cat("broadcast from rank ", root, " of ", size_));
    for (size_t off = 0; off < bytes; off += kChunk) {
      const int c = int(std::min(kChunk, bytes - off));
      check(MPI_Bcast(static_cast<char*>(p) + off, c, MPI_BYTE, root, comm_), "MPI_Bcast");
    }
  }
  void barrier() { check(MPI_Barrier(comm_), "MPI_Barrier"); }
  [[noreturn]] void abort(std::string_view msg, int code) {
    std::fprintf(stderr, "%.*s\n", int(msg.size()), msg.data());
    std::fflush(stderr);
    MPI_Abort(comm_, code);
    std::abort();
  }

 private:
  static constexpr size_t kChunk = size_t(1) << 30;  // MPI counts are int

  template <class T>
  void reduce(T* p, size_t n, MPI_Datatype type, ReduceOp op) {
    const MPI_Op o = op == ReduceOp::Sum ? MPI_SUM : op == ReduceOp::Max ? MPI_MAX : MPI_MIN;
    for (size_t off = 0; off < n; off += kChunk)
      check(MPI_Allreduce(MPI_IN_PLACE, p + off, int(std::min(kChunk, n - off)), type, o, comm_), "MPI_Allreduce");
  }
  void check(int rc, const char* call) const {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    throw DistributedError(cat(call, " failed on rank ", rank_, " of ", size_, ": ", std::string(text, size_t(len))));
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1;
};

static_assert(Communicator<MpiCommunicator>);

}  // namespace shortcut::dist
