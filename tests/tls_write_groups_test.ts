/**
 * worker/api/tls_write_groups.ts: a TLS socket hands what its Writable buffered to Deno's TLS
 * layer in writes of at most 48 KiB (larger ones are copied quadratically by Deno 2.8.3), and the
 * bytes still arrive whole and in order. Real node:tls sockets with the test PKI.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as tls from "node:tls";
import type { AddressInfo } from "node:net";
import { makePki } from "./helpers/pki.ts";
import { concatBytes } from "./helpers/process.ts";
import {
  groupBufferedWrites,
  MAX_WRITE_BYTES,
  writeGroups,
} from "../worker/api/tls_write_groups.ts";

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
