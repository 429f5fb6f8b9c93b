// The cost of a cgroup v2 move on a job's start path, as a C program (no worker): a child that
// joins a v2 cgroup through cgroup.procs right after its clone ("join", as jwstart did on v2)
// against one cloned straight into it with clone3's CLONE_INTO_CGROUP ("into", what the direct
// start does on v2 now). Each sample runs from the clone until the child, in the cgroup, has
// exited and been reaped; join and into alternate, with `gap_ms` of quiet before each sample (a
// write to cgroup.procs takes the kernel's global migration lock, whose first writer after a quiet
// moment waits for an RCU grace period). Prints one JSON line: medians and p90, microseconds.
//
// Usage (root; DIR an empty cgroup v2 directory: on a hybrid v1 host one below the cgroup2 mount,
// e.g. /sys/fs/cgroup/unified/jwbench, beneath this process's own cgroup there):
//   gcc -O2 -o build/cgroup_move bench/cgroup_move.c
//   mkdir DIR; build/cgroup_move DIR 60 200; build/cgroup_move DIR 60 0; rmdir DIR
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}
static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}
static long clone3_(struct clone_args *a) { return syscall(SYS_clone3, a, sizeof *a); }

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s CGROUP_V2_DIR SAMPLES GAP_MS\n", argv[0]);
    return 2;
  }
  const char *dir = argv[1];
  int n = atoi(argv[2]), gap_ms = atoi(argv[3]);
  char procs[512];
  snprintf(procs, sizeof procs, "%s/cgroup.procs", dir);
  if (n < 1 || gap_ms < 0) return 2;
  double *join = calloc(n, sizeof(double)), *into = calloc(n, sizeof(double));
  if (join == NULL || into == NULL) return 1;
  for (int i = 0; i < n; i++) {
    for (int k = 0; k < 2; k++) {
      int mode = (i + k) % 2;  // 0 join, 1 into
      usleep(gap_ms * 1000);
      struct clone_args a;
      memset(&a, 0, sizeof a);
      a.exit_signal = SIGCHLD;
      int fd = -1;
      double t0 = now_us();
      if (mode == 1) {
        fd = open(dir, O_PATH | O_CLOEXEC);
        a.flags = CLONE_INTO_CGROUP;
        a.cgroup = (uint64_t)fd;
      }
      long pid = clone3_(&a);
      if (pid == 0) {
        if (mode == 0) {
          int p = open(procs, O_WRONLY | O_CLOEXEC);
          if (p < 0 || write(p, "0", 1) != 1) _exit(1);
        }
        _exit(0);
      }
      if (pid < 0) {
        perror("clone3");
        return 1;
      }
      if (fd >= 0) close(fd);
      int st;
      waitpid((pid_t)pid, &st, 0);
      double t = now_us() - t0;
      if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "the child could not join %s\n", dir);
        return 1;
      }
      (mode ? into : join)[i] = t;
    }
  }
  qsort(join, n, sizeof(double), cmp);
  qsort(into, n, sizeof(double), cmp);
  printf("{\"n\":%d,\"gapMs\":%d,\"join_p50_us\":%.0f,\"join_p90_us\":%.0f,\"into_p50_us\":%.0f,"
         "\"into_p90_us\":%.0f,\"ratio_p50\":%.3f}\n",
         n, gap_ms, join[n / 2], join[n * 9 / 10], into[n / 2], into[n * 9 / 10],
         into[n / 2] / join[n / 2]);
  return 0;
}
