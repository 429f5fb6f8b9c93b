// jwinit: the minimal init of a job created with `init: true` (as `docker run --init`).
//
// Usage: jwinit PATH ARGV0 [ARGS...]. Runs PATH as its only child and stays PID 1 of the job's
// namespace: SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH are forwarded to the
// child (a namespace's PID 1 gets a signal from outside only when it handles it, which a plain
// `sleep` or shell script does not), and orphaned processes are reaped. Exits with the child's
// exit code, or 128 + the signal that killed it. No allocation, no stdio: a few pages of memory.
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "forwarded_signals.h"

// A handler, not SIG_DFL or SIG_IGN, so that the kernel delivers these to PID 1; they stay blocked
// and are taken with sigwaitinfo, so it never runs.
static void noop(int sig) { (void)sig; }

static void say(const char *text) {
  ssize_t ignored = write(2, text, strlen(text));
  (void)ignored;
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

  pid_t child = fork();
  if (child < 0) {
    say("jwinit: fork failed\n");
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
    execv(argv[1], argv + 2);
    say("jwinit: cannot execute the command\n");
    _exit(127);
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
