/**
 * Runs the process's one-time TLS crypto set-up at start, on a background thread, instead of in
 * the first client's handshake.
 *
 * Why: Deno 2.8's crypto library seeds its random generator once per process from CPU-jitter
 * entropy (about 18 ms of CPU on an idle machine), on the thread of the first operation that
 * needs it. For a worker that is the TLS set-up of its first accepted connection, on the main
 * thread: the first call after every start, reload or recycle waited for it (the profile of a
 * fresh worker's first `list` showed 35 ms in `initServerTls`, 0.2 ms on later connections).
 * WebCrypto's key generation runs on a worker thread and seeds the same generator, so one
 * throw-away key made while the worker starts takes that cost off every client's path. The
 * command line does the same (cli/tls_warmup.ts).
 *
 * @module
 */
import { log } from "../log/logger.ts";

/**
 * Begins the set-up; nothing waits for it (the worker's start takes far longer). Should it fail,
 * the first handshake does the set-up itself, as before.
 */
export function warmUpTlsCrypto(): void {
  crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign"]).catch((e) =>
    log.debug("the TLS crypto warm-up failed", { error: String(e) })
  );
}
