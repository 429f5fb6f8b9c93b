// jwinit: the minimal init of a job created with `init: true` (as `docker run --init`).
//
// Usage: jwinit PATH ARGV0 [ARGS...]. Runs PATH as its only child and stays PID 1 of the job's
// namespace: SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH are forwarded to the
// child (a namespace's PID 1 gets a signal from outside only when it handles it, which a plain
// `sleep` or shell script does not), and orphaned processes are reaped. Exits with the child's
// exit code, or 128 + the signal that killed it. No allocation, no stdio: a few pages of memory.
//
// The worker learns that a job runs from its status pipe's EOF. The job's starter leaves that pipe
// open as JW_STATUS_FD (jw_report.h); jwinit takes it only when it is a pipe opened write-only
// (anything else there is left alone), and keeps it only until it has forked: the child holds it
// close-on-exec, so the EOF comes when the command's exec succeeds, and when the exec fails the
// child writes {"minimalInit":"execve","errno":e} there first ("fork" or "pipe" from jwinit when
// it has no child: at the limit of processes or of open files). The worker then refuses the job at
// CreateJob with the message it gives a command that fails its exec without jwinit (ENOEXEC, a
// script's missing interpreter), instead of a started job that ends with 127 (126 for the fork).
//
// The child execs the command only once jwinit has closed its own copy of the status pipe (it
// waits for the EOF of a gate pipe that jwinit closes after it): otherwise the command, as the
// job's root or even as jwinit's own user, could open /proc/1/fd/4 first and hold the pipe open,
// and the worker would wait for an EOF that never comes.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "forwarded_signals.h"
#include "jw_report.h"

// A handler, not SIG_DFL or SIG_IGN, so that the kernel delivers these to PID 1; they stay blocked
// and are taken with sigwaitinfo, so it never runs.
static void noop(int sig) { (void)sig; }

static void say(const char *text) {
  ssize_t ignored = write(2, text, strlen(text));
  (void)ignored;
}

// Writes {"minimalInit":"<call>","errno":<err>} to the status pipe `fd`.
static void report(int fd, const char *call, int err) {
  struct jw_report r = {.len = 0};
  jw_put(&r, "{\"minimalInit\":\"");
  jw_put(&r, call);
  jw_put(&r, "\",\"errno\":");
  jw_put_int(&r, err);
  jw_put(&r, "}");
  jw_send(fd, &r);
}

// JW_STATUS_FD when the starter left the status pipe there (a pipe, open write-only), made
// close-on-exec; else -1, and the descriptor is left as it is.
static int status_pipe(void) {
  struct stat st;
  if (fstat(JW_STATUS_FD, &st) != 0 || !S_ISFIFO(st.st_mode)) return -1;
  int flags = fcntl(JW_STATUS_FD, F_GETFL);
  if (flags < 0 || (flags & O_ACCMODE) != O_WRONLY) return -1;
  return fcntl(JW_STATUS_FD, F_SETFD, FD_CLOEXEC) == 0 ? JW_STATUS_FD : -1;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    say("jwinit: usage: jwinit PATH ARGV0 [ARGS...]\n");
    return 2;
  }
  // jw_exec hands these over blocked, so one sent before the handlers below exist is still pending.
  sigset_t waited;
  sigemptyset(&waited);
  sigaddset(&waited, SIGCHLD);
  struct sigaction act;
  memset(&act, 0, sizeof act);
  act.sa_handler = noop;
  for (int i = 0; i < JW_NFORWARDED; i++) {
    sigaddset(&waited, jw_forwarded[i]);
    sigaction(jw_forwarded[i], &act, NULL);
  }
  sigaction(SIGCHLD, &act, NULL);
  sigprocmask(SIG_BLOCK, &waited, NULL);

  // The status pipe, when the starter left it open: the child's until its exec (see above), and
  // the gate the child waits on until jwinit has closed its own copy.
  int status_fd = status_pipe();
  int gate[2] = {-1, -1};
  if (status_fd >= 0 && pipe2(gate, O_CLOEXEC) != 0) {
    report(status_fd, "pipe", errno);
    return 126;
  }

  pid_t child = fork();
  if (child < 0) {
    if (status_fd >= 0) report(status_fd, "fork", errno);
    else say("jwinit: fork failed\n");
    return 126;
  }
  if (child == 0) {
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int i = 0; i < JW_NFORWARDED; i++) sigaction(jw_forwarded[i], &dfl, NULL);
    sigaction(SIGCHLD, &dfl, NULL);
    sigset_t none;  // as a command exec'd without jwinit: nothing blocked
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (status_fd >= 0) {
      close(gate[1]);
      char byte;
      while (read(gate[0], &byte, 1) < 0 && errno == EINTR) {
      }
    }
    execv(argv[1], argv + 2);
    if (status_fd >= 0) report(status_fd, "execve", errno);
    else say("jwinit: cannot execute the command\n");
    _exit(127);
  }
#ifdef JW_TEST_CLOSE_DELAY_US
  usleep(JW_TEST_CLOSE_DELAY_US);  // tests/jwinit_status_test.ts: a late parent, as on a busy host
#endif
  if (status_fd >= 0) {
    close(status_fd);  // first: the gate's EOF lets the child exec the command
    close(gate[0]);
    close(gate[1]);
  }

  for (;;) {
    siginfo_t info;
    int sig = sigwaitinfo(&waited, &info);
    if (sig < 0) continue;  // EINTR
    if (sig != SIGCHLD) {
      kill(child, sig);
      continue;
    }
    for (;;) {
      int status;
      pid_t pid = waitpid(-1, &status, WNOHANG);
      if (pid <= 0) break;
      if (pid != child) continue;  // an orphan, reaped
      // The command ended: leaving ends the namespace, and the kernel kills what remains of it.
      if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
      return WEXITSTATUS(status);
    }
  }
}
