/**
 * Start, on a background thread, the one-time set-up of Deno's TLS crypto, so that it overlaps
 * with loading the modules a call needs instead of delaying the first TLS handshake.
 *
 * Why: Deno 2.8's crypto library seeds its random generator once per process from CPU-jitter
 * entropy, about 18 ms of CPU (36-37 ms on an AMD EPYC), on the thread of the first operation that needs it. A TLS
 * handshake runs on the main thread; WebCrypto's key generation runs on a worker thread. Asking
 * for one throw-away key first moves that cost off the path of `jobworker list`
 * (bench/client_start.ts measures it). The bundled command line starts it from its first
 * module, before the rest loads (cli/bundle_entry.ts); cli/bin.ts starts it otherwise.
 *
 * @module
 */

import { ROOT_OPTIONS_WITH_VALUE } from "./option_names.ts";

/**
 * Set once per process, on the global object: the bundled command line has two copies of this
 * module (its entry's and the command line's), and one set-up is enough.
 */
const STARTED = Symbol.for("jobworker.tlsWarmUpStarted");

/** Begin the set-up (once); nothing waits for it. */
export function startTlsWarmUp(): void {
  const global = globalThis as { [STARTED]?: boolean };
  if (global[STARTED]) return;
  global[STARTED] = true;
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
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (OFFLINE.has(arg)) return false;
    if (!arg.startsWith("-")) return true;
    if (ROOT_OPTIONS_WITH_VALUE.has(arg)) i++; // its value is not a command's name
  }
  return true;
}
