/**
 * Keeps each write a TLS socket hands to Deno's TLS layer at most 48 KiB.
 *
 * Why: Deno 2.8.3's TLS socket (ext/node/ops/tls_wrap.rs, `clear_in`) feeds a write's cleartext to
 * rustls 48 KiB at a time and, after each 48 KiB, copies everything that is left into a new
 * vector (`data[offset..].to_vec()`). A write of B bytes is thus copied about B² / 96 KiB times
 * over: quadratic. An HTTP/2 session writes one frame (16 KiB of DATA) per `socket.write()`, but
 * while one write is in flight the socket's Writable buffers the next frames and then hands all of
 * them to `_writev` at once, which Deno joins into one write: every burst of frames nghttp2
 * produces when a client's window opens (up to the unsent bytes of all the connection's streams)
 * became one such write. That copying was most of the worker's CPU per streamed byte, and why that
 * CPU grew with the burst (README, "How it works inside", Output; the figures in bench/README.md,
 * "Output").
 *
 * So the session socket's `_writev` (node:stream's hook for writing buffered chunks) passes the
 * buffered chunks on in groups of at most {@link MAX_WRITE_BYTES}, each after the previous one
 * completed, and reports completion once the last did. A single chunk larger than that is passed
 * on alone (an HTTP/2 session's frames are 16 KiB and 9 bytes).
 *
 * Applied to every server session's socket as the session starts ({@link groupSessionWrites}, from
 * server.ts), so unary responses and streams alike are grouped.
 *
 * @module
 */
import type { Server } from "@grpc/grpc-js";
import { http2ServersOf, sessionSocketOf } from "../tls/internals.ts";

/** Deno 2.8.3's `MAX_CLEAR_IN`: what its TLS layer takes from one write without the copy. */
export const MAX_WRITE_BYTES = 48 * 1024;

/** A Writable's buffered chunk, as node:stream hands it to `_writev`. */
interface BufferedChunk {
  chunk: unknown;
  encoding: string;
}

/** node:stream's `_writev` chunk list: `allBuffers` says whether every chunk is a buffer. */
type Chunks = BufferedChunk[] & { allBuffers?: boolean };
type Writev = (this: unknown, chunks: Chunks, callback: (error?: Error | null) => void) => void;

const grouped = new WeakSet<object>();

function byteLength(entry: BufferedChunk): number {
  const chunk = entry.chunk;
  if (chunk instanceof Uint8Array) return chunk.byteLength;
  return typeof chunk === "string" ? chunk.length * 3 : MAX_WRITE_BYTES; // a string's worst case
}

/**
 * Splits `chunks` into consecutive groups of at most `maxBytes` (a chunk larger than that makes a
 * group of its own), each keeping the list's `allBuffers` flag.
 */
export function writeGroups(chunks: Chunks, maxBytes = MAX_WRITE_BYTES): Chunks[] {
  const groups: Chunks[] = [];
  let group: Chunks = [];
  let bytes = 0;
  for (const entry of chunks) {
    const n = byteLength(entry);
    if (group.length > 0 && bytes + n > maxBytes) {
      groups.push(group);
      group = [];
      bytes = 0;
    }
    group.push(entry);
    bytes += n;
  }
  if (group.length > 0) groups.push(group);
  for (const g of groups) g.allBuffers = chunks.allBuffers;
  return groups;
}

/**
 * Makes `socket` (a node:tls socket) write what its Writable buffered in groups of at most
 * {@link MAX_WRITE_BYTES}. Returns false, changing nothing, when the socket has no `_writev`.
 * Applied once per socket.
 *
 * Each group is handed on once the previous one completed. A write that completes synchronously
 * (its callback called before it returns) is followed in a loop, not from within its callback, so
 * a burst of many groups never nests calls. The first error ends the burst: `callback` gets it,
 * the groups after it are not written, and `callback` is called exactly once either way (a socket
 * destroyed mid-burst fails the group in flight with ECANCELED, or the next one with
 * ERR_SOCKET_CLOSED: tests/tls_write_groups_test.ts).
 */
export function groupBufferedWrites(socket: object): boolean {
  if (grouped.has(socket)) return true;
  const original = Reflect.get(socket, "_writev") as unknown;
  if (typeof original !== "function") return false;
  const writev = original as Writev;
  const groupedWritev: Writev = function (chunks, callback) {
    if (chunks.length <= 1) return Reflect.apply(writev, this, [chunks, callback]);
    const groups = writeGroups(chunks);
    let next = 0;
    let finished = false;
    const finish = (error?: Error | null) => {
      if (finished) return;
      finished = true;
      callback(error);
    };
    /** Writes groups while their writes complete synchronously; returns on the first that does not. */
    const writeFrom = () => {
      while (!finished) {
        if (next === groups.length) return finish();
        let inCall = true;
        let completedInCall = false;
        let called = false;
        const done = (error?: Error | null) => {
          if (called || finished) return; // a write's callback counts once
          called = true;
          if (error) return finish(error);
          if (inCall) completedInCall = true;
          else writeFrom();
        };
        Reflect.apply(writev, this, [groups[next++], done]);
        inCall = false;
        if (!completedInCall) return; // done() continues once the write completes
      }
    };
    writeFrom();
  };
  Reflect.set(socket, "_writev", groupedWritev);
  grouped.add(socket);
  return true;
}

/**
 * Groups the writes of every session's socket on the HTTP/2 servers of `server` (a grpc-js Server,
 * after bindAsync), as each session starts: whatever the connection carries (streams, unary
 * responses such as a ListJobs of up to the send limit, control frames). Returns false, changing
 * nothing, when grpc-js's HTTP/2 servers are not where expected; a session whose socket has no
 * `_writev` (or is not reachable) is left as it is.
 */
export function groupSessionWrites(server: Server): boolean {
  const servers = http2ServersOf(server);
  for (const s of servers) {
    s.on("session", (session) => {
      const socket = sessionSocketOf(session);
      if (socket) groupBufferedWrites(socket);
    });
  }
  return servers.length > 0;
}
