/**
 * Start, on a background thread, the one-time set-up of Deno's TLS crypto, so that it overlaps
 * with loading the modules a call needs instead of delaying the first TLS handshake.
 *
 * Why: Deno 2.8's crypto library seeds its random generator once per process from CPU-jitter
 * entropy, about 18 ms of CPU, on the thread of the first operation that needs it. A TLS
 * handshake runs on the main thread; WebCrypto's key generation runs on a worker thread. Asking
 * for one throw-away key first moves that cost off the path of `jobworker list`
 * (bench/client_start.ts measures it).
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
