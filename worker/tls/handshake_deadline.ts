/**
 * The TLS handshake deadline (JOB_WORKER_HANDSHAKE_TIMEOUT), judged on what the client did, not on
 * when a busy worker got round to reading it.
 *
 * node:tls's own `handshakeTimeout` (Deno 2.8.3, ext/node/polyfills/_tls_wrap.js) is a timer
 * started when the connection is accepted. When the worker's event loop is held up past the
 * deadline (50 handshakes and a few GiB of output at once on 2 cores), that timer runs before the
 * input that arrived in time is read, and the connection is dropped although the client finished
 * long before. In TLS 1.3 the client's side of the handshake is complete once it has sent its
 * Finished: its first request is out, and Deno's node:http2 client then reports the closed
 * connection as its open streams closing with NGHTTP2_CANCEL, with no response and no error
 * (`handle.onstreamclose` in ext/node/polyfills/http2.ts; nothing is sent on the wire). Seen as a
 * rare flake in hostile_test's stalled readers.
 *
 * Here each connection's timer notes how late it ran. Later than {@link LATE_MS} means the worker
 * was not reading: what the client sent may be waiting unread, so the connection gets that time
 * again before it is judged, at most one deadline in all: no connection outlives twice the deadline
 * (plus the worker's own lateness), so handshakes that slow the worker buy themselves no more.
 *
 * Once attached, this is the only handshake timer: node:tls's is switched off. Deno 2.8.3 cancels
 * that one only when a handshake completes, so each connection closed before (a port scan, a client
 * without a certificate, a refused one) was kept until it ran (bench/README.md, "Hostile clients",
 * has the figures). node:tls's timer, at {@link backstopMs}, stays only where this deadline cannot
 * attach.
 * Each connection that ends before its handshake is told to memory_trim.ts (endedBeforeHandshake).
 *
 * @module
 */
import type { Server } from "@grpc/grpc-js";
import type { Socket } from "node:net";
import { log } from "../log/logger.ts";
import { endedBeforeHandshake } from "../runtime/memory_trim.ts";
import { WarningPace } from "../log/pace.ts";
import { isRefused } from "./connection_guard.ts";
import { CHECKED_AGAINST, disableTlsHandshakeTimer, http2ServersOf } from "./internals.ts";

/** A timer that runs this much after its time says the worker was busy, not the client slow. */
export const LATE_MS = 100;

/** node:tls's own handshake timeout, for a server this deadline cannot attach to. */
export function backstopMs(deadlineMs: number): number {
  return deadlineMs * 3;
}

interface Pending {
  socket: Socket;
  timer: ReturnType<typeof setTimeout>;
}

export class HandshakeDeadline {
  /** Connections still in their handshake, by {@link connectionKey}. */
  readonly #pending = new Map<string, Pending>();
  #dropped = 0;
  readonly #warnings = new WarningPace();

  constructor(private readonly deadlineMs: number) {}

  /** Hooks every HTTP/2 server of `server` (call after bindAsync); false when none was found. */
  attach(server: Server): boolean {
    const servers = http2ServersOf(server);
    for (const s of servers) {
      s.prependListener("connection", (socket) => this.#watch(socket));
      s.on("secureConnection", (socket) => this.#settle(socket));
      if (!disableTlsHandshakeTimer(s)) {
        log.error("cannot switch off node:tls's handshake timer", {
          effect: "a connection closed before its TLS handshake is kept until that timer has run",
          checkedAgainst: `Deno ${CHECKED_AGAINST.deno}`,
        });
      }
    }
    return servers.length > 0;
  }

  #watch(socket: Socket): void {
    if (isRefused(socket)) return; // the connection guard closes it on the next tick
    const key = connectionKey(socket);
    let graceLeft = this.deadlineMs;
    const arm = (ms: number) => {
      const due = performance.now() + ms;
      const timer = setTimeout(() => {
        const late = performance.now() - due;
        if (late > LATE_MS && graceLeft > 0) {
          const grace = Math.min(late, graceLeft);
          graceLeft -= grace;
          log.debug("TLS handshake given more time: the worker was late to read it", {
            peer: key,
            lateMs: Math.round(late),
          });
          return arm(grace);
        }
        if (this.#pending.get(key)?.socket === socket) {
          this.#pending.delete(key);
          endedBeforeHandshake();
        }
        if (!socket.destroyed) this.#drop(socket);
      }, ms);
      Deno.unrefTimer(timer); // never what keeps a stopping worker alive
      this.#pending.set(key, { socket, timer });
    };
    arm(this.deadlineMs);
    socket.once("close", () => {
      const pending = this.#pending.get(key);
      if (pending?.socket !== socket) return;
      clearTimeout(pending.timer);
      this.#pending.delete(key);
      endedBeforeHandshake();
    });
  }

  /** The handshake of the connection under `tlsSocket` (the same four addresses) finished. */
  #settle(tlsSocket: Socket): void {
    const key = connectionKey(tlsSocket);
    const pending = this.#pending.get(key);
    if (pending === undefined) return;
    clearTimeout(pending.timer);
    this.#pending.delete(key);
  }

  #drop(socket: Socket): void {
    const peer = socket.remoteAddress ?? "unknown";
    socket.destroy();
    this.#dropped++;
    if (!this.#warnings.due()) return;
    log.warn("connection closed: TLS handshake not finished in time", {
      peer,
      closedSoFar: this.#dropped,
      limit: `JOB_WORKER_HANDSHAKE_TIMEOUT=${this.deadlineMs / 1000}`,
    });
  }
}

/**
 * A live TCP connection's four addresses: unique among open connections, and the same on the raw
 * socket and the TLS socket over it (the peer's address and port alone are not: one client port
 * may reach two of the worker's addresses at once).
 */
function connectionKey(socket: Socket): string {
  return `${socket.remoteAddress}:${socket.remotePort}>${socket.localAddress}:${socket.localPort}`;
}
