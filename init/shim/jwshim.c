// jwshim: the few system calls jobworker cannot make from JavaScript.
//
// The worker calls jw_spawn() through Deno FFI to clone3() a child into new PID, mount, IPC and
// UTS namespaces; the child execs jwstart (jwdirect.c, the direct start, linked with this file),
// or the jobworker program as `init`, either of which calls the jw_* helpers below to finish the
// isolation and exec the job's command.
//
// Conventions: every function returns >= 0 on success and -errno on failure. The shim never prints
// and never allocates after clone3 (the parent is multi-threaded, so the child may only make
// async-signal-safe calls until it execs).
//
// On x86-64 the child shares the worker's memory until it execs (CLONE_VM, see jw_spawn): a clone
// that copies the address space costs the worker about 1 ms per start at 200 MiB of RSS, and more
// as it grows. Elsewhere it is an ordinary copy-on-write child.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <linux/capability.h>
#include <stdio.h>
#include <poll.h>
#include <sys/epoll.h>

#include "forwarded_signals.h"
#include "jw_report.h"
#include "jwshim.h"

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

#define JW_MAX_FDS 16

// Splits `count` NUL-terminated strings packed back to back into a NULL-terminated vector.
static char **unpack(const char *packed, int count) {
  char **vec = calloc((size_t)count + 1, sizeof(char *));
  if (vec == NULL) return NULL;
  for (int i = 0; i < count; i++) {
    vec[i] = (char *)packed;
    packed += strlen(packed) + 1;
  }
  return vec;
}

// argv and envp vectors for execve, both or neither (then -ENOMEM).
static int unpack_exec_args(const char *argv_packed, int argc, const char *envp_packed, int envc,
                            char ***argv, char ***envp) {
  *argv = unpack(argv_packed, argc);
  *envp = unpack(envp_packed, envc);
  if (*argv != NULL && *envp != NULL) return 0;
  free(*argv);
  free(*envp);
  return -ENOMEM;
}

// Every disposition back to SIG_DFL, then `mask` as the signal mask.
void jw_reset_signals(const sigset_t *mask) {
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; sig++) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    if (sigaction(sig, &dfl, NULL) != 0) {
      // glibc refuses the signals it reserves (32, 33), yet an ignored one stays ignored across
      // execve: reset those through the kernel directly (all-zero: SIG_DFL, no flags, no mask).
      unsigned long kernel_sigaction[8] = {0};
      syscall(SYS_rt_sigaction, sig, kernel_sigaction, NULL, 64 / 8);  // the kernel sigset size
    }
  }
  sigprocmask(SIG_SETMASK, mask, NULL);
}

void jw_reset_signals_unblocked(void) {
  sigset_t none;
  sigemptyset(&none);
  jw_reset_signals(&none);
}

// The decimal digits of `value` into `out` (room for 11), NUL-terminated; returns their count.
// For children between clone3 and execve, where snprintf is not async-signal-safe.
int jw_format_uint(char *out, unsigned value) {
  char digits[11];
  int n = 0;
  do {
    digits[n++] = (char)('0' + value % 10);
    value /= 10;
  } while (value > 0);
  for (int i = 0; i < n; i++) out[i] = digits[n - 1 - i];
  out[n] = '\0';
  return n;
}

// --- jw_spawn: clone3 into new namespaces and exec ---
//
// On x86-64 the child shares the worker's memory until it execs (CLONE_VM), and the worker does
// not wait for that exec: a vfork-style wait held the worker's event loop for as long as the child
// took to be scheduled and reach execve (0.3 ms at the median, 1-1.6 ms at p90 during a burst of
// starts). So everything the child reads is copied first into a mapping of its own (a "slot": its
// stack, the exec arguments, its descriptors' layout), which stays until the kernel clears the
// slot's tid (CLONE_CHILD_CLEARTID: done at the child's exec or exit, when it lets go of this
// memory). And the child writes nothing the worker's threads use: it makes its system calls raw,
// so no failing call sets errno, which would be the worker thread's errno (the child inherits its
// thread pointer) while that thread runs on.

#if defined(__x86_64__)
#define JW_SHARED_SPAWN 1
// A system call that returns -errno and touches no memory but its arguments'.
static long raw_syscall(long nr, long a1, long a2, long a3, long a4) {
  long ret;
  register long r10 asm("r10") = a4;
  asm volatile("syscall"
               : "=a"(ret)
               : "a"(nr), "D"(a1), "S"(a2), "d"(a3), "r"(r10)
               : "rcx", "r11", "memory");
  return ret;
}
#else
// Elsewhere the child is an ordinary copy-on-write one, whose errno is its own.
static long raw_syscall(long nr, long a1, long a2, long a3, long a4) {
  long ret = syscall(nr, a1, a2, a3, a4);
  return ret < 0 ? -errno : ret;
}
#endif

static void child_exit(int code) {
  raw_syscall(SYS_exit_group, code, 0, 0, 0);
  for (;;) {
  }
}

// Writes "spawn <errno>" to fd so the parent learns why the child could not exec.
static void report_errno(int fd, int err) {
  static const char head[] = "{\"stage\":\"spawn\",\"errno\":";
  char msg[48];
  size_t len = sizeof head - 1;  // no strlen: a libc call, which the child does not make
  memcpy(msg, head, len);
  len += (size_t)jw_format_uint(msg + len, (unsigned)err);
  msg[len++] = '}';
  raw_syscall(SYS_write, fd, (long)msg, (long)len, 0);
}

// What the child execs, and with which descriptors (see jw_spawn).
struct child_args {
  const char *path;
  char **argv;
  char **envp;
  const int *fds;
  int nfds;
  long worker_pid;  // the worker's pid as /proc shows it, or -1
};

// The parent's pid in the text of /proc/<pid>/stat open as `fd` (the field after the state, which
// follows the command's name: that may hold ')' itself, so the last one counts), or -1. Raw system
// calls only: the spawned child uses it.
static long stat_ppid(int fd) {
  char text[512];
  long n = raw_syscall(SYS_pread64, fd, (long)text, sizeof text, 0);
  long close_paren = -1;
  for (long i = 0; i < n; i++) {
    if (text[i] == ')') close_paren = i;
  }
  long i = close_paren + 4;  // ") S " before the parent's pid
  if (close_paren < 0 || i >= n || text[i] < '0' || text[i] > '9') return -1;
  long ppid = 0;
  for (; i < n && text[i] >= '0' && text[i] <= '9'; i++) ppid = ppid * 10 + (text[i] - '0');
  return ppid;
}

// The parent-death signal is sent when the parent's exit hands its children on (to another of its
// threads, or out of the process), under the task list lock, in the same step that changes their
// parent. A process that sets the signal, then takes that lock (setsid and kill(0, 0) both do) and
// still has its parent, will get the signal when the parent goes. A check of the worker's pidfd
// would not do: that reads as ended only once the worker's last thread is gone, which can be
// after its children were handed out.

// The child between clone3 and execve (`opaque` is its child_args): raw system calls only.
// A negative fds[i] gives the child /dev/null as descriptor i.
static void child(void *opaque) {
  const struct child_args *a = opaque;
  const int *fds = a->fds;
  int nfds = a->nfds;
  // The job dies with the worker, even if the worker is killed: PID 1 of a PID namespace taking
  // every other process of the namespace with it. Set first, then checked (see stat_ppid): the
  // worker runs on beside the child, and a worker gone before the prctl would never send the
  // signal (getppid() cannot tell: it is 0 in the new PID namespace; /proc is still the worker's).
  raw_syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0);
  raw_syscall(SYS_setsid, 0, 0, 0, 0);
  if (a->worker_pid > 0) {
    int stat = (int)raw_syscall(SYS_openat, AT_FDCWD, (long)"/proc/self/stat", O_RDONLY | O_CLOEXEC,
                                0);
    if (stat < 0) child_exit(126);
    long ppid = stat_ppid(stat);
    raw_syscall(SYS_close, stat, 0, 0, 0);
    if (ppid != a->worker_pid) child_exit(126);
  }
  // Park every source above the target range first, so no dup2 clobbers a later source.
  int parked[JW_MAX_FDS];
  for (int i = 0; i < nfds; i++) {
    parked[i] = fds[i] >= 0 ? (int)raw_syscall(SYS_fcntl, fds[i], F_DUPFD, nfds, 0) : -1;
    if (fds[i] >= 0 && parked[i] < 0) child_exit(126);
  }
  for (int i = 0; i < nfds; i++) {
    if (parked[i] >= 0 && raw_syscall(SYS_dup3, parked[i], i, 0, 0) != i) child_exit(126);
  }
  for (int i = 0; i < nfds; i++) {
    if (fds[i] >= 0) continue;
    int null_fd = (int)raw_syscall(SYS_openat, AT_FDCWD, (long)"/dev/null", O_RDWR, 0);
    if (null_fd < 0) child_exit(126);
    if (null_fd != i) {
      if (raw_syscall(SYS_dup3, null_fd, i, 0, 0) != i) child_exit(126);
      if (null_fd >= nfds) raw_syscall(SYS_close, null_fd, 0, 0, 0);
    }
  }
  if (raw_syscall(SYS_close_range, (unsigned)nfds, ~0U, 0U, 0) != 0) child_exit(126);
  // Every disposition back to SIG_DFL (all-zero: no handler, flags or mask; through the kernel,
  // which also takes the signals glibc reserves), then nothing blocked: this also unblocks what
  // jw_spawn blocked around clone3.
  uint64_t kernel_sigaction[4] = {0};
  for (int sig = 1; sig <= 64; sig++) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    raw_syscall(SYS_rt_sigaction, sig, (long)kernel_sigaction, 0, sizeof(uint64_t));
  }
  uint64_t none = 0;
  raw_syscall(SYS_rt_sigprocmask, SIG_SETMASK, (long)&none, 0, sizeof none);
  long err = -raw_syscall(SYS_execve, (long)a->path, (long)a->argv, (long)a->envp, 0);
  if (nfds > 4) report_errno(4, (int)err);
  child_exit(127);
}

// The size of `count` NUL-terminated strings packed back to back.
static size_t packed_size(const char *packed, int count) {
  size_t size = 0;
  for (int i = 0; i < count; i++) size += strlen(packed + size) + 1;
  return size;
}

// Copies `count` packed strings to `to` and points vec[0..count) at the copies, vec[count] NULL.
static char *unpack_into(char **vec, char *to, const char *packed, int count) {
  size_t size = packed_size(packed, count);
  memcpy(to, packed, size);
  for (int i = 0; i < count; i++) {
    vec[i] = to;
    to += strlen(to) + 1;
  }
  vec[count] = NULL;
  return to;
}

// A child's own memory: guard page, stack, then a struct slot and the copies it points to.
struct slot {
  size_t mapped;  // bytes of the whole mapping
  // Nonzero while a child may still use the slot; the kernel sets it to 0 once the child has
  // exec'd or exited (CLONE_CHILD_CLEARTID).
  int tid;
  struct slot *next;
  struct child_args args;
};

// The child's stack: it runs beside the worker, never on a stack the worker uses.
#define JW_CHILD_STACK (256 * 1024)
// Slots kept for reuse once free (a burst of starts reuses them instead of mapping new ones).
#define JW_FREE_SLOTS 8

static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static struct slot *slots;

static int slot_free(const struct slot *s) {
  return __atomic_load_n(&s->tid, __ATOMIC_ACQUIRE) == 0;
}

// A free slot of at least `data` bytes after its stack, taken (tid set); NULL with errno set.
// Free slots beyond JW_FREE_SLOTS are unmapped on the way.
static struct slot *take_slot(size_t data) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  size_t need = page + JW_CHILD_STACK + ((data + page - 1) / page) * page;
  struct slot *found = NULL;
  int kept = 0;
  pthread_mutex_lock(&slots_lock);
  for (struct slot **at = &slots; *at != NULL;) {
    struct slot *s = *at;
    if (!slot_free(s)) {
      at = &s->next;
    } else if (found == NULL && s->mapped >= need) {
      found = s;
      *at = s->next;
    } else if (kept < JW_FREE_SLOTS) {
      kept++;
      at = &s->next;
    } else {
      *at = s->next;
      munmap((char *)s - page - JW_CHILD_STACK, s->mapped);
    }
  }
  if (found == NULL) {
    char *mapping = mmap(NULL, need, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    // The page below the stack stays inaccessible: an overflow faults in the child instead of
    // writing over the worker's memory, which the child shares.
    if (mapping == MAP_FAILED || mprotect(mapping + page, need - page, PROT_READ | PROT_WRITE)) {
      int err = errno;
      if (mapping != MAP_FAILED) munmap(mapping, need);
      pthread_mutex_unlock(&slots_lock);
      errno = err;
      return NULL;
    }
    found = (struct slot *)(mapping + page + JW_CHILD_STACK);
    found->mapped = need;
  }
  found->tid = 1;
  found->next = slots;
  slots = found;
  pthread_mutex_unlock(&slots_lock);
  return found;
}

#ifdef JW_SHARED_SPAWN
// clone3 whose child starts on args->stack and calls fn(arg) straight from here: the kernel
// resumes it after the syscall instruction with only %rsp changed, so it must not return through
// any C frame. fn never returns (the child execs or exits); exit(127) is a backstop.
static long clone3_calling(struct clone_args *args, void (*fn)(void *), void *arg) {
  long ret;
  register void (*r_fn)(void *) asm("r12") = fn;
  register void *r_arg asm("r13") = arg;
  asm volatile(
      "syscall\n\t"
      "test %%rax, %%rax\n\t"
      "jnz 1f\n\t"
      "xor %%ebp, %%ebp\n\t"
      "mov %%r13, %%rdi\n\t"
      "call *%%r12\n\t"
      "mov $231, %%eax\n\t"
      "mov $127, %%edi\n\t"
      "syscall\n\t"
      "1:\n\t"
      : "=a"(ret)
      : "a"((long)SYS_clone3), "D"(args), "S"(sizeof *args), "r"(r_fn), "r"(r_arg)
      : "rcx", "r11", "memory");
  return ret;
}
#endif

// This process's pid as /proc shows it (the namespace /proc was mounted in), or -1 without /proc.
static long proc_self_pid(void) {
  char link[24];
  ssize_t n = readlink("/proc/self", link, sizeof link - 1);
  if (n <= 0) return -1;
  link[n] = 0;
  char *end;
  long pid = strtol(link, &end, 10);
  return *end == 0 && pid > 0 ? pid : -1;
}

// Starts `path` with the given argv/envp in new PID, mount, IPC and UTS namespaces (and a new
// network namespace when `new_net` is set). fds[i] becomes descriptor i of the child (negative:
// /dev/null), every other descriptor is closed. Returns the child's pid (in the caller's
// namespace) or -errno; *pidfd_out receives a pidfd for it. The child may not have exec'd yet
// when this returns; a failed exec is reported on its descriptor 4 when it has one.
// With `cgroup_fd` >= 0 (an open cgroup v2 directory) the child is born in that cgroup
// (CLONE_INTO_CGROUP, Linux 5.7+): no later move, which on v2 waits for an RCU grace period. If
// the kernel refuses that, nothing was started and the error is returned; the caller decides
// whether to try again without it. The caller keeps (and closes) the descriptor.
int jw_spawn(const char *path, const char *argv_packed, int argc, const char *envp_packed,
             int envc, const int *fds, int nfds, int *pidfd_out, int new_net, int cgroup_fd) {
  if (nfds < 0 || nfds > JW_MAX_FDS || argc < 1 || envc < 0) return -EINVAL;
  size_t path_size = strlen(path) + 1;
  size_t strings = path_size + packed_size(argv_packed, argc) + packed_size(envp_packed, envc);
  size_t vectors = ((size_t)argc + 1 + (size_t)envc + 1) * sizeof(char *);
  struct slot *slot = take_slot(sizeof(struct slot) + vectors + (size_t)nfds * sizeof(int) +
                                strings);
  if (slot == NULL) return -errno;
  char **argv = (char **)(slot + 1);
  char **envp = argv + argc + 1;
  int *child_fds = (int *)(envp + envc + 1);
  char *text = (char *)(child_fds + nfds);
  if (nfds > 0) memcpy(child_fds, fds, (size_t)nfds * sizeof(int));
  memcpy(text, path, path_size);
  slot->args = (struct child_args){.path = text, .argv = argv, .envp = envp, .fds = child_fds,
                                   .nfds = nfds, .worker_pid = proc_self_pid()};
  text = unpack_into(argv, text + path_size, argv_packed, argc);
  unpack_into(envp, text, envp_packed, envc);

  int pidfd = -1;
  struct clone_args args;
  memset(&args, 0, sizeof args);
  args.flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_PIDFD;
  if (new_net) args.flags |= CLONE_NEWNET;
  if (cgroup_fd >= 0) {
    args.flags |= CLONE_INTO_CGROUP;
    args.cgroup = (uint64_t)cgroup_fd;
  }
  args.pidfd = (uint64_t)(uintptr_t)&pidfd;
  args.exit_signal = SIGCHLD;
#ifdef JW_SHARED_SPAWN
  args.flags |= CLONE_VM | CLONE_CHILD_CLEARTID;
  args.child_tid = (uint64_t)(uintptr_t)&slot->tid;
  args.stack = (uint64_t)(uintptr_t)((char *)slot - JW_CHILD_STACK);
  args.stack_size = JW_CHILD_STACK;
#endif
  // No signal handler of the parent may run in the child before it has reset them: every signal
  // blocked through the kernel (glibc's sigfillset and pthread_sigmask leave out the two it
  // reserves for itself).
  uint64_t all = ~(uint64_t)0, previous = 0;
  raw_syscall(SYS_rt_sigprocmask, SIG_SETMASK, (long)&all, (long)&previous, sizeof all);
#ifdef JW_SHARED_SPAWN
  long pid = clone3_calling(&args, child, &slot->args);
  int err = pid < 0 ? (int)-pid : 0;
#else
  long pid = syscall(SYS_clone3, &args, sizeof args);
  if (pid == 0) child(&slot->args);
  int err = errno;
#endif
  raw_syscall(SYS_rt_sigprocmask, SIG_SETMASK, (long)&previous, 0, sizeof previous);
#ifndef JW_SHARED_SPAWN
  // The child has its own copy of the slot.
  __atomic_store_n(&slot->tid, 0, __ATOMIC_RELEASE);
#endif
  if (pid < 0) {
    __atomic_store_n(&slot->tid, 0, __ATOMIC_RELEASE);
    return -err;
  }
  if (pidfd_out != NULL) *pidfd_out = pidfd;
  return (int)pid;
}

// A pipe with both ends close-on-exec, its buffer grown to `size` bytes when the kernel allows.
// Returns the buffer's actual size.
int jw_pipe(int *fds, int size) {
  if (pipe2(fds, O_CLOEXEC) != 0) return -errno;
  if (size > 0) fcntl(fds[0], F_SETPIPE_SZ, size);
  int actual = fcntl(fds[0], F_GETPIPE_SZ);
  if (actual < 0) {
    int err = errno;
    close(fds[0]);
    close(fds[1]);
    return -err;
  }
  return actual;
}

// Opens `path` (created 0600) and takes an exclusive lock on it without waiting; the descriptor
// (returned) holds the lock until the process exits. -EWOULDBLOCK when another process holds it.
int jw_lock_file(const char *path) {
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return -errno;
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    close(fd);
    return -err;
  }
  return fd;
}

// waitpid(pid, WNOHANG): the pid when it was reaped (status in *status), 0 while it runs.
int jw_waitpid(int pid, int *status) {
  int r = waitpid(pid, status, WNOHANG);
  return r < 0 ? -errno : r;
}

int jw_close(int fd) { return close(fd) == 0 ? 0 : -errno; }

int jw_write(int fd, const void *buf, int len) {
  ssize_t n;
  do n = write(fd, buf, (size_t)len);
  while (n < 0 && errno == EINTR);
  return n < 0 ? -errno : (int)n;
}

int jw_read(int fd, void *buf, int len) {
  ssize_t n;
  do n = read(fd, buf, (size_t)len);
  while (n < 0 && errno == EINTR);
  return n < 0 ? -errno : (int)n;
}

// The output pump's epoll set (worker/runtime/output_pump.ts). Pipes are registered one-shot:
// after an event a pipe raises none until the worker arms it again, so a job writing a line at a
// time costs the worker one event per read it chooses to make, not one per write.
int jw_pump_create(void) {
  int fd = epoll_create1(EPOLL_CLOEXEC);
  return fd < 0 ? -errno : fd;
}

// Arms `fd` for one readiness event (`add`: registers it first, made nonblocking and close-on-exec).
int jw_pump_arm(int epfd, int fd, int add) {
  struct epoll_event event = {.events = EPOLLIN | EPOLLONESHOT, .data.u64 = (uint64_t)fd};
  if (add) {
    // Close-on-exec too: a reload's exec clears it on the pipes it hands over.
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return -errno;
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) return -errno;
  }
  return epoll_ctl(epfd, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &event) == 0 ? 0 : -errno;
}

int jw_pump_remove(int epfd, int fd) {
  return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL) == 0 ? 0 : -errno;
}

// Waits for ready descriptors (as long as `timeout_ms`, -1: no limit); writes up to `max` of them
// to `fds` and returns how many, or -errno.
int jw_pump_wait(int epfd, int32_t *fds, int max, int timeout_ms) {
  struct epoll_event events[256];
  if (max > 256) max = 256;
  int n;
  do n = epoll_wait(epfd, events, max, timeout_ms);
  while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
  for (int i = 0; i < n; i++) fds[i] = (int32_t)events[i].data.u64;
  return n;
}

int jw_pidfd_send_signal(int pidfd, int sig) {
  return syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) == 0 ? 0 : -errno;
}

// 1 when the process behind `pidfd` has ended (a zombie counts), 0 while it runs.
int jw_pidfd_exited(int pidfd) {
  struct pollfd p = {pidfd, POLLIN, 0};
  int r = poll(&p, 1, 0);
  if (r < 0) return -errno;
  return r > 0 ? 1 : 0;
}

// 1 while a write end of the pipe whose read end is `fd` is open somewhere, 0 once none is (poll(2)
// reports POLLHUP on a pipe's read end then); never blocks.
int jw_pipe_has_writers(int fd) {
  struct pollfd p = {fd, POLLIN, 0};
  int r = poll(&p, 1, 0);
  if (r < 0) return -errno;
  return r > 0 && (p.revents & POLLHUP) ? 0 : 1;
}

// The worker's mount table, opened to be polled by jw_mounts_changed().
int jw_mounts_open(void) {
  int fd = open("/proc/self/mounts", O_RDONLY | O_CLOEXEC);
  return fd < 0 ? -errno : fd;
}

// 1 if a mount or unmount happened in the worker's mount namespace since the last call with this
// fd (proc(5): /proc/pid/mounts is pollable, POLLPRI on a change), 0 if not; never blocks.
int jw_mounts_changed(int fd) {
  struct pollfd p = {fd, POLLPRI, 0};
  int r = poll(&p, 1, 0);
  if (r < 0) return -errno;
  return r > 0 && (p.revents & (POLLPRI | POLLERR)) ? 1 : 0;
}

// --- used by `jobworker init` and jwstart, inside the new namespaces ---

// Makes every mount private, so nothing mounted inside the job propagates to the host.
int jw_make_mounts_private(void) {
  return mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0 ? 0 : -errno;
}

// Init's own /proc/<pid>/stat as the worker's /proc shows it, kept from before /proc becomes the
// job's (where the worker, outside the job's PID namespace, has no pid), and the parent it named
// then: jw_set_user checks that the parent is still the same.
static int stat_before_proc = -1;
static long parent_before_proc = -1;

// A fresh /proc for the new PID namespace: `ps` inside sees only the job. The host's /proc is
// detached first, so unmounting the new one cannot uncover the host's processes.
int jw_mount_proc(void) {
  if (stat_before_proc < 0) {
    stat_before_proc = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (stat_before_proc >= 0) parent_before_proc = stat_ppid(stat_before_proc);
  }
  if (umount2("/proc", MNT_DETACH) != 0 && errno != EINVAL) return -errno;
  return mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) == 0 ? 0 : -errno;
}

int jw_set_hostname(const char *name) {
  return sethostname(name, strlen(name)) == 0 ? 0 : -errno;
}

int jw_chdir(const char *dir) { return chdir(dir) == 0 ? 0 : -errno; }

// Execs the job's command with `stdout_fd` and `stderr_fd` as its descriptors 1 and 2 (until now
// init's own output went elsewhere, so nothing init or Deno prints can reach the job's output).
// Every descriptor above 2 becomes close-on-exec (the status pipe's EOF tells the worker the exec
// succeeded; Deno's own descriptors must stay usable in case the exec fails); signal dispositions
// and mask are reset (Deno ignores SIGPIPE, which a job must not inherit). Returns only on failure,
// with -errno, and with the signals already reset: the caller (init) only reports and exits.
// With `exec_fd` >= 0 the program is that open file instead of `path` (the job's minimal init, opened
// before the worker's directories were masked), exec'd with the signals it forwards blocked and
// the status pipe (JW_STATUS_FD, jw_report.h) left open for it.
int jw_exec(const char *path, const char *argv_packed, int argc, const char *envp_packed, int envc,
            int stdout_fd, int stderr_fd, int exec_fd) {
  char **argv, **envp;
  if (unpack_exec_args(argv_packed, argc, envp_packed, envc, &argv, &envp) != 0) return -ENOMEM;
  if (dup2(stdout_fd, 1) != 1 || dup2(stderr_fd, 2) != 2) {
    int err = errno;
    free(argv);
    free(envp);
    return -err;
  }
  if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
    int err = errno;
    free(argv);
    free(envp);
    return -err;
  }
  if (exec_fd >= 0) {
    // The minimal init reports its command's exec on the status pipe (jw_report.h).
    if (fcntl(JW_STATUS_FD, F_SETFD, 0) != 0) {
      int err = errno;
      free(argv);
      free(envp);
      return -err;
    }
    // Blocked before their dispositions become SIG_DFL, so none is dropped on the way to jwinit.
    sigset_t forwarded;
    sigemptyset(&forwarded);
    for (int i = 0; i < JW_NFORWARDED; i++) sigaddset(&forwarded, jw_forwarded[i]);
    sigprocmask(SIG_BLOCK, &forwarded, NULL);
    jw_reset_signals(&forwarded);
    syscall(SYS_execveat, exec_fd, "", argv, envp, AT_EMPTY_PATH);
  } else {
    jw_reset_signals_unblocked();
    execve(path, argv, envp);
  }
  int err = errno;
  free(argv);
  free(envp);
  return -err;
}

// --- the job's default profile (init/profile.ts), applied by `jobworker init` before exec ---

#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x00000001
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
struct jw_mount_attr {
  uint64_t attr_set, attr_clr, propagation, userns_fd;
};

// Makes the mount at `path` read-only, with every mount below it when `recursive` (in this mount
// namespace only). ENOENT is not an error: there is nothing to protect.
int jw_make_readonly(const char *path, int recursive) {
  struct jw_mount_attr attr = {MOUNT_ATTR_RDONLY, 0, 0, 0};
  if (syscall(SYS_mount_setattr, AT_FDCWD, path, recursive ? AT_RECURSIVE : 0, &attr,
              sizeof attr) == 0)
    return 0;
  return errno == ENOENT ? 0 : -errno;
}

// Binds `path` onto itself (so it is a mount of its own) and makes that read-only.
int jw_bind_readonly(const char *path) {
  if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) != 0) return errno == ENOENT ? 0 : -errno;
  return jw_make_readonly(path, 1);
}

// Covers `path` as runc masks paths: a directory by an empty read-only tmpfs, anything else by
// /dev/null. Returns 0 when `path` does not exist.
int jw_mask(const char *path) {
  struct stat st;
  if (stat(path, &st) != 0) return errno == ENOENT ? 0 : -errno;
  if (S_ISDIR(st.st_mode)) {
    unsigned long flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
    return mount("tmpfs", path, "tmpfs", flags, "size=0,nr_inodes=1,mode=0555") == 0 ? 0 : -errno;
  }
  if (mount("/dev/null", path, NULL, MS_BIND, NULL) != 0) return -errno;
  return jw_make_readonly(path, 0);
}

// A private /dev as Docker gives one: a tmpfs holding the host's null, zero, full, random, urandom
// and tty (bind mounted, so no mknod is needed), a new devpts instance with its own ptmx, a
// private /dev/shm and the usual symlinks. No block device is reachable through it.
int jw_private_dev(void) {
  static const char *const nodes[] = {"null", "zero", "full", "random", "urandom", "tty"};
  enum { N = sizeof nodes / sizeof nodes[0] };
  int fds[N];
  char path[64];
  int err = 0;
  for (int i = 0; i < N; i++) fds[i] = -1;
  for (int i = 0; i < N && err == 0; i++) {
    snprintf(path, sizeof path, "/dev/%s", nodes[i]);
    fds[i] = open(path, O_PATH | O_CLOEXEC);
    if (fds[i] < 0) err = errno;
  }
  if (err == 0 && mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_STRICTATIME,
                        "mode=755,size=65536k") != 0)
    err = errno;
  for (int i = 0; i < N && err == 0; i++) {
    char source[64];
    snprintf(path, sizeof path, "/dev/%s", nodes[i]);
    snprintf(source, sizeof source, "/proc/self/fd/%d", fds[i]);
    int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0666);
    if (fd < 0 || close(fd) != 0 || mount(source, path, NULL, MS_BIND, NULL) != 0) err = errno;
  }
  for (int i = 0; i < N; i++)
    if (fds[i] >= 0) close(fds[i]);
  if (err != 0) return -err;
  if (mkdir("/dev/pts", 0755) != 0 ||
      mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620") != 0 ||
      symlink("pts/ptmx", "/dev/ptmx") != 0)
    return -errno;
  if (mkdir("/dev/shm", 01777) != 0 ||
      mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
            "mode=1777,size=65536k") != 0)
    return -errno;
  static const char *const links[][2] = {{"/proc/self/fd", "/dev/fd"},
                                         {"/proc/self/fd/0", "/dev/stdin"},
                                         {"/proc/self/fd/1", "/dev/stdout"},
                                         {"/proc/self/fd/2", "/dev/stderr"}};
  for (size_t i = 0; i < sizeof links / sizeof links[0]; i++) {
    if (symlink(links[i][0], links[i][1]) != 0) return -errno;
  }
  return 0;
}

// A network namespace of its own for the calling thread (init runs JavaScript, and so this call and
// the exec after it, on its main thread): a pooled init was cloned before it knew the job wants one.
int jw_unshare_net(void) { return unshare(CLONE_NEWNET) == 0 ? 0 : -errno; }

// Brings the loopback interface of a new network namespace up.
int jw_loopback_up(void) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  int r = ioctl(fd, SIOCGIFFLAGS, &ifr);
  if (r == 0) {
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    r = ioctl(fd, SIOCSIFFLAGS, &ifr);
  }
  int err = errno;
  close(fd);
  return r == 0 ? 0 : -err;
}

// Limits this thread's capabilities to `keep` (a bit mask of CAP_* numbers): the bounding set
// loses every other capability; permitted and effective become `keep`, inheritable too when
// `inheritable` is set, else empty; the ambient set is cleared. Needs CAP_SETPCAP, so it comes
// before any change of user.
int jw_limit_capabilities(uint64_t keep, int inheritable) {
  for (int cap = 0; cap < 64; cap++) {
    int in_bounding = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
    if (in_bounding < 0) break;  // EINVAL: past the kernel's last capability
    if (in_bounding == 1 && !(keep & (1ULL << cap)) &&
        prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0)
      return -errno;
  }
  struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct data[2];
  memset(data, 0, sizeof data);
  if (syscall(SYS_capget, &header, data) != 0) return -errno;
  for (int i = 0; i < 2; i++) {
    uint32_t mask = (uint32_t)(keep >> (32 * i));
    data[i].permitted &= mask;
    data[i].effective = data[i].permitted;
    data[i].inheritable = inheritable ? data[i].permitted : 0;
  }
  if (syscall(SYS_capset, &header, data) != 0) return -errno;
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
    return -errno;
  return 0;
}

// Becomes uid:gid with exactly `groups` as supplementary groups, on the calling thread only (raw
// system calls: glibc's wrappers would signal every other thread of Deno's and wait until each has
// changed too, 0.2-0.3 ms of CPU and a wait for every thread to be scheduled, on a job's start
// path). Like the capability calls above it is meant for init's main thread, which runs the checks
// that follow as the job's user and then execs; the exec ends Deno's other threads, and the job gets
// this thread's credentials. Leaving root clears the permitted and effective capabilities (and the
// parent-death signal, set again here).
int jw_set_user(uint32_t uid, uint32_t gid, const uint32_t *groups, int ngroups) {
  if (syscall(SYS_setgroups, (size_t)ngroups, (const gid_t *)groups) != 0) return -errno;
  if (syscall(SYS_setresgid, (gid_t)gid, (gid_t)gid, (gid_t)gid) != 0) return -errno;
  if (syscall(SYS_setresuid, (uid_t)uid, (uid_t)uid, (uid_t)uid) != 0) return -errno;
  // A change of user clears the parent-death signal (prctl(2)): set it again, or a job of another
  // user would outlive a worker that is killed; then check that the worker did not go in between
  // (see stat_ppid; kill(0, 0) takes the task list lock, and init's process group is init alone).
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return -errno;
  if (stat_before_proc >= 0) {
    kill(0, 0);
    if (stat_ppid(stat_before_proc) != parent_before_proc) return -ESRCH;
  }
  return 0;
}

// No exec after this can gain privileges (setuid bits, file capabilities).
int jw_no_new_privs(void) { return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 ? 0 : -errno; }

// access(2) with the effective ids; 0 when allowed.
int jw_access(const char *path, int mode) {
  return faccessat(AT_FDCWD, path, mode, AT_EACCESS) == 0 ? 0 : -errno;
}

// An O_PATH descriptor of `path` (close-on-exec), for jw_exec's `exec_fd`.
int jw_open_path(const char *path) {
  int fd = open(path, O_PATH | O_CLOEXEC);
  return fd < 0 ? -errno : fd;
}

// Joins the cgroup whose `cgroup.procs` file is `procs_file` (writes "0": the calling process).
int jw_join_cgroup(const char *procs_file) {
  int fd = open(procs_file, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  ssize_t n = write(fd, "0", 1);
  int err = n < 0 ? errno : EIO;
  close(fd);
  return n == 1 ? 0 : -err;
}

// A write-only, close-on-exec descriptor of an existing file (a cgroup's cgroup.procs, handed to
// a pooled init: it keeps naming the same cgroup after the directory is renamed).
int jw_open_write(const char *path) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  return fd < 0 ? -errno : fd;
}

// --- cgroup files in one call (worker/cgroups/file_batch.ts) ---

// Writes all of `data` to the existing file `path` (one write(2) for a cgroup's few bytes).
static int32_t write_file(const char *path, const uint8_t *data, uint32_t len) {
  int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
  if (fd < 0) return -errno;
  uint32_t done = 0;
  while (done < len) {
    ssize_t n = write(fd, data + done, len - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int err = n < 0 ? errno : EIO;
      close(fd);
      return -err;
    }
    done += (uint32_t)n;
  }
  return close(fd) == 0 ? 0 : -errno;
}

// Reads `path` to EOF into `buf` (at most `cap` bytes): the byte count, -ENOBUFS if it is longer.
static int32_t read_file(const char *path, uint8_t *buf, int32_t cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -errno;
  int32_t used = 0;
  for (;;) {
    char probe;
    ssize_t n = used < cap ? read(fd, buf + used, (size_t)(cap - used)) : read(fd, &probe, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || (n > 0 && used == cap)) {
      int err = n < 0 ? errno : ENOBUFS;
      close(fd);
      return -err;
    }
    if (n == 0) break;
    used += (int32_t)n;
  }
  close(fd);
  return used;
}

// Runs `count` file operations on the calling thread (the worker calls it nonblocking through FFI,
// so it runs on a thread of Deno's blocking pool): a job's cgroup is five or six directories on
// v1, and every file operation as an async call of its own cost the worker's event loop a wake-up
// of a pool thread, 15-50 us each, about 2 ms of the loop per job's start and end together.
// A job's start also makes its output directory and file in one (the file's inode is made here,
// where a wait for the filesystem's journal holds up no one else).
// `ops` holds the operations back to back: a kind byte ('m' mkdir, 'd' rmdir, 'w' write, 'r'
// read, 'p' mkdir of a private directory (0700), 'f' a new private file (0600, O_EXCL)), a
// NUL-terminated path, and for 'w' a 4-byte native-endian length and the bytes.
// results[i] is 0 (a read: its byte count, the bytes appended to `out`) or -errno; after the first
// failure of any but a read, with `stop_at_failure`, the rest are -ECANCELED and not run. After a
// read that did not fit in `out` (-ENOBUFS: the caller reads that file again on its own), every
// rmdir is -ECANCELED and not run, so that what it reads from is still there then.
// Returns the bytes used in `out`, or -EINVAL for malformed `ops` (the operations before the
// malformed one have run).
int32_t jw_file_batch(const uint8_t *ops, int32_t ops_len, int32_t count, int32_t stop_at_failure,
                      int32_t *results, uint8_t *out, int32_t out_len) {
  const uint8_t *p = ops, *end = ops + ops_len;
  int32_t used = 0;
  int failed = 0;
  int overflowed = 0;
  for (int32_t i = 0; i < count; i++) {
    if (p >= end) return -EINVAL;
    uint8_t kind = *p++;
    const uint8_t *nul = memchr(p, 0, (size_t)(end - p));
    if (nul == NULL) return -EINVAL;
    const char *path = (const char *)p;
    p = nul + 1;
    uint32_t len = 0;
    const uint8_t *data = NULL;
    if (kind == 'w') {
      if (end - p < 4) return -EINVAL;
      memcpy(&len, p, 4);
      p += 4;
      if ((size_t)(end - p) < len) return -EINVAL;
      data = p;
      p += len;
    }
    if (failed && stop_at_failure) {
      results[i] = -ECANCELED;
      continue;
    }
    int32_t r;
    switch (kind) {
      case 'm':
        r = mkdir(path, 0777) == 0 ? 0 : -errno;
        break;
      case 'd':
        if (overflowed) {
          results[i] = -ECANCELED;
          continue;
        }
        r = rmdir(path) == 0 ? 0 : -errno;
        break;
      case 'p':
        r = mkdir(path, 0700) == 0 ? 0 : -errno;
        break;
      case 'f': {
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        r = fd < 0 ? -errno : close(fd) == 0 ? 0 : -errno;
        break;
      }
      case 'w':
        r = write_file(path, data, len);
        break;
      case 'r':
        r = read_file(path, out + used, out_len - used);
        if (r > 0) used += r;
        if (r == -ENOBUFS) overflowed = 1;
        break;
      default:
        return -EINVAL;
    }
    results[i] = r;
    if (r < 0 && kind != 'r') failed = 1;
  }
  return used;
}

// --- the worker's reload in place (worker/runtime/reexec.ts) ---

// A stop (SIGTERM, SIGINT) must survive the worker's exec of itself. Deno's own handler only notes
// a signal for the event loop, which the exec wipes; so while a reload execs, stop signals are
// "parked": blocked on the thread that execs, and a handler (run by whichever other thread takes
// the signal) sends the signal again to that thread, where it stays pending. A pending, blocked
// signal crosses execve; the new process unblocks it once it listens (jw_unblock_stops).
static volatile sig_atomic_t parked_signal;
static pid_t parking_tid;
static struct sigaction saved_term, saved_int;
static sigset_t saved_mask;

static void park_stop(int sig) {
  int saved_errno = errno;
  parked_signal = sig;
  syscall(SYS_tgkill, getpid(), parking_tid, sig);
  errno = saved_errno;
}

static void stop_set(sigset_t *set) {
  sigemptyset(set);
  sigaddset(set, SIGTERM);
  sigaddset(set, SIGINT);
}

// Parks stop signals from now on (call on the thread that will exec: Deno's main thread).
int jw_park_stops(void) {
  sigset_t stops;
  stop_set(&stops);
  parking_tid = (pid_t)syscall(SYS_gettid);
  parked_signal = 0;
  if (pthread_sigmask(SIG_BLOCK, &stops, &saved_mask) != 0) return -EINVAL;
  struct sigaction park = {0};
  park.sa_handler = park_stop;
  sigfillset(&park.sa_mask);
  park.sa_flags = SA_RESTART;
  if (sigaction(SIGTERM, &park, &saved_term) != 0 || sigaction(SIGINT, &park, &saved_int) != 0) {
    return -errno;
  }
  return 0;
}

// Undoes jw_park_stops: Deno's handlers and the mask are restored, so a parked stop reaches Deno
// now. Returns the parked signal's number, 0 if none.
int jw_unpark_stops(void) {
  int sig = parked_signal;
  sigaction(SIGTERM, &saved_term, NULL);
  sigaction(SIGINT, &saved_int, NULL);
  pthread_sigmask(SIG_SETMASK, &saved_mask, NULL);
  return sig;
}

// Unblocks SIGTERM and SIGINT on the calling thread: what a worker does once it listens for them
// (it may have been exec'd with them parked, i.e. blocked and pending).
int jw_unblock_stops(void) {
  sigset_t stops;
  stop_set(&stops);
  return pthread_sigmask(SIG_UNBLOCK, &stops, NULL) == 0 ? 0 : -EINVAL;
}
