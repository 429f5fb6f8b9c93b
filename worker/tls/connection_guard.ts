/**
 * Caps the connections the server keeps: in total and per peer address. A connection past a cap
 * is closed before a byte of its TLS handshake is read, so that no client (certificate or not) can
 * use up the process's descriptors and lock everyone else out.
 *
 * grpc-js creates its HTTP/2 servers itself; this hooks their 'connection' event, which hands over
 * each accepted TCP socket (reached through internals.ts).
 *
 * A refused socket is closed on the next tick, once node:tls's own 'connection' listener (which
 * runs after this one) has wrapped it: in Deno 2.8.3 a socket it wraps already destroyed is never
 * freed (README, "Hostile clients").
 */
import type { Server } from "@grpc/grpc-js";
import type { Socket } from "node:net";
import process from "node:process";
import { log } from "../log/logger.ts";
import { WarningPace } from "../log/pace.ts";
import { endedBeforeHandshake, trimSoon } from "../runtime/memory_trim.ts";
import { http2ServersOf } from "./internals.ts";

export interface ConnectionLimits {
  /** Most connections at once. */
  maxConnections: number;
  /** Most connections at once from one IP address. */
  maxConnectionsPerPeer: number;
}

/** Sockets refused by a guard, closed on the next tick ({@link isRefused}). */
const refused = new WeakSet<Socket>();

/** Whether a guard refused `socket` (it is closed on the next tick). */
export function isRefused(socket: Socket): boolean {
  return refused.has(socket);
}

export class ConnectionGuard {
  #total = 0;
  readonly #perPeer = new Map<string, number>();
  #refused = 0;
  readonly #warnings = new WarningPace();

  constructor(private readonly limits: ConnectionLimits) {}

  /** Connections open now. */
  get open(): number {
    return this.#total;
  }

  /** Hooks every HTTP/2 server of `server` (call after bindAsync); false when none was found. */
  attach(server: Server): boolean {
    const servers = http2ServersOf(server);
    for (const s of servers) s.prependListener("connection", (socket) => this.#admit(socket));
    return servers.length > 0;
  }

  #admit(socket: Socket): void {
    const peer = socket.remoteAddress ?? "unknown";
    const fromPeer = this.#perPeer.get(peer) ?? 0;
    if (this.#total >= this.limits.maxConnections) return this.#refuse(socket, peer, "in total");
    if (fromPeer >= this.limits.maxConnectionsPerPeer) {
      return this.#refuse(socket, peer, "from this address");
    }
    this.#total++;
    this.#perPeer.set(peer, fromPeer + 1);
    socket.once("close", () => {
      trimSoon(); // what the connection queued was freed: give it back to the system
      this.#total--;
      const left = (this.#perPeer.get(peer) ?? 1) - 1;
      if (left > 0) this.#perPeer.set(peer, left);
      else this.#perPeer.delete(peer);
    });
  }

  #refuse(socket: Socket, peer: string, scope: string): void {
    refused.add(socket);
    socket.once("close", endedBeforeHandshake);
    process.nextTick(() => socket.destroy());
    this.#refused++;
    if (!this.#warnings.due()) return;
    log.warn("connection refused: too many connections " + scope, {
      peer,
      open: this.#total,
      refusedSoFar: this.#refused,
      limits: `JOB_WORKER_MAX_CONNECTIONS=${this.limits.maxConnections}, ` +
        `JOB_WORKER_MAX_CONNECTIONS_PER_PEER=${this.limits.maxConnectionsPerPeer}`,
    });
  }
}
