// jwshim: the few system calls jobworker cannot make from JavaScript.
//
// The worker calls jw_spawn() through Deno FFI to clone3() a child into new PID, mount, IPC and
// UTS namespaces; the child re-execs the jobworker program as `init`, which calls the jw_* helpers
// below to finish the isolation and exec the job's command.
//
// Conventions: every function returns >= 0 on success and -errno on failure. The shim never prints
// and never allocates after clone3 (the parent is multi-threaded, so the child may only make
// async-signal-safe calls until it execs).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
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

static void reset_signals(void) {
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
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
}

// Writes "spawn <errno>" to fd so the parent learns why the child could not exec.
static void report_errno(int fd, int err) {
  char msg[32] = "{\"stage\":\"spawn\",\"errno\":";
  size_t len = strlen(msg);
  char digits[12];
  int n = 0;
  do {
    digits[n++] = (char)('0' + err % 10);
    err /= 10;
  } while (err > 0 && n < 11);
  while (n > 0 && len < sizeof msg - 2) msg[len++] = digits[--n];
  msg[len++] = '}';
  ssize_t ignored = write(fd, msg, len);
  (void)ignored;
}

// The child between clone3 and execve: only async-signal-safe calls.
// A negative fds[i] gives the child /dev/null as descriptor i.
static void child(const char *path, char **argv, char **envp, const int *fds, int nfds) {
  // Park every source above the target range first, so no dup2 clobbers a later source.
  int parked[JW_MAX_FDS];
  for (int i = 0; i < nfds; i++) {
    parked[i] = fds[i] >= 0 ? fcntl(fds[i], F_DUPFD, nfds) : -1;
    if (fds[i] >= 0 && parked[i] < 0) _exit(126);
  }
  for (int i = 0; i < nfds; i++) {
    if (parked[i] >= 0 && dup2(parked[i], i) != i) _exit(126);
  }
  for (int i = 0; i < nfds; i++) {
    if (fds[i] >= 0) continue;
    int null_fd = open("/dev/null", O_RDWR);
    if (null_fd < 0) _exit(126);
    if (null_fd != i) {
      if (dup2(null_fd, i) != i) _exit(126);
      if (null_fd >= nfds) close(null_fd);
    }
  }
  if (syscall(SYS_close_range, (unsigned)nfds, ~0U, 0U) != 0) _exit(126);
  setsid();
  // The job dies with the worker, even if the worker is killed: PID 1 of a PID namespace taking
  // every other process of the namespace with it.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  reset_signals();  // also unblocks what jw_spawn blocked around clone3
  execve(path, argv, envp);
  int err = errno;
  if (nfds > 4) report_errno(4, err);
  _exit(127);
}

// Starts `path` with the given argv/envp in new PID, mount, IPC and UTS namespaces. fds[i] becomes
// descriptor i of the child (negative: /dev/null), every other descriptor is closed. Returns the
// child's pid (in the caller's namespace) or -errno; *pidfd_out receives a pidfd for it.
int jw_spawn(const char *path, const char *argv_packed, int argc, const char *envp_packed,
             int envc, const int *fds, int nfds, int *pidfd_out) {
  if (nfds < 0 || nfds > JW_MAX_FDS || argc < 1) return -EINVAL;
  char **argv, **envp;
  if (unpack_exec_args(argv_packed, argc, envp_packed, envc, &argv, &envp) != 0) return -ENOMEM;
  int pidfd = -1;
  struct clone_args args;
  memset(&args, 0, sizeof args);
  args.flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_PIDFD;
  args.pidfd = (uint64_t)(uintptr_t)&pidfd;
  args.exit_signal = SIGCHLD;
  // No signal handler of the parent may run in the child before it has reset them.
  sigset_t all, previous;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &previous);
  long pid = syscall(SYS_clone3, &args, sizeof args);
  if (pid == 0) child(path, argv, envp, fds, nfds);
  int err = errno;
  pthread_sigmask(SIG_SETMASK, &previous, NULL);
  free(argv);
  free(envp);
  if (pid < 0) return -err;
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

int jw_pidfd_send_signal(int pidfd, int sig) {
  return syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) == 0 ? 0 : -errno;
}

// --- used by `jobworker init`, inside the new namespaces ---

// Makes every mount private, so nothing mounted inside the job propagates to the host.
int jw_make_mounts_private(void) {
  return mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0 ? 0 : -errno;
}

// A fresh /proc for the new PID namespace: `ps` inside sees only the job. The host's /proc is
// detached first, so unmounting the new one cannot uncover the host's processes.
int jw_mount_proc(void) {
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
// with -errno.
int jw_exec(const char *path, const char *argv_packed, int argc, const char *envp_packed, int envc,
            int stdout_fd, int stderr_fd) {
  char **argv, **envp;
  if (unpack_exec_args(argv_packed, argc, envp_packed, envc, &argv, &envp) != 0) return -ENOMEM;
  if (dup2(stdout_fd, 1) != 1 || dup2(stderr_fd, 2) != 2) {
    int err = errno;
    free(argv);
    free(envp);
    return -err;
  }
  if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) != 0) return -errno;
  reset_signals();
  execve(path, argv, envp);
  int err = errno;
  free(argv);
  free(envp);
  return -err;
}
