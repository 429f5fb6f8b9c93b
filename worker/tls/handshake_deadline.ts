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
 * again (at most the whole deadline) before it is judged. A client that does not finish is closed
 * once the worker has been responsive for the deadline. node:tls's timer stays as a backstop at
 * {@link backstopMs}.
 *
 * @module
 */
import type { Server } from "@grpc/grpc-js";
import type { Socket } from "node:net";
import { log } from "../log/logger.ts";
import { http2ServersOf } from "./internals.ts";

/** A timer that runs this much after its time says the worker was busy, not the client slow. */
export const LATE_MS = 100;

/** node:tls's own handshake timeout, kept as a backstop behind this deadline. */
export function backstopMs(deadlineMs: number): number {
  return deadlineMs * 4;
}

interface Pending {
  socket: Socket;
  timer: ReturnType<typeof setTimeout>;
}

export class HandshakeDeadline {
  /** Connections still in their handshake, by peer address and port. */
  readonly #pending = new Map<string, Pending>();
  #dropped = 0;
  #lastWarning = 0;

  constructor(private readonly deadlineMs: number) {}

  /** Hooks every HTTP/2 server of `server` (call after bindAsync); false when none was found. */
  attach(server: Server): boolean {
    const servers = http2ServersOf(server);
    for (const s of servers) {
      s.prependListener("connection", (socket) => this.#watch(socket));
      s.on("secureConnection", (socket) => this.#settle(socket));
    }
    return servers.length > 0;
  }

  #watch(socket: Socket): void {
    if (socket.destroyed) return; // refused by the connection guard
    const key = peerKey(socket);
    const arm = (ms: number) => {
      const due = performance.now() + ms;
      const timer = setTimeout(() => {
        const late = performance.now() - due;
        if (late > LATE_MS) {
          log.debug("TLS handshake given more time: the worker was late to read it", {
            peer: key,
            lateMs: Math.round(late),
          });
          return arm(Math.min(late, this.deadlineMs));
        }
        this.#pending.delete(key);
        if (!socket.destroyed) this.#drop(socket);
      }, ms);
      this.#pending.set(key, { socket, timer });
    };
    arm(this.deadlineMs);
    socket.once("close", () => {
      const pending = this.#pending.get(key);
      if (pending?.socket !== socket) return;
      clearTimeout(pending.timer);
      this.#pending.delete(key);
    });
  }

  /** The handshake of the connection under `tlsSocket` (same peer address and port) finished. */
  #settle(tlsSocket: Socket): void {
    const key = peerKey(tlsSocket);
    const pending = this.#pending.get(key);
    if (pending === undefined) return;
    clearTimeout(pending.timer);
    this.#pending.delete(key);
  }

  #drop(socket: Socket): void {
    const peer = socket.remoteAddress ?? "unknown";
    socket.destroy();
    this.#dropped++;
    const now = Date.now();
    if (now - this.#lastWarning < 10_000) return; // one line per 10 s, however many
    this.#lastWarning = now;
    log.warn("connection closed: TLS handshake not finished in time", {
      peer,
      closedSoFar: this.#dropped,
      limit: `JOB_WORKER_HANDSHAKE_TIMEOUT=${this.deadlineMs / 1000}`,
    });
  }
}

function peerKey(socket: Socket): string {
  return `${socket.remoteAddress}:${socket.remotePort}`;
}
