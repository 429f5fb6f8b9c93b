/**
 * worker/api/tls_write_groups.ts: a TLS socket hands what its Writable buffered to Deno's TLS
 * layer in writes of at most 48 KiB (larger ones are copied quadratically by Deno 2.8.3), and the
 * bytes still arrive whole and in order. Real node:tls sockets with the test PKI.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as tls from "node:tls";
import * as http2 from "node:http2";
import { Writable } from "node:stream";
import type { EventEmitter } from "node:events";
import type { AddressInfo } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { makePki } from "./helpers/pki.ts";
import { concatBytes } from "./helpers/process.ts";
import {
  groupBufferedWrites,
  groupSessionWrites,
  MAX_WRITE_BYTES,
  writeGroups,
} from "../worker/api/tls_write_groups.ts";
import { mutualTls13, readServerTlsFiles } from "../worker/tls/server_credentials.ts";
import { http2ServersOf, sessionSocketOf } from "../worker/tls/internals.ts";

const FRAME = 16 * 1024 + 9; // one HTTP/2 DATA frame of 16 KiB with its header

Deno.test("writeGroups: consecutive groups of at most 48 KiB, order and allBuffers kept", () => {
  const chunks = Object.assign(
    Array.from({ length: 10 }, (_, i) => ({ chunk: new Uint8Array(FRAME).fill(i), encoding: "" })),
    { allBuffers: true },
  );
  const groups = writeGroups(chunks);
  assert.deepEqual(groups.map((g) => g.length), [2, 2, 2, 2, 2]); // three frames are 49,179 bytes
  assert.deepEqual(groups.flat().map((e) => e.chunk), chunks.map((e) => e.chunk));
  for (const g of groups) assert.deepEqual(g.allBuffers, true);
  const big = { chunk: new Uint8Array(MAX_WRITE_BYTES + 1), encoding: "" };
  const small = { chunk: new Uint8Array(10), encoding: "" };
  const mixed = writeGroups(Object.assign([small, big, small, small], { allBuffers: false }));
  assert.deepEqual(mixed.map((g) => g.length), [1, 1, 2]);
  assert.deepEqual(mixed[0]!.allBuffers, false);
});

Deno.test("a TLS socket writes a burst of buffered frames in writes of at most 48 KiB, bytes intact", async () => {
  const pki = await makePki();
  const read = (file: string) => Deno.readTextFileSync(`${pki.dir}/${file}`);
  const frames = Array.from({ length: 64 }, () => {
    const frame = new Uint8Array(FRAME);
    crypto.getRandomValues(frame);
    return frame;
  });
  const expected = concatBytes(frames);
  const writevBytes: number[] = [];
  const server = tls.createServer({ key: read("server-key.pem"), cert: read("server-cert.pem") });
  server.on("secureConnection", (socket: tls.TLSSocket) => {
    // A spy under the grouping: what each write handed on to Deno's TLS layer held.
    const writev = Reflect.get(socket, "_writev") as (...args: unknown[]) => unknown;
    Reflect.set(
      socket,
      "_writev",
      function (this: unknown, chunks: { chunk: Uint8Array }[], cb: unknown) {
        writevBytes.push(chunks.reduce((n, e) => n + e.chunk.byteLength, 0));
        return Reflect.apply(writev, this, [chunks, cb]);
      },
    );
    assert(groupBufferedWrites(socket), "the socket has a _writev to group");
    // As an HTTP/2 session does: one write per frame, all in one turn, so all but the first
    // wait in the socket's Writable and reach _writev together.
    for (const frame of frames) socket.write(Buffer.from(frame));
    socket.end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  try {
    const received: Uint8Array[] = [];
    await new Promise<void>((resolve, reject) => {
      const client = tls.connect({ host: "127.0.0.1", port, ca: read("ca-cert.pem") });
      client.on("data", (data: Uint8Array) => received.push(new Uint8Array(data)));
      client.on("end", () => {
        client.end();
        resolve();
      });
      client.on("error", reject);
    });
    assert.deepEqual(concatBytes(received), expected);
    assert(writevBytes.length > 0, "the burst went through _writev");
    const largest = Math.max(...writevBytes);
    assert(largest <= MAX_WRITE_BYTES, `a write of ${largest} bytes reached the TLS layer`);
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await pki.remove();
  }
});

type WritevCallback = (error?: Error | null) => void;
type WritevFn = (this: unknown, chunks: { chunk: unknown }[], cb: WritevCallback) => unknown;

/** Wraps `target._writev` with `spy`, which gets the chunks and calls on with `next`. */
function wrapWritev(
  target: object,
  spy: (next: WritevFn, self: unknown, chunks: { chunk: unknown }[], cb: WritevCallback) => unknown,
) {
  const next = Reflect.get(target, "_writev") as WritevFn;
  Reflect.set(
    target,
    "_writev",
    function (this: unknown, chunks: { chunk: unknown }[], cb: WritevCallback) {
      return spy(next, this, chunks, cb);
    },
  );
}

Deno.test("groups whose writes complete synchronously are written in a loop: a huge burst does not nest calls", async () => {
  // A real node:stream Writable whose writev completes at once; objects count as a group each,
  // so 200,000 buffered chunks make 200,000 groups (nested, that overflowed the stack).
  const received: unknown[] = [];
  const writable = new Writable({
    objectMode: true,
    writev(chunks, cb) {
      for (const entry of chunks) received.push(entry.chunk);
      cb();
    },
  });
  assert(groupBufferedWrites(writable), "the Writable has a _writev to group");
  const sent = Array.from({ length: 200_000 }, (_, i) => ({ i }));
  writable.cork();
  for (const chunk of sent) writable.write(chunk);
  writable.uncork();
  await new Promise<void>((resolve, reject) => {
    writable.on("error", reject);
    writable.end(resolve);
  });
  assert.equal(received.length, sent.length);
  assert(received.every((chunk, i) => chunk === sent[i]), "chunks arrive in order");
});

/**
 * A burst of 63 buffered frames on a real TLS socket that is destroyed in its middle: either
 * while the second group is in flight, or once the first group's write completed (so the second
 * is handed to a closed socket). Returns the outcomes of the burst's _writev callback and the
 * errors the groups under it got.
 */
async function destroyMidBurst(when: "in flight" | "between groups") {
  const pki = await makePki();
  const read = (file: string) => Deno.readTextFileSync(`${pki.dir}/${file}`);
  const outcomes: (Error | null | undefined)[] = [];
  const groupErrors: string[] = [];
  let groupsHandedOn = 0;
  let serverClosed!: () => void;
  const closed = new Promise<void>((resolve) => serverClosed = resolve);
  const server = tls.createServer({ key: read("server-key.pem"), cert: read("server-cert.pem") });
  server.on("secureConnection", (socket: tls.TLSSocket) => {
    socket.on("close", () => serverClosed());
    socket.on("error", () => {}); // the socket's own 'error' is node:stream's business
    // Under the grouping: what each group got, and the destroy.
    wrapWritev(socket, (next, self, chunks, cb) => {
      if (chunks.length <= 1) return Reflect.apply(next, self, [chunks, cb]);
      const group = ++groupsHandedOn;
      const result = Reflect.apply(next, self, [chunks, (error?: Error | null) => {
        if (error) groupErrors.push(Reflect.get(error, "code") ?? error.message);
        if (when === "between groups" && group === 1) socket.destroy();
        cb(error);
      }]);
      if (when === "in flight" && group === 2) socket.destroy();
      return result;
    });
    assert(groupBufferedWrites(socket));
    // Over it: the callback node:stream gets for the whole burst.
    wrapWritev(
      socket,
      (next, self, chunks, cb) =>
        Reflect.apply(next, self, [chunks, (error?: Error | null) => {
          if (chunks.length > 1) outcomes.push(error);
          cb(error);
        }]),
    );
    // One write in flight, the other 63 frames buffered: they reach _writev as one burst.
    for (let i = 0; i < 64; i++) socket.write(Buffer.alloc(FRAME, 7));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  const client = tls.connect({ host: "127.0.0.1", port, ca: read("ca-cert.pem") });
  client.on("error", () => {});
  try {
    await closed;
    for (let i = 0; i < 10; i++) await new Promise((resolve) => setTimeout(resolve, 0));
    return { outcomes, groupErrors, groupsHandedOn };
  } finally {
    client.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await pki.remove();
  }
}

for (const when of ["in flight", "between groups"] as const) {
  Deno.test(`a TLS socket destroyed ${when} in a grouped burst: its _writev callback runs once, with an error`, async () => {
    const { outcomes, groupErrors, groupsHandedOn } = await destroyMidBurst(when);
    assert.equal(groupsHandedOn, 2, "the burst stops at the group the destroy cut short");
    assert(groupErrors.length === 1, `the cut group failed (${groupErrors.join(", ")})`);
    assert.equal(outcomes.length, 1, `the burst's callback ran ${outcomes.length} times`);
    assert(outcomes[0] instanceof Error, "a burst cut short ends with an error");
  });
}

Deno.test("every server session's socket is grouped, with no stream on it (unary responses too)", async () => {
  const pki = await makePki();
  const read = (file: string) => Deno.readTextFileSync(`${pki.dir}/${file}`);
  const server = new grpc.Server();
  const port = await new Promise<number>((resolve, reject) => {
    readServerTlsFiles(pki.dir).then((files) =>
      server.bindAsync(
        "127.0.0.1:0",
        mutualTls13(files, 16 * 1024),
        (error, port) => error ? reject(error) : resolve(port),
      ), reject);
  });
  const writevBytes: number[] = [];
  let burstDone!: () => void;
  const burst = new Promise<void>((resolve) => burstDone = resolve);
  const servers = http2ServersOf(server) as unknown as EventEmitter[];
  assert(servers.length > 0, "grpc-js's HTTP/2 servers");
  for (const s of servers) {
    s.on("session", (session: object) => {
      // Under the grouping (this listener runs before the worker's): what reaches the TLS layer.
      const socket = sessionSocketOf(session);
      assert(socket, "the session's socket");
      wrapWritev(socket, (next, self, chunks, cb) => {
        writevBytes.push(
          chunks.reduce((n, e) => n + (e.chunk instanceof Uint8Array ? e.chunk.byteLength : 0), 0),
        );
        return Reflect.apply(next, self, [chunks, cb]);
      });
    });
  }
  assert(groupSessionWrites(server), "hooked as startServer does");
  for (const s of servers) {
    s.on("session", (session: object) => {
      // A burst of frames on a fresh session with no stream: as a large unary response's DATA
      // frames reach its socket, one write each (their content does not matter here).
      const socket = sessionSocketOf(session)!;
      const write = Reflect.get(socket, "write") as (chunk: Uint8Array, cb?: () => void) => void;
      setTimeout(() => {
        for (let i = 0; i < 63; i++) Reflect.apply(write, socket, [new Uint8Array(FRAME)]);
        Reflect.apply(write, socket, [new Uint8Array(FRAME), () => burstDone()]);
      }, 0);
    });
  }
  const client = http2.connect(`https://127.0.0.1:${port}`, {
    ca: read("ca-cert.pem"),
    cert: read("admin-client-cert.pem"),
    key: read("admin-client-key.pem"),
    minVersion: "TLSv1.3",
  });
  client.on("error", () => {}); // the frames are not valid HTTP/2: the client gives up on them
  try {
    await burst;
    const total = writevBytes.reduce((a, b) => a + b, 0);
    assert(total >= 32 * FRAME, `the burst went through _writev (${total} bytes)`);
    const largest = Math.max(...writevBytes);
    assert(largest <= MAX_WRITE_BYTES, `a write of ${largest} bytes reached the TLS layer`);
  } finally {
    client.destroy();
    server.forceShutdown();
    await pki.remove();
  }
});
