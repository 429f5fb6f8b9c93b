/**
 * Every reach into private parts of grpc-js and of Deno's node:http2 and node:net, in one place.
 * The worker needs them to work around Deno 2.8.3 defects and to guard connections (see the users:
 * the connection guard, the handshake deadline, session_release.ts, session_recycle.ts,
 * api/http2_unsent.ts, runtime/pipe_socket.ts).
 *
 * Checked against {@link CHECKED_AGAINST}: grpc-js is pinned exactly in deno.json, Deno by the
 * Makefile. Each accessor returns undefined (or an empty list) when the shape is not what it was
 * checked against; {@link checkInternals} runs once at start and logs, as an error, each part
 * that is missing and what the worker then does without it, so an upgrade that moves them is
 * loud rather than a silent loss of protection. The pipe handle's reach is checked where it is
 * used, at the first pipe (runtime/pipe_socket.ts logs it the same way), and node:tls's handshake
 * timer where it is switched off (the handshake deadline's attach).
 *
 * @module
 */
import type { Server } from "@grpc/grpc-js";
import type { Socket } from "node:net";
import { log } from "../log/logger.ts";

export const CHECKED_AGAINST = { deno: "2.8.3", grpcJs: "1.14.7" } as const;

type Obj = Record<PropertyKey, unknown>;

function isObject(value: unknown): value is Obj {
  return typeof value === "object" && value !== null;
}

/** An own symbol key of `target` by the symbol's description (Deno's private keys). */
function symbolKey(target: object, description: string): symbol | undefined {
  return Object.getOwnPropertySymbols(target).find((s) => s.description === description);
}

/** An own symbol-keyed property of `target` by the symbol's description. */
function symbolProperty(target: object, description: string): unknown {
  const key = symbolKey(target, description);
  return key === undefined ? undefined : Reflect.get(target, key);
}

/** What the worker uses of node:http2's server (a public API, reached through grpc-js). */
export interface Http2ServerEvents {
  prependListener(event: "connection", listener: (socket: Socket) => void): unknown;
  on(event: "session", listener: (session: Http2SessionLike) => void): unknown;
  on(event: "secureConnection", listener: (socket: Socket) => void): unknown;
}

/** A node:http2 server session, as an event emitter. */
export interface Http2SessionLike {
  once(event: "close", listener: () => void): unknown;
}

/** grpc-js: the HTTP/2 servers a Server created in bindAsync (its private `http2Servers` Map). */
export function http2ServersOf(server: Server): Http2ServerEvents[] {
  const servers = (server as unknown as { http2Servers?: unknown }).http2Servers;
  if (!(servers instanceof Map)) return [];
  return [...servers.keys()].filter((s): s is Http2ServerEvents =>
    isObject(s) && typeof s["prependListener"] === "function" && typeof s["on"] === "function"
  );
}

/**
 * Deno 2.8.3's node:tls: switches off the handshake timer its server starts for each accepted
 * connection (`tls.Server`'s `_handshakeTimeout`, read at every accept; 0 starts none). That timer
 * is cancelled only when a handshake completes: a connection closed before (a port scan, a client
 * without a certificate, a refused one) keeps its TLSSocket, TLSWrap and TCP handle until the timer
 * runs. Set on the server, not passed to it: `tls.Server` reads a `handshakeTimeout` of 0 as its
 * default, 120 s. False, changing nothing, when the server is not as checked.
 */
export function disableTlsHandshakeTimer(server: Http2ServerEvents): boolean {
  const tlsServer = server as unknown as { _handshakeTimeout?: unknown };
  if (typeof tlsServer._handshakeTimeout !== "number") return false;
  tlsServer._handshakeTimeout = 0;
  return true;
}

/**
 * grpc-js: the HTTP/2 stream under a server call. `call.call` is the call's
 * BaseServerInterceptingCall (no server interceptors), whose `stream` is the ServerHttp2Stream.
 */
export function http2StreamOfCall(call: unknown): { id: number; session: object } | null {
  const inner = isObject(call) ? call["call"] : undefined;
  const stream = isObject(inner) ? inner["stream"] : undefined;
  if (!isObject(stream)) return null;
  const id = stream["id"];
  const session = stream["session"];
  return typeof id === "number" && id > 0 && isObject(session) ? { id, session } : null;
}

/** sendPreFramed found a call it could not change (logged once). */
let preFramedMissing = false;

/**
 * grpc-js: makes a server call send the messages `framed` gives a buffer for as they are. Such a
 * buffer holds the message behind its 5-byte gRPC prefix (flag 0, big-endian length), which
 * grpc-js otherwise writes into a fresh copy of every message (the call's `serializeMessage`,
 * BaseServerInterceptingCall, without compression: grpc-js's server never compresses). For other
 * values `framed` returns undefined and grpc-js serializes as usual. Returns false, changing
 * nothing (and logs that once, as an error), when the call is not shaped as checked.
 */
export function sendPreFramed(call: unknown, framed: (value: unknown) => Uint8Array | undefined) {
  const inner = isObject(call) ? call["call"] : undefined;
  const serialize = isObject(inner) ? inner["serializeMessage"] : undefined;
  if (!isObject(inner) || typeof serialize !== "function") {
    if (!preFramedMissing) {
      preFramedMissing = true;
      log.error("grpc-js's call internals are not where expected: output is copied once more", {
        missing: "call.serializeMessage",
        checkedAgainst: `grpc-js ${CHECKED_AGAINST.grpcJs}`,
      });
    }
    return false;
  }
  inner["serializeMessage"] = function (this: unknown, value: unknown): unknown {
    return framed(value) ?? Reflect.apply(serialize, this, [value]);
  };
  return true;
}

/** Deno: the socket a session writes its frames to (`session[kSocket]`; the public one is a proxy). */
export function sessionSocketOf(session: object): Obj | null {
  const socket = symbolProperty(session, "socket");
  return isObject(socket) && typeof socket["write"] === "function" ? socket : null;
}

/** Deno: the native binding object behind a session (`session[kHandle]`). */
export function sessionBindingOf(session: object): Obj | undefined {
  const binding = symbolProperty(session, "kHandle");
  return isObject(binding) ? binding : undefined;
}

/** Deno: whether a key of a session's binding is its owner (the `owner_symbol` the callbacks read). */
export function isBindingOwnerKey(key: PropertyKey): boolean {
  return typeof key === "symbol" && key.description === "ownerSymbol";
}

/** A pipe Socket's native handle, as {@link pipeHandleOf} found it. */
export type PipeHandle = object & { readonly __pipeHandle: unique symbol };

/**
 * Deno 2.8.3's node:net: a Socket made on a pipe's descriptor is never freed, nor its native handle
 * (a PipeWrap). The handle's `readStart` keeps a strong V8 global of the handle itself in its read
 * callback state (ext/node/ops/stream_wrap.rs, `read_start_with_handle`), which only `readStop`
 * drops; the close (`close_handle`) stops the pipe's reads but never drops that state, and Node's
 * net calls `readStop` only to pause. So every closed pipe's handle stayed, with its native side
 * (the libuv-style pipe, its read state: about 3 KiB of RSS), and held the Socket under its
 * private `ownerSymbol` key, and the Socket's listeners what they close over: a job's three pipes
 * (stdout, stderr, status) kept the job itself, its output log, stopper and cgroup objects, for
 * every job the worker ever ran (a heap snapshot after 200 jobs `true`: 606 Sockets, 603
 * PipeWraps, 201 Jobs, all reachable only from global handles). The handle of `socket`, taken
 * while it is open (the close clears `socket._handle`), or undefined when it is not as checked.
 */
export function pipeHandleOf(socket: Socket): PipeHandle | undefined {
  const handle = (socket as unknown as { _handle?: unknown })._handle;
  return isObject(handle) && symbolProperty(handle, "ownerSymbol") === socket &&
      typeof handle["readStop"] === "function"
    ? handle as PipeHandle
    : undefined;
}

/**
 * Frees a closed pipe's handle ({@link pipeHandleOf}): `readStop` drops the read state's global
 * of the handle, so the handle and its native side are collected (after the close it only marks
 * the closed pipe as not reading: the close already took its descriptor and callbacks), and the
 * handle's link to its Socket is cut as well, so the Socket goes even if the handle stayed.
 */
export function releasePipeHandle(handle: PipeHandle): void {
  (handle as unknown as { readStop: () => number }).readStop();
  const key = symbolKey(handle, "ownerSymbol");
  if (key !== undefined) Reflect.deleteProperty(handle, key);
}

/**
 * Checks at start, after bindAsync, what can be checked before a client connects, and logs each
 * missing part as an error; the per-session parts are checked on the first session (logged once).
 */
export function checkInternals(server: Server): void {
  if (Deno.version.deno !== CHECKED_AGAINST.deno) {
    log.warn("Deno's node:http2 and node:net internals were checked against another Deno version", {
      checked: CHECKED_AGAINST.deno,
      running: Deno.version.deno,
    });
  }
  const servers = http2ServersOf(server);
  if (servers.length === 0) {
    log.error(
      "grpc-js's HTTP/2 servers are not where expected: connections are not capped, closed " +
        "sessions are not released, the worker does not recycle",
      { checkedAgainst: `grpc-js ${CHECKED_AGAINST.grpcJs}` },
    );
    return;
  }
  let checked = false;
  for (const s of servers) {
    s.on("session", (session) => {
      if (checked) return;
      checked = true;
      const missing = [
        ...(sessionBindingOf(session) ? [] : ["kHandle: closed sessions are not released"]),
        ...(sessionSocketOf(session)
          ? []
          : ["socket: output streams rely on write()/'drain' alone"]),
      ];
      if (missing.length > 0) {
        log.error("Deno's HTTP/2 session internals are not where expected", {
          missing: missing.join("; "),
          checkedAgainst: `Deno ${CHECKED_AGAINST.deno}`,
        });
      }
    });
  }
}
