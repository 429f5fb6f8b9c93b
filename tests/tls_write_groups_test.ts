/**
 * worker/api/tls_write_groups.ts: a TLS socket hands what its Writable buffered to Deno's TLS
 * layer in writes of at most 48 KiB (larger ones are copied quadratically by Deno 2.8.3), and the
 * bytes still arrive whole and in order. Real node:tls sockets with the test PKI; the last test goes
 * through a real worker process (startServer's hook) and reads the TLS records on the wire.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as tls from "node:tls";
import * as http2 from "node:http2";
import { Writable } from "node:stream";
import type { EventEmitter } from "node:events";
import type { AddressInfo } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { jobworker } from "../proto/service.ts";
import { makePki } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { clientFor } from "./helpers/clients.ts";
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

/**
 * A TCP relay in front of `port` that passes bytes both ways unchanged and notes the length of
 * every record the server sends (a TLS record's 5-byte header is cleartext: type, version,
 * length).
 */
function recordingRelay(port: number) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const records: number[] = [];
  const relay = async (client: Deno.Conn) => {
    conns.push(client);
    const server = await Deno.connect({ hostname: "127.0.0.1", port });
    conns.push(server);
    client.readable.pipeTo(server.writable).catch(() => {});
    const header = new Uint8Array(5);
    let have = 0; // header bytes collected
    let body = 0; // bytes of the current record's body still to pass
    const toClient = client.writable.getWriter();
    try {
      for await (const chunk of server.readable) {
        for (let i = 0; i < chunk.length;) {
          if (body > 0) {
            const n = Math.min(body, chunk.length - i);
            body -= n;
            i += n;
            continue;
          }
          header[have++] = chunk[i++]!;
          if (have < 5) continue;
          have = 0;
          body = (header[3]! << 8) | header[4]!;
          records.push(body);
        }
        await toClient.write(chunk);
      }
    } catch { /* either side closed */ }
    toClient.close().catch(() => {});
  };
  (async () => {
    for await (const conn of listener) relay(conn).catch(() => {}); // worker gone: close() ends it
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    records,
    close() {
      listener.close();
      for (const conn of conns) {
        try {
          conn.close();
        } catch { /* already closed */ }
      }
    },
  };
}

/** The longest run of consecutive values equal to `value` in `list`. */
function longestRun(list: number[], value: number): number {
  let longest = 0;
  let run = 0;
  for (const n of list) {
    run = n === value ? run + 1 : 0;
    longest = Math.max(longest, run);
  }
  return longest;
}

Deno.test({
  name:
    "a real worker (startServer) groups its sessions' writes: no TLS record run longer than 48 KiB",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    // Deno's TLS layer makes each write into records of 16 KiB of cleartext and a shorter last
    // one. An HTTP/2 frame of DATA is 16,393 bytes, so a group of two frames is two full records
    // and one of 18 bytes, and no write of at most 48 KiB makes more than three full records in a
    // row. Ungrouped, an ended job's frames reach the TLS layer in bursts of many frames per write:
    // with the groupSessionWrites call in worker/api/server.ts deleted, the longest run was 24
    // full records (3 of 3 runs); with it, at most 3.
    const pki = await makePki();
    const worker = await WorkerProcess.start({ certDir: pki.dir });
    const relay = recordingRelay(worker.port);
    const client = clientFor(pki.dir, `127.0.0.1:${relay.port}`);
    try {
      const size = 4 * 1024 * 1024;
      const job = await client.createJob({
        command: "/bin/sh",
        args: ["-c", `head -c ${size} /dev/zero`],
      });
      while ((await client.getJob(job.id)).status < jobworker.JobStatus.COMPLETED) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      const first = relay.records.length;
      let received = 0;
      for await (const chunk of client.stream(job.id)) received += chunk.payload.byteLength;
      assert.equal(received, size);
      const records = relay.records.slice(first);
      const full = Math.max(...records); // 16 KiB of cleartext and the cipher's overhead
      const fullRecords = records.filter((n) => n === full).length;
      assert(fullRecords * 16 * 1024 >= size / 2, `the stream's records: ${fullRecords} full ones`);
      const run = longestRun(records, full);
      assert(run <= 3, `${run} full TLS records in a row: a write of more than 48 KiB`);
    } finally {
      client.close();
      relay.close();
      await worker.stop();
      await pki.remove();
    }
  },
});
