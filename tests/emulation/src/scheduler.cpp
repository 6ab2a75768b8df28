// The emulator's execution engine: every CUDA thread of a block is a fiber (its own stack, switched
// by a few instructions of assembly), and a block runs on one host thread until each of its threads
// has exited. A fiber runs until it blocks in __syncthreads or a warp collective, or exits; the
// scheduler then runs the next runnable one, releases the barrier when every thread has reached it,
// and reports a divergent barrier or a deadlock as a fault of the launch. Blocks are shared out to
// a pool of host threads. It also checks the asynchronous shared-memory pipelines for races between
// warps (ldmatrix readers against cp.async writers in one barrier interval; SmemWord below).
//
// Under the sanitizers: AddressSanitizer is told of every stack switch; under ThreadSanitizer every
// fiber is a TSan fiber, switches carry no ordering, and only a barrier (every thread releases
// before it waits and acquires after) or a warp collective orders the accesses of two threads of a
// block, so a missing __syncthreads shows as a data race. This file is never instrumented itself.
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "internal.hpp"

#if !defined(__x86_64__)
#error "the emulator's fiber switch is written for x86-64"
#endif

extern "C" void shortcut_emu_switch(void** save_sp, void* load_sp);
extern "C" void shortcut_emu_trampoline();

// Saves the callee-saved registers, MXCSR and the x87 control word on the current stack, stores the
// stack pointer in *save_sp, loads load_sp and restores the same from there.
asm(R"(
.text
.p2align 4
.globl shortcut_emu_switch
.type shortcut_emu_switch,@function
shortcut_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size shortcut_emu_switch,.-shortcut_emu_switch
.p2align 4
.globl shortcut_emu_trampoline
.type shortcut_emu_trampoline,@function
shortcut_emu_trampoline:
  movq %r12, %rdi
  call shortcut_emu_fiber_entry@PLT
  ud2
.size shortcut_emu_trampoline,.-shortcut_emu_trampoline
)");

namespace emu {
namespace {

// A thread's cp.async copies not yet made (device.hpp): fixed arrays, since fibers must not allocate.
struct AsyncCopy {
  unsigned char* dst;
  const unsigned char* src;
  int bytes, src_bytes;
};
constexpr int kMaxAsyncCopies = 64, kMaxAsyncGroups = 8;

struct Fiber {
  void* sp = nullptr;
  char* stack = nullptr;  // usable stack [stack, stack + stack_size), a guard page below
  size_t stack_size = 0;
  ThreadState ts{};
  enum State : uint8_t { Runnable, AtBarrier, AtWarp, Exited } state = Exited;
  unsigned index = 0, lane = 0, warp = 0;
  void* asan_fake = nullptr;
  void* tsan_fiber = nullptr;
  char tsan_sync = 0;  // this thread's exit, for the block's end
  // cp.async in flight: copies [0, n_copies) in issue order; group g ends before group_end[g]
  AsyncCopy copies[kMaxAsyncCopies];
  int n_copies = 0, n_groups = 0;
  int group_end[kMaxAsyncGroups];
};

struct WarpSlot {
  uint32_t arrived = 0;  // lanes waiting in the current collective
  uint32_t exited = 0;   // lanes that have left the kernel
  WarpOp op[32];
  unsigned mask[32];
  uint64_t value[32];
  int arg[32];
  int width[32];
  uint64_t result[32];
  char tsan_sync = 0;
};

const char* op_name(WarpOp op) {
  switch (op) {
    case WarpOp::Shfl: return "__shfl_sync";
    case WarpOp::ShflUp: return "__shfl_up_sync";
    case WarpOp::ShflDown: return "__shfl_down_sync";
    case WarpOp::ShflXor: return "__shfl_xor_sync";
    case WarpOp::Ballot: return "__ballot_sync";
    case WarpOp::Any: return "__any_sync";
    case WarpOp::All: return "__all_sync";
    case WarpOp::Sync: return "__syncwarp";
    case WarpOp::MmaBf16: return "mma.sync.m16n8k16.bf16";
    case WarpOp::LdMatrix: return "ldmatrix.sync.m8n8";
  }
  return "?";
}

size_t stack_bytes() {
#if defined(EMU_ASAN) || defined(EMU_TSAN)
  const int kb = env_int("SHORTCUT_EMU_STACK_KB", 512);
#else
  const int kb = env_int("SHORTCUT_EMU_STACK_KB", 128);
#endif
  return size_t(kb) << 10;
}

constexpr size_t kSmemGuard = 4096;
constexpr unsigned char kGuardByte = 0xA5;

// Shared-memory races between warps that the scheduler's order could hide: for each 4-byte word of a
// block's dynamic shared memory, within the current barrier interval (the epoch, advanced at every
// __syncthreads release), the warps that read it by ldmatrix and the warp whose cp.async wrote it (at
// issue, and again where its wait_group lands it), and the warp whose cp.async to it is still in
// flight. A read and a write by different warps in one interval, in either order, is a race on a GPU
// whatever order the emulation happened to run them in; so is any ldmatrix of a word whose cp.async
// has not landed. Plain loads and stores are not seen (they are not instrumented): the check covers
// the asynchronous pipelines (cp.async refills against ldmatrix readers), where a missing barrier
// goes unseen when the warps run in step.
struct SmemWord {
  uint64_t epoch = 0;
  uint32_t readers = 0;  // warps (bit w) that read the word by ldmatrix in `epoch`
  int32_t writer = -1;   // the warp whose cp.async wrote it in `epoch`
  int32_t flying = -1;   // the warp whose cp.async to it is in flight
};

struct Worker {
  std::vector<std::unique_ptr<Fiber>> fibers;
  std::vector<WarpSlot> warps;
  unsigned char* smem = nullptr;
  size_t smem_cap = 0;
  void* sched_sp = nullptr;
  Fiber* current = nullptr;
  const void* sched_bottom = nullptr;
  size_t sched_size = 0;
  void* sched_fake = nullptr;
  void* tsan_sched = nullptr;
  char tsan_block_start = 0, tsan_barrier = 0;
  std::mt19937 rng{unsigned(env_int("SHORTCUT_EMU_SEED", 1))};

  // the block in progress
  GridJob* job = nullptr;
  unsigned nthreads = 0;
  bool faulted = false;
  // Runnable fibers in the order they run: a ring of the block's size (a fiber is in it at most once),
  // sized before the block starts, so fibers never allocate (ThreadSanitizer would see that as a race).
  std::vector<unsigned> ready;
  size_t ready_head = 0, ready_count = 0;
  void push_ready(unsigned i) { ready[(ready_head + ready_count++) % nthreads] = i; }
  Fiber* pop_ready() {  // null when none is ready
    if (!ready_count) return nullptr;
    const unsigned i = ready[ready_head];
    ready_head = (ready_head + 1) % nthreads;
    --ready_count;
    return fibers[i].get();
  }
  unsigned at_barrier = 0, exited = 0;
  std::vector<SmemWord> smem_words;  // sized with smem, outside the fibers (they must not allocate)
  uint64_t epoch = 1;
  // the word's record for the current interval
  SmemWord& word(const void* p) {
    SmemWord& x = smem_words[size_t(static_cast<const unsigned char*>(p) - smem) / 4];
    if (x.epoch != epoch) {
      x.epoch = epoch;
      x.readers = 0;
      x.writer = -1;
    }
    return x;
  }

  ~Worker() {
    for (auto& f : fibers) {
      if (f->stack) munmap(f->stack - page(), f->stack_size + page());
#if defined(EMU_TSAN)
      if (f->tsan_fiber) __tsan_destroy_fiber(f->tsan_fiber);
#endif
    }
    std::free(smem);
  }
  static size_t page() { return size_t(sysconf(_SC_PAGESIZE)); }

  Fiber& fiber(unsigned i) {
    while (fibers.size() <= i) {
      auto f = std::make_unique<Fiber>();
      f->stack_size = stack_bytes();
      void* m = mmap(nullptr, f->stack_size + page(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
      if (m == MAP_FAILED) {
        std::fprintf(stderr, "emulation: cannot map a fiber stack\n");
        std::abort();
      }
      mprotect(m, page(), PROT_NONE);  // a stack overflow faults instead of corrupting the next stack
      f->stack = static_cast<char*>(m) + page();
#if defined(EMU_TSAN)
      f->tsan_fiber = __tsan_create_fiber(0);
#endif
      f->index = unsigned(fibers.size());
      fibers.push_back(std::move(f));
    }
    return *fibers[i];
  }
};

thread_local Worker* tl_worker = nullptr;
thread_local const ThreadState* tl_self = nullptr;

Worker& worker() {
  static thread_local std::unique_ptr<Worker> w;
  if (!w) {
    w = std::make_unique<Worker>();
    tl_worker = w.get();
#if defined(EMU_TSAN)
    w->tsan_sched = __tsan_get_current_fiber();
#endif
#if defined(EMU_ASAN)
    pthread_attr_t attr;
    void* addr = nullptr;
    size_t size = 0;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
      pthread_attr_getstack(&attr, &addr, &size);
      pthread_attr_destroy(&attr);
    }
    w->sched_bottom = addr;
    w->sched_size = size;
#endif
  }
  return *w;
}

Worker& on_fiber(const char* what) {
  Worker* w = tl_worker;
  if (!w || !w->current) {
    std::fprintf(stderr, "emulation: %s called outside a kernel\n", what);
    std::abort();
  }
  return *w;
}

uint64_t csr_word() {
  uint32_t mxcsr;
  uint16_t cw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(cw));
  return uint64_t(mxcsr) | (uint64_t(cw) << 32);
}

// A fresh start for fiber f: the frame that shortcut_emu_switch pops, returning into the trampoline.
void reset_fiber(Fiber& f, uint64_t csr, bool abandoned) {
#if defined(EMU_ASAN)
  // A fiber that exited left only its entry frame, which the next one overlays exactly; one abandoned
  // in a faulted block left deeper frames whose redzones are still poisoned.
  // A fiber that exited left its last frames live (the entry and the final switch, from f.sp up):
  // their redzones would poison the next block's frames at that depth.
  if (abandoned) {
    __asan_unpoison_memory_region(f.stack, f.stack_size);
  } else if (f.sp) {
    const auto low = reinterpret_cast<uintptr_t>(f.sp), top = reinterpret_cast<uintptr_t>(f.stack) + f.stack_size;
    __asan_unpoison_memory_region(f.sp, top - low);
  }
#else
  (void)abandoned;
#endif
  auto* sp = reinterpret_cast<uint64_t*>((reinterpret_cast<uintptr_t>(f.stack) + f.stack_size) & ~uintptr_t(15));
  *--sp = reinterpret_cast<uint64_t>(&shortcut_emu_trampoline);
  *--sp = 0;                                  // rbp
  *--sp = 0;                                  // rbx
  *--sp = reinterpret_cast<uint64_t>(&f);     // r12: the trampoline's argument
  *--sp = 0;                                  // r13
  *--sp = 0;                                  // r14
  *--sp = 0;                                  // r15
  *--sp = csr;
  f.sp = sp;
  f.asan_fake = nullptr;
}

// Fiber f blocks or exits: the next ready fiber runs (a direct switch, which halves the switches of a
// warp collective), or the scheduler when none is ready or f faulted. `leaving`: f will not be resumed
// in this block.
void yield_from(Worker& w, Fiber& f, bool leaving, bool to_scheduler = false) {
  Fiber* next = nullptr;
  if (!to_scheduler) next = w.pop_ready();
  void* target = w.sched_sp;
  if (next) {
    w.current = next;
    tl_self = &next->ts;
    target = next->sp;
  }
#if defined(EMU_TSAN)
  __tsan_switch_to_fiber(next ? next->tsan_fiber : w.tsan_sched, __tsan_switch_to_fiber_no_sync);
#endif
#if defined(EMU_ASAN)
  __sanitizer_start_switch_fiber(leaving ? nullptr : &f.asan_fake, next ? next->stack : w.sched_bottom,
                                 next ? next->stack_size : w.sched_size);
#else
  (void)leaving;
#endif
  shortcut_emu_switch(&f.sp, target);
#if defined(EMU_ASAN)
  __sanitizer_finish_switch_fiber(f.asan_fake, nullptr, nullptr);
#endif
}

// scheduler -> fiber, back when the fiber blocks or exits
void run_fiber(Worker& w, Fiber& f) {
  w.current = &f;
  tl_self = &f.ts;
#if defined(EMU_TSAN)
  __tsan_switch_to_fiber(f.tsan_fiber, __tsan_switch_to_fiber_no_sync);
#endif
#if defined(EMU_ASAN)
  __sanitizer_start_switch_fiber(&w.sched_fake, f.stack, f.stack_size);
#endif
  shortcut_emu_switch(&w.sched_sp, f.sp);
#if defined(EMU_ASAN)
  __sanitizer_finish_switch_fiber(w.sched_fake, nullptr, nullptr);
#endif
  w.current = nullptr;
  tl_self = nullptr;
}

std::string where(const Worker& w, const Fiber& f) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "kernel %s, block (%u,%u,%u), thread (%u,%u,%u)", w.job->name, f.ts.bid.x, f.ts.bid.y,
                f.ts.bid.z, f.ts.tid.x, f.ts.tid.y, f.ts.tid.z);
  return buf;
}

// Marks the block (and the grid) faulted; the first fault of a grid is the one reported.
void fault(Worker& w, cudaError_t code, const std::string& what) {
  w.faulted = true;
  bool expected = false;
  if (w.job->faulted.compare_exchange_strong(expected, true)) {
    w.job->fault_code = code;
    w.job->fault = what;
  }
}

// `what` is a C string: the fiber never returns, so a std::string temporary of the caller would leak.
[[noreturn]] void fault_from_fiber(Worker& w, Fiber& f, cudaError_t code, const char* what) {
  fault(w, code, where(w, f) + ": " + what);
  yield_from(w, f, true, true);
  std::abort();  // a faulted block is never resumed
}

std::string describe_waits(const Worker& w) {
  std::string s = std::to_string(w.at_barrier) + " thread(s) wait in __syncthreads, " + std::to_string(w.exited) +
                  " exited";
  for (size_t k = 0; k < w.warps.size() && k * 32 < w.nthreads; ++k) {
    const WarpSlot& ws = w.warps[k];
    if (!ws.arrived) continue;
    const int l = __builtin_ctz(ws.arrived);
    char buf[160];
    std::snprintf(buf, sizeof buf, "; warp %zu: lanes 0x%08x wait in %s(mask 0x%08x)", k, ws.arrived,
                  op_name(ws.op[l]), ws.mask[l]);
    s += buf;
  }
  return s;
}

std::string block_str(uint3 b) {
  return "(" + std::to_string(b.x) + "," + std::to_string(b.y) + "," + std::to_string(b.z) + ")";
}

void run_block(Worker& w, GridJob& job, uint3 bid) {
  const unsigned n = job.block.x * job.block.y * job.block.z;
  w.job = &job;
  w.nthreads = n;
  const bool after_fault = w.faulted;
  w.faulted = false;
  const unsigned nwarps = (n + 31) / 32;
  if (w.warps.size() < nwarps) w.warps.resize(nwarps);
  for (unsigned k = 0; k < nwarps; ++k) w.warps[k].arrived = w.warps[k].exited = 0;
  // Dynamic shared memory: exactly job.smem bytes, poisoned, then a guard band: a write past the end
  // is caught after the block (the band changed), and under AddressSanitizer any access at once.
  if (w.smem_cap < job.smem + kSmemGuard) {
#if defined(EMU_ASAN)
    if (w.smem) __asan_unpoison_memory_region(w.smem, w.smem_cap);
#endif
    std::free(w.smem);
    w.smem_cap = (job.smem + kSmemGuard + 127) / 128 * 128;
    w.smem = static_cast<unsigned char*>(std::aligned_alloc(128, w.smem_cap));
  }
#if defined(EMU_ASAN)
  __asan_unpoison_memory_region(w.smem, w.smem_cap);
#endif
  std::memset(w.smem, 0xFF, job.smem);  // NaN in fp32 and bf16: an unwritten value shows
  if (w.smem_words.size() < job.smem / 4 + 1) w.smem_words.resize(job.smem / 4 + 1);
  std::fill(w.smem_words.begin(), w.smem_words.begin() + std::ptrdiff_t(job.smem / 4 + 1), SmemWord{});
  ++w.epoch;
  std::memset(w.smem + job.smem, kGuardByte, kSmemGuard);
#if defined(EMU_ASAN)
  __asan_poison_memory_region(w.smem + job.smem, w.smem_cap - job.smem);
#endif
  const uint64_t csr = csr_word();
  for (unsigned i = 0; i < n; ++i) {
    Fiber& f = w.fiber(i);
    f.ts.tid = uint3{i % job.block.x, (i / job.block.x) % job.block.y, i / (job.block.x * job.block.y)};
    f.ts.bid = bid;
    f.ts.bdim = job.block;
    f.ts.gdim = job.grid;
    f.lane = i % 32;
    f.warp = i / 32;
    f.state = Fiber::Runnable;
    f.n_copies = f.n_groups = 0;  // a thread's copies die with its block
    reset_fiber(f, csr, after_fault);
  }
#if defined(EMU_TSAN)
  __tsan_release(&w.tsan_block_start);  // the launch's arguments, the previous blocks of this host thread
#endif

  static const int order = [] {
    const char* e = std::getenv("SHORTCUT_EMU_ORDER");
    if (!e || !*e || std::string(e) == "forward") return 0;
    if (std::string(e) == "reverse") return 1;
    if (std::string(e) == "random") return 2;
    std::fprintf(stderr, "emulation: SHORTCUT_EMU_ORDER=%s is not forward, reverse or random\n", e);
    std::abort();
  }();
  // every thread, in the order SHORTCUT_EMU_ORDER asks for (also at every barrier release)
  auto enqueue_all = [&] {
    for (unsigned i = 0; i < n; ++i) w.ready[i] = order == 1 ? n - 1 - i : i;  // the ring is empty here
    if (order == 2) std::shuffle(w.ready.begin(), w.ready.begin() + n, w.rng);
    w.ready_head = 0;
    w.ready_count = n;
  };
  if (w.ready.size() < n) w.ready.resize(n);
  w.ready_head = w.ready_count = 0;
  w.at_barrier = w.exited = 0;
  enqueue_all();
  for (;;) {
    while (Fiber* f = w.pop_ready()) {
      run_fiber(w, *f);
      if (w.faulted) return;
    }
    if (w.exited == n) break;
    if (w.at_barrier + w.exited == n) {
      if (w.exited) {
        fault(w, cudaErrorLaunchFailure,
              std::string("kernel ") + job.name + ": divergent __syncthreads in block " + block_str(bid) + ": " +
                  describe_waits(w) + " (every thread of a block must reach the barrier)");
        return;
      }
      w.at_barrier = 0;
      ++w.epoch;  // a new barrier interval
      for (unsigned i = 0; i < n; ++i) w.fibers[i]->state = Fiber::Runnable;
      enqueue_all();
      continue;
    }
    fault(w, cudaErrorLaunchFailure,
          std::string("kernel ") + job.name + ": deadlock in block " + block_str(bid) + ": " + describe_waits(w));
    return;
  }
#if defined(EMU_ASAN)
  __asan_unpoison_memory_region(w.smem + job.smem, kSmemGuard);
#endif
  for (size_t i = 0; i < kSmemGuard; ++i)
    if (w.smem[job.smem + i] != kGuardByte) {
      fault(w, cudaErrorIllegalAddress,
            std::string("kernel ") + job.name + ", block " + block_str(bid) + ": wrote past the end of its " +
                std::to_string(job.smem) + " bytes of dynamic shared memory (at byte " +
                std::to_string(job.smem + i) + ")");
      return;
    }
#if defined(EMU_TSAN)
  for (unsigned i = 0; i < n; ++i) __tsan_acquire(&w.fibers[i]->tsan_sync);  // the block's writes, for the host
#endif
}

// ---- the pool of host threads that share out a grid's blocks ------------------------------------
class Pool {
 public:
  Pool() {
    int n = env_int("SHORTCUT_EMU_THREADS", int(std::thread::hardware_concurrency()));
    for (int i = 1; i < std::max(n, 1); ++i) threads_.emplace_back([this] { loop(); });
  }
  void run(GridJob& job) {
    const uint64_t total = uint64_t(job.grid.x) * job.grid.y * job.grid.z;
    std::atomic<uint64_t> next{0};
    if (total > 1 && !threads_.empty()) {
      {
        std::lock_guard<std::mutex> l(m_);
        job_ = &job;
        next_ = &next;
        active_ = int(threads_.size());
        ++gen_;
      }
      cv_.notify_all();
      work(job, next);
      std::unique_lock<std::mutex> l(m_);
      done_.wait(l, [&] { return active_ == 0; });
      job_ = nullptr;
    } else {
      work(job, next);
    }
  }

 private:
  std::vector<std::thread> threads_;
  std::mutex m_;
  std::condition_variable cv_, done_;
  GridJob* job_ = nullptr;
  std::atomic<uint64_t>* next_ = nullptr;
  uint64_t gen_ = 0;
  int active_ = 0;

  static void work(GridJob& job, std::atomic<uint64_t>& next) {
    Worker& w = worker();
    const uint64_t total = uint64_t(job.grid.x) * job.grid.y * job.grid.z;
    for (uint64_t b; !job.faulted.load() && (b = next.fetch_add(1)) < total;) {
      const uint3 bid{unsigned(b % job.grid.x), unsigned((b / job.grid.x) % job.grid.y),
                      unsigned(b / (uint64_t(job.grid.x) * job.grid.y))};
      run_block(w, job, bid);
    }
  }
  void loop() {
    uint64_t seen = 0;
    for (;;) {
      GridJob* job;
      std::atomic<uint64_t>* next;
      {
        std::unique_lock<std::mutex> l(m_);
        cv_.wait(l, [&] { return gen_ != seen; });
        seen = gen_;
        job = job_;
        next = next_;
      }
      work(*job, *next);
      std::lock_guard<std::mutex> l(m_);
      if (--active_ == 0) done_.notify_all();
    }
  }
};

}  // namespace

// ---- what device code calls --------------------------------------------------------------------
const ThreadState& self() {
  if (!tl_self) {
    std::fprintf(stderr, "emulation: threadIdx/blockIdx read outside a kernel\n");
    std::abort();
  }
  return *tl_self;
}

void* dynamic_smem_ptr() { return on_fiber("dynamic shared memory").smem; }

void syncthreads() {
  Worker& w = on_fiber("__syncthreads");
  Fiber& f = *w.current;
#if defined(EMU_TSAN)
  __tsan_release(&w.tsan_barrier);
#endif
  f.state = Fiber::AtBarrier;
  ++w.at_barrier;
  yield_from(w, f, false);
#if defined(EMU_TSAN)
  __tsan_acquire(&w.tsan_barrier);
#endif
}

// mma.m16n8k16 bf16 -> fp32 for a whole warp: value[l] points to lane l's MmaBf16Fragments. The
// layouts, with g = lane / 4 and q = lane % 4 (PTX ISA tables):
//   A: a_i at row g + 8 * ((i / 2) % 2), column 2q + (i % 2) + 8 * (i / 4); a_{2j}, a_{2j+1} in a[j]
//   B: b_i at row (k) 2q + (i % 2) + 8 * (i / 2), column (n) g;              b_{2j}, b_{2j+1} in b[j]
//   C, D: c_i at row g + 8 * (i / 2), column 2q + (i % 2)
// The products of two bf16 are exact in fp32; the sum is taken in double and rounded once (the
// device's fp32 accumulation is at least this close to exact, within the tolerances of the tests).
void mma_bf16(WarpSlot& s) {
  float A[16][16], B[16][8], C[16][8];
  auto half = [](uint32_t reg, int i) {
    const uint32_t u = (i % 2 ? reg >> 16 : reg & 0xffffu) << 16;
    float v;
    std::memcpy(&v, &u, 4);
    return v;
  };
  for (int l = 0; l < 32; ++l) {
    const auto* f = reinterpret_cast<const MmaBf16Fragments*>(s.value[l]);
    const int g = l / 4, q = l % 4;
    for (int i = 0; i < 8; ++i) A[g + 8 * ((i / 2) % 2)][2 * q + (i % 2) + 8 * (i / 4)] = half(f->a[i / 2], i);
    for (int i = 0; i < 4; ++i) B[2 * q + (i % 2) + 8 * (i / 2)][g] = half(f->b[i / 2], i);
    for (int i = 0; i < 4; ++i) C[g + 8 * (i / 2)][2 * q + (i % 2)] = f->c[i];
  }
  for (int l = 0; l < 32; ++l) {
    auto* f = reinterpret_cast<MmaBf16Fragments*>(s.value[l]);
    const int g = l / 4, q = l % 4;
    for (int i = 0; i < 4; ++i) {
      const int r = g + 8 * (i / 2), c = 2 * q + (i % 2);
      double acc = C[r][c];
      for (int k = 0; k < 16; ++k) acc += double(A[r][k]) * B[k][c];
      f->d[i] = float(acc);
    }
  }
}

// ldmatrix for a whole warp: value[l] points to lane l's LdMatrixCall (device.hpp says the layout).
void ldmatrix_all(WarpSlot& s) {
  const auto* c0 = reinterpret_cast<const LdMatrixCall*>(s.value[0]);
  uint16_t M[4][8][8];
  for (int m = 0; m < c0->num; ++m)
    for (int i = 0; i < 8; ++i)
      std::memcpy(M[m][i], reinterpret_cast<const LdMatrixCall*>(s.value[8 * m + i])->row, 16);
  for (int l = 0; l < 32; ++l) {
    auto* c = reinterpret_cast<LdMatrixCall*>(s.value[l]);
    const int r = l / 4, w = l % 4;
    for (int m = 0; m < c0->num; ++m) {
      const uint16_t lo = c0->trans ? M[m][2 * w][r] : M[m][r][2 * w];
      const uint16_t hi = c0->trans ? M[m][2 * w + 1][r] : M[m][r][2 * w + 1];
      c->r[m] = uint32_t(lo) | (uint32_t(hi) << 16);
    }
  }
}

uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t value, int arg, int width) {
  Worker& w = on_fiber(op_name(op));
  Fiber& f = *w.current;
  WarpSlot& s = w.warps[f.warp];
  const unsigned lane = f.lane;
  const unsigned first = f.warp * 32;
  const unsigned count = std::min(32u, w.nthreads - first);
  const unsigned exists = count == 32 ? 0xffffffffu : ((1u << count) - 1);
  char buf[200];
  if (!((mask >> lane) & 1u)) {
    std::snprintf(buf, sizeof buf, "%s with mask 0x%08x that leaves out the calling lane %u", op_name(op), mask, lane);
    fault_from_fiber(w, f, cudaErrorIllegalInstruction, buf);
  }
  if (mask & ~exists) {
    std::snprintf(buf, sizeof buf, "%s with mask 0x%08x names lanes that do not exist (this warp has %u)", op_name(op),
                  mask, count);
    fault_from_fiber(w, f, cudaErrorIllegalInstruction, buf);
  }
  if (op == WarpOp::LdMatrix) {
    const auto* c = reinterpret_cast<const LdMatrixCall*>(value);
    const auto row = reinterpret_cast<uintptr_t>(c->row), smem = reinterpret_cast<uintptr_t>(w.smem);
    if (c->num != 1 && c->num != 2 && c->num != 4) {
      std::snprintf(buf, sizeof buf, "ldmatrix of %d matrices (x1, x2 or x4)", c->num);
      fault_from_fiber(w, f, cudaErrorIllegalInstruction, buf);
    }
    if (int(lane) < 8 * c->num) {  // the lanes whose address is read
      if (row % 16) {
        std::snprintf(buf, sizeof buf, "ldmatrix row address %p of lane %u is not 16-byte aligned", c->row, lane);
        fault_from_fiber(w, f, cudaErrorMisalignedAddress, buf);
      }
      if (row < smem || row + 16 > smem + w.job->smem) {
        std::snprintf(buf, sizeof buf, "ldmatrix row address %p of lane %u is outside the block's %zu bytes of "
                      "dynamic shared memory", c->row, lane, w.job->smem);
        fault_from_fiber(w, f, cudaErrorIllegalAddress, buf);
      }
      for (int b = 0; b < 16; b += 4) {
        SmemWord& x = w.word(static_cast<const unsigned char*>(c->row) + b);
        if (x.flying >= 0 || (x.writer >= 0 && x.writer != int(f.warp))) {
          std::snprintf(buf, sizeof buf, "shared-memory race: ldmatrix by warp %u reads %p, which %s (a cp.async's "
                        "wait_group and then a __syncthreads must come between)", f.warp,
                        static_cast<const unsigned char*>(c->row) + b,
                        x.flying >= 0 ? "a cp.async still writes" : "another warp's cp.async wrote in this barrier interval");
          fault_from_fiber(w, f, cudaErrorLaunchFailure, buf);
        }
        x.readers |= 1u << f.warp;
      }
    }
  }
  if ((op == WarpOp::MmaBf16 || op == WarpOp::LdMatrix) && (mask != 0xffffffffu || count != 32)) {
    std::snprintf(buf, sizeof buf, "%s needs all 32 lanes of a full warp (mask 0x%08x, %u lanes)", op_name(op), mask,
                  count);
    fault_from_fiber(w, f, cudaErrorIllegalInstruction, buf);
  }
  if (op <= WarpOp::ShflXor && (width < 1 || width > 32 || (width & (width - 1)))) {
    std::snprintf(buf, sizeof buf, "%s with width %d (a power of two up to 32)", op_name(op), width);
    fault_from_fiber(w, f, cudaErrorIllegalInstruction, buf);
  }
  if (mask & s.exited) {
    std::snprintf(buf, sizeof buf, "%s(mask 0x%08x) waits for lane %d, which has exited", op_name(op), mask,
                  __builtin_ctz(mask & s.exited));
    fault_from_fiber(w, f, cudaErrorIllegalInstruction, buf);
  }
  // lanes of the mask already waiting must be in this collective (each was checked against the ones
  // before it, so one comparison covers them all)
  if (const uint32_t m = mask & s.arrived) {
    const unsigned l = unsigned(__builtin_ctz(m));
    if (s.op[l] != op || s.mask[l] != mask) {
      std::snprintf(buf, sizeof buf, "%s(mask 0x%08x) while lane %u waits in %s(mask 0x%08x)", op_name(op), mask, l,
                    op_name(s.op[l]), s.mask[l]);
      fault_from_fiber(w, f, cudaErrorIllegalInstruction, buf);
    }
  }
#if defined(EMU_TSAN)
  __tsan_release(&s.tsan_sync);
#endif
  s.op[lane] = op;
  s.mask[lane] = mask;
  s.value[lane] = value;
  s.arg[lane] = arg;
  s.width[lane] = width;
  s.arrived |= 1u << lane;
  if ((s.arrived & mask) != mask) {
    f.state = Fiber::AtWarp;
    yield_from(w, f, false);
#if defined(EMU_TSAN)
    __tsan_acquire(&s.tsan_sync);
#endif
    return s.result[lane];
  }
  // the last lane of the mask: every lane's result, then wake the others
  if (op == WarpOp::MmaBf16) mma_bf16(s);
  if (op == WarpOp::LdMatrix) ldmatrix_all(s);
  constexpr uint64_t kUndefined = ~uint64_t(0);  // a source lane outside the mask: NaN, so it shows
  uint32_t pred = 0;
  for (uint32_t m = mask; m; m &= m - 1)
    if (s.value[__builtin_ctz(m)]) pred |= 1u << __builtin_ctz(m);
  for (uint32_t m = mask; m; m &= m - 1) {
    const unsigned l = unsigned(__builtin_ctz(m));
    const int wd = s.width[l];
    const unsigned base = l & ~unsigned(wd - 1);
    long src = l;
    switch (op) {
      case WarpOp::Shfl: src = base + (unsigned(s.arg[l]) & unsigned(wd - 1)); break;
      case WarpOp::ShflUp: src = (l - base) >= unsigned(s.arg[l]) ? long(l) - s.arg[l] : long(l); break;
      case WarpOp::ShflDown: src = (l - base) + unsigned(s.arg[l]) < unsigned(wd) ? long(l) + s.arg[l] : long(l); break;
      case WarpOp::ShflXor: {
        const unsigned x = l ^ unsigned(s.arg[l]);
        src = (x / unsigned(wd) == l / unsigned(wd)) && x < 32 ? long(x) : long(l);
        break;
      }
      default: break;
    }
    switch (op) {
      case WarpOp::Ballot: s.result[l] = pred; break;
      case WarpOp::Any: s.result[l] = pred != 0; break;
      case WarpOp::All: s.result[l] = pred == mask; break;
      case WarpOp::Sync: s.result[l] = 0; break;
      default: s.result[l] = ((mask >> src) & 1u) ? s.value[src] : kUndefined; break;
    }
    if (l != lane) {
      w.fibers[first + l]->state = Fiber::Runnable;
      w.push_ready(first + l);
    }
  }
  s.arrived &= ~mask;
#if defined(EMU_TSAN)
  __tsan_release(&s.tsan_sync);
  __tsan_acquire(&s.tsan_sync);
#endif
  return s.result[lane];
}

void trap(const char* why) {
  Worker& w = on_fiber("__trap");
  fault_from_fiber(w, *w.current, cudaErrorLaunchFailure, why);
}

void misaligned(const char* why) {
  Worker& w = on_fiber("a vector access");
  fault_from_fiber(w, *w.current, cudaErrorMisalignedAddress, why);
}

void cp_async(void* dst, const void* src, int bytes, int src_bytes) {
  Worker& w = on_fiber("cp.async");
  Fiber& f = *w.current;
  char buf[200];
  const auto d = reinterpret_cast<uintptr_t>(dst), sm = reinterpret_cast<uintptr_t>(w.smem);
  if ((bytes != 4 && bytes != 8 && bytes != 16) || src_bytes < 0 || src_bytes > bytes) {
    std::snprintf(buf, sizeof buf, "cp.async of %d bytes reading %d (4, 8 or 16; at most that many read)", bytes,
                  src_bytes);
    fault_from_fiber(w, f, cudaErrorIllegalInstruction, buf);
  }
  if (d % unsigned(bytes) || reinterpret_cast<uintptr_t>(src) % unsigned(bytes)) {
    std::snprintf(buf, sizeof buf, "cp.async of %d bytes from %p to %p: both addresses must be %d-byte aligned", bytes,
                  src, dst, bytes);
    fault_from_fiber(w, f, cudaErrorMisalignedAddress, buf);
  }
  if (d < sm || d + unsigned(bytes) > sm + w.job->smem) {
    std::snprintf(buf, sizeof buf, "cp.async to %p, outside the block's %zu bytes of dynamic shared memory", dst,
                  w.job->smem);
    fault_from_fiber(w, f, cudaErrorIllegalAddress, buf);
  }
  if (f.n_copies == kMaxAsyncCopies) {
    std::snprintf(buf, sizeof buf, "more than %d cp.async copies in flight in one thread (an emulation limit)",
                  kMaxAsyncCopies);
    fault_from_fiber(w, f, cudaErrorLaunchFailure, buf);
  }
  for (int b = 0; b < bytes; b += 4) {
    SmemWord& x = w.word(static_cast<unsigned char*>(dst) + b);
    const uint32_t others = x.readers & ~(1u << f.warp);
    if (others || (x.writer >= 0 && x.writer != int(f.warp)) || (x.flying >= 0 && x.flying != int(f.warp))) {
      std::snprintf(buf, sizeof buf, "shared-memory race: cp.async by warp %u writes %p, which warp %d %s in this "
                    "barrier interval (a __syncthreads must come between)", f.warp,
                    static_cast<unsigned char*>(dst) + b,
                    others ? __builtin_ctz(others) : x.writer >= 0 && x.writer != int(f.warp) ? x.writer : x.flying,
                    others ? "read by ldmatrix" : "also writes by cp.async");
      fault_from_fiber(w, f, cudaErrorLaunchFailure, buf);
    }
    x.writer = int(f.warp);
    x.flying = int(f.warp);
  }
  std::memset(dst, 0xFF, size_t(bytes));  // in flight: NaN until the wait
  f.copies[f.n_copies++] = AsyncCopy{static_cast<unsigned char*>(dst), static_cast<const unsigned char*>(src), bytes,
                                     src_bytes};
}

void cp_async_commit() {
  Worker& w = on_fiber("cp.async.commit_group");
  Fiber& f = *w.current;
  if (f.n_groups == kMaxAsyncGroups)
    fault_from_fiber(w, f, cudaErrorLaunchFailure, "more than 8 cp.async groups in flight (an emulation limit)");
  f.group_end[f.n_groups++] = f.n_copies;
}

void cp_async_wait(int pending) {
  Worker& w = on_fiber("cp.async.wait_group");
  Fiber& f = *w.current;
  if (f.n_groups <= pending) return;
  const int done = f.n_groups - pending, end = f.group_end[done - 1];
  for (int i = 0; i < end; ++i) {
    const AsyncCopy& c = f.copies[i];
    if (c.src_bytes) std::memcpy(c.dst, c.src, size_t(c.src_bytes));
    std::memset(c.dst + c.src_bytes, 0, size_t(c.bytes - c.src_bytes));
    for (int b = 0; b < c.bytes; b += 4) {  // landed now: other warps may read it after a barrier
      SmemWord& x = w.word(c.dst + b);
      x.flying = -1;
      x.writer = int(f.warp);
    }
  }
  // the groups still in flight move to the front
  for (int i = end; i < f.n_copies; ++i) f.copies[i - end] = f.copies[i];
  f.n_copies -= end;
  for (int g = done; g < f.n_groups; ++g) f.group_end[g - done] = f.group_end[g] - end;
  f.n_groups -= done;
}

void run_grid(GridJob& job) {
  static Pool* pool = new Pool;  // never destroyed: host threads may still launch while statics die
  pool->run(job);
}

int env_int(const char* name, int fallback) {
  const char* e = std::getenv(name);
  if (!e || !*e) return fallback;
  char* end = nullptr;
  const long v = std::strtol(e, &end, 10);
  if (*end || v <= 0 || v > (1 << 24)) {
    std::fprintf(stderr, "emulation: %s=%s is not a positive integer\n", name, e);
    std::abort();
  }
  return int(v);
}

}  // namespace emu

// The first code a fiber runs (from the trampoline, on its own stack).
extern "C" [[noreturn]] void shortcut_emu_fiber_entry(void* arg) {
  using namespace emu;
  Fiber& f = *static_cast<Fiber*>(arg);
  Worker& w = *tl_worker;
#if defined(EMU_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
#if defined(EMU_TSAN)
  __tsan_acquire(&w.tsan_block_start);
#endif
  // faulted outside the handler (a fiber must not switch away inside a catch block), from a buffer
  // that needs no destructor (this frame is never left)
  char thrown[256] = "";
  try {
    w.job->kernel->run_thread();
  } catch (const std::exception& e) {
    std::snprintf(thrown, sizeof thrown, "exception in device code: %s", e.what());
  } catch (...) {
    std::snprintf(thrown, sizeof thrown, "exception in device code");
  }
  if (thrown[0]) fault_from_fiber(w, f, cudaErrorLaunchFailure, thrown);
  // lanes of this warp that wait for this one in a collective would wait forever
  WarpSlot& s = w.warps[f.warp];
  for (uint32_t m = s.arrived; m; m &= m - 1)
    if (const unsigned l = unsigned(__builtin_ctz(m)); (s.mask[l] >> f.lane) & 1u) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "exits while lane %u waits for it in %s(mask 0x%08x)", l, op_name(s.op[l]),
                    s.mask[l]);
      fault_from_fiber(w, f, cudaErrorIllegalInstruction, buf);
    }
  f.state = Fiber::Exited;
  s.exited |= 1u << f.lane;
  ++w.exited;
#if defined(EMU_TSAN)
  __tsan_release(&f.tsan_sync);
#endif
  yield_from(w, f, true);
  std::abort();
}
