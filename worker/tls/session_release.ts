/**
 * Works around a leak in Deno 2.8.3's node:http2: the native session keeps a strong global handle
 * to its JavaScript binding object for ever, and that object references the ServerHttp2Session
 * (and through it the TLS socket, grpc-js's per-connection state and timers). Every connection
 * ever served stayed in memory: about 45 KiB of RSS per connection, measured (issue 12).
 * Upstream fixed it after 2.8.3 (denoland/deno#36043, "clean up destroyed sessions"); 2.8.3 stays
 * pinned because 2.9 aborts inside nghttp2 (see the README).
 *
 * Once a session has closed, this empties its binding object, so only that small object and the
 * native nghttp2 state stay behind. The binding's owner becomes a stand-in that says "destroyed":
 * Deno's callbacks check `owner.destroyed` first, so a late callback returns at once.
 */
import type { Server } from "@grpc/grpc-js";
import {
  http2ServersOf,
  type Http2SessionLike,
  isBindingOwnerKey,
  sessionBindingOf,
} from "./internals.ts";

export interface SessionEmitter {
  on(event: "session", listener: (session: Http2SessionLike & object) => void): unknown;
}

function empty(binding: Record<PropertyKey, unknown>): void {
  for (const key of Reflect.ownKeys(binding)) {
    if (isBindingOwnerKey(key)) {
      binding[key] = { destroyed: true };
    } else {
      delete binding[key];
    }
  }
}

/** Empties each session of `http2Server` (a node:http2 server) once it has closed. */
export function releaseSessionsOf(http2Server: SessionEmitter): void {
  http2Server.on("session", (session) => {
    const binding = sessionBindingOf(session);
    if (binding !== undefined) session.once("close", () => empty(binding));
  });
}

/** Hooks every HTTP/2 server of `server` (call after bindAsync); false when none was found. */
export function releaseClosedSessions(server: Server): boolean {
  const servers = http2ServersOf(server);
  for (const s of servers) releaseSessionsOf(s);
  return servers.length > 0;
}
