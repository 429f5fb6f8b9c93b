/**
 * Signal numbers in the API (Job.signal) are Linux x86_64 numbers; their names, for people.
 */

const SIGNALS: Record<number, string> = {
  1: "SIGHUP",
  2: "SIGINT",
  3: "SIGQUIT",
  4: "SIGILL",
  5: "SIGTRAP",
  6: "SIGABRT",
  7: "SIGBUS",
  8: "SIGFPE",
  9: "SIGKILL",
  10: "SIGUSR1",
  11: "SIGSEGV",
  12: "SIGUSR2",
  13: "SIGPIPE",
  14: "SIGALRM",
  15: "SIGTERM",
  16: "SIGSTKFLT",
  17: "SIGCHLD",
  18: "SIGCONT",
  19: "SIGSTOP",
  20: "SIGTSTP",
  21: "SIGTTIN",
  22: "SIGTTOU",
  23: "SIGURG",
  24: "SIGXCPU",
  25: "SIGXFSZ",
  26: "SIGVTALRM",
  27: "SIGPROF",
  28: "SIGWINCH",
  29: "SIGIO",
  30: "SIGPWR",
  31: "SIGSYS",
};
const SIGRTMIN = 34;
const SIGRTMAX = 64;

/**
 * The name of a Linux signal number.
 *
 * @example
 * ```ts
 * signalName(9); // "SIGKILL"
 * signalName(36); // "SIGRTMIN+2"
 * signalName(99); // "signal 99"
 * ```
 */
export function signalName(signal: number): string {
  const name = SIGNALS[signal];
  if (name) return name;
  if (signal === SIGRTMIN) return "SIGRTMIN";
  if (signal === SIGRTMAX) return "SIGRTMAX";
  if (signal > SIGRTMIN && signal < SIGRTMAX) return `SIGRTMIN+${signal - SIGRTMIN}`;
  return `signal ${signal}`;
}
