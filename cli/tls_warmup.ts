/**
 * Start, on a background thread, the one-time set-up of Deno's TLS crypto, so that it overlaps
 * with loading the modules a call needs instead of delaying the first TLS handshake.
 *
 * Why: Deno 2.8's crypto library seeds its random generator once per process from CPU-jitter
 * entropy, about 18 ms of CPU (36-37 ms on an AMD EPYC), on the thread of the first operation that needs it. A TLS
 * handshake runs on the main thread; WebCrypto's key generation runs on a worker thread. Asking
 * for one throw-away key first moves that cost off the path of `jobworker list`
 * (bench/client_start.ts measures it). cli/bin.ts starts it before the command line loads.
 *
 * @module
 */

let started = false;

/** Begin the set-up (once); nothing waits for it. */
export function startTlsWarmUp(): void {
  if (started) return;
  started = true;
  crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign"]).catch(
    () => {},
  );
}

/** Arguments that mean no connection will be made (help, or a command that makes none). */
const OFFLINE = new Set(["help", "--help", "-h", "context", "certs", "completion"]);

/**
 * Whether a command line may connect to a server, told before it is parsed: a guess that errs
 * towards yes (a wrong yes costs the set-up's CPU on another thread, a wrong no only the time
 * the warm-up would have saved). Only the words up to the command's name are looked at: what
 * follows may be a job's own arguments (`jobworker run grep -h x`).
 */
export function mayConnect(argv: string[]): boolean {
  for (const arg of argv) {
    if (OFFLINE.has(arg)) return false;
    if (!arg.startsWith("-")) return true;
  }
  return true;
}
