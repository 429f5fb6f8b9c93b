/**
 * Unit tests of the command line's own gRPC transport (cli/transport/http2.ts): message framing
 * however the body is cut into chunks, the size cap, compressed messages refused, what a body
 * sent a byte at a time holds, the `grpc-timeout` header, and the socket closed at once when the
 * server does not read. The transport against a real worker is covered by the CLI end-to-end
 * tests (every command, TLS failures, dropped connections, reloads) and tests/h2_stream_test.ts;
 * its HTTP/2 client (cli/transport/h2/) by tests/h2_hpack_test.ts and tests/h2_session_test.ts.
 */
import assert from "node:assert/strict";
import { ByteQueue } from "../cli/transport/h2/byte_queue.ts";
import { connect, createServer, type Socket } from "node:net";
import { encodeFrame, FrameType, Setting } from "../cli/transport/h2/frames.ts";
import { H2Session } from "../cli/transport/h2/session.ts";
import { frame, grpcTimeout, MessageReader, socketIo } from "../cli/transport/http2.ts";
import { RpcError } from "../cli/transport/types.ts";
import { concatBytes } from "./helpers/process.ts";

Deno.test("MessageReader: the same messages however the body is split", () => {
  const sizes = [0, 1, 4, 5, 70_000, 3, 16_384, 0];
  const messages = sizes.map((n, i) =>
    Uint8Array.from({ length: n }, (_, j) => (i * 31 + j) % 251)
  );
  const body = concatBytes(messages.map(frame));
  let seed = 7;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let round = 0; round < 50; round++) {
    const reader = new MessageReader();
    const got: Uint8Array[] = [];
    const maxChunk = round === 0 ? 1 : 1 + Math.floor(random() * 40_000);
    for (let at = 0; at < body.length;) {
      const n = Math.min(body.length - at, 1 + Math.floor(random() * maxChunk));
      got.push(...reader.push(body.slice(at, at + n)));
      at += n;
    }
    assert.equal(reader.pending, false);
    assert.deepEqual(got.map((m) => [...m]), messages.map((m) => [...m]), `round ${round}`);
  }
});

Deno.test("MessageReader: a cut-off message is pending; oversized and compressed ones are refused", () => {
  const cut = new MessageReader();
  assert.deepEqual(cut.push(frame(new Uint8Array(10)).subarray(0, 8)), []);
  assert.equal(cut.pending, true);
  const big = new Uint8Array([0, 0x04, 0, 0, 1]); // 64 MiB + 1
  assert.throws(() => new MessageReader().push(big), (e: RpcError) => e.code === 8);
  const compressed = new Uint8Array([1, 0, 0, 0, 0]);
  assert.throws(() => new MessageReader().push(compressed), (e: RpcError) => e.code === 13);
});

Deno.test("grpcTimeout: at most 8 digits, in the smallest unit that fits", () => {
  assert.equal(grpcTimeout(30_000), "30000m");
  assert.equal(grpcTimeout(0.4), "1m");
  assert.equal(grpcTimeout(99_999_999), "99999999m");
  assert.equal(grpcTimeout(100_000_000), "100000S");
  assert.equal(grpcTimeout(7 * 24 * 3600 * 1000), "604800S");
});

Deno.test("ByteQueue: bytes pushed one at a time are held in 16 KiB blocks, not an entry each; larger chunks as they came", () => {
  const queue = new ByteQueue();
  const n = 100_000;
  for (let i = 0; i < n; i++) queue.push(Uint8Array.of(i % 251));
  assert.equal(queue.length, n);
  assert.ok(queue.chunks <= Math.ceil(n / (16 * 1024)), `${queue.chunks} entries for ${n} bytes`);
  const big = Uint8Array.from({ length: 5000 }, (_, i) => i % 7);
  queue.push(big);
  queue.push(Uint8Array.of(1, 2));
  assert.equal(queue.take(3).join(), "0,1,2");
  const rest = queue.take(n - 3);
  assert.ok(rest.every((b, i) => b === (i + 3) % 251));
  const whole = queue.take(5000);
  assert.equal(whole.buffer, big.buffer); // kept, not copied
  assert.equal(queue.take(2).join(), "1,2");
  assert.equal(queue.length, 0);
});

Deno.test("MessageReader: a message sent a byte at a time arrives whole", () => {
  const message = Uint8Array.from({ length: 70_000 }, (_, i) => (i * 13) % 256);
  const body = frame(message);
  const reader = new MessageReader();
  const got: Uint8Array[] = [];
  for (let i = 0; i < body.length; i++) got.push(...reader.push(body.slice(i, i + 1)));
  assert.deepEqual(got.map((m) => [...m]), [[...message]]);
  assert.equal(reader.pending, false);
});

Deno.test("MessageReader: what a message holds follows the bytes that came, not the length its prefix claims", () => {
  const MiB = 1024 * 1024;
  const claimed = new Uint8Array([0, 0x04, 0, 0, 0]); // exactly 64 MiB, the most allowed
  const idle = new MessageReader();
  assert.deepEqual(idle.push(claimed), []);
  assert.ok(idle.held <= MiB + 5, `5 bytes made the reader hold ${idle.held}`);

  const length = 6 * MiB + 123;
  const message = Uint8Array.from({ length }, (_, i) => (i * 7) % 253);
  const body = frame(message);
  const small = frame(message.subarray(0, 700_000)); // up to 1 MiB: a buffer of its length
  const once = new MessageReader();
  assert.deepEqual(once.push(small.subarray(0, 1000)), []);
  assert.equal(once.held, 700_000 + 5);
  assert.equal(once.push(small.subarray(1000))[0]!.byteLength, 700_000);

  const reader = new MessageReader();
  const got: Uint8Array[] = [];
  for (let at = 0; at < body.length; at += 100_000) {
    got.push(...reader.push(body.subarray(at, at + 100_000)));
    const came = Math.min(body.length, at + 100_000);
    if (got.length === 0) assert.ok(reader.held <= 2 * came + MiB, `${reader.held} for ${came}`);
  }
  assert.equal(got.length, 1);
  assert.equal(got[0]!.length, length);
  assert.ok(got[0]!.every((b, i) => b === (i * 7) % 253));
});

Deno.test("socketIo: a session that gives up on a server that does not read closes its socket at once", async () => {
  // A real socket to a server that never reads (paused from the start), which opens all its
  // windows so that our request body is sent until the socket's write buffer passes the cap.
  const accepted: Socket[] = [];
  const server = createServer({ pauseOnConnect: true }, (peer) => {
    accepted.push(peer);
    const settings = new Uint8Array(6);
    new DataView(settings.buffer).setUint16(0, Setting.INITIAL_WINDOW_SIZE);
    new DataView(settings.buffer).setUint32(2, 2 ** 31 - 1);
    const increment = new Uint8Array(4);
    new DataView(increment.buffer).setUint32(0, 2 ** 31 - 1 - 65_535);
    peer.write(encodeFrame(FrameType.SETTINGS, 0, 0, settings));
    peer.write(encodeFrame(FrameType.WINDOW_UPDATE, 0, 0, increment));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  const socket = connect(port, "127.0.0.1");
  const closed = new Promise((resolve) => socket.once("close", resolve));
  const session = new H2Session(socketIo(socket));
  const started = new Promise<void>((resolve) => {
    socket.on("data", (chunk: Uint8Array) => {
      session.receive(chunk);
      if (session.started) resolve();
    });
  });
  await started;
  const stream = session.request([[":path", "/x"]], new Uint8Array(64 * 1024 * 1024));
  await assert.rejects(
    (async () => {
      for await (const _ of stream) { /* nothing comes */ }
    })(),
    /does not read what we send/,
  );
  // Not waiting for a 'finish' that never comes: the socket and its backlog are gone now.
  assert.equal(socket.destroyed, true);
  await closed;
  for (const peer of accepted) peer.destroy();
  await new Promise((resolve) => server.close(resolve));
});

Deno.test("socketIo: a socket ended towards a server that stopped reading is destroyed after the grace", async () => {
  // Below the session's backlog cap nothing gives up: only the close timer ends this socket.
  const accepted: Socket[] = [];
  const server = createServer({ pauseOnConnect: true }, (peer) => void accepted.push(peer));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  const socket = connect(port, "127.0.0.1");
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await new Promise((resolve) => socket.once("connect", resolve));
    const closed = new Promise((resolve) => socket.once("close", resolve));
    const io = socketIo(socket);
    // 32 MiB: the loopback buffers of a peer that never reads take a few MiB.
    for (let i = 0; i < 64; i++) io.write(new Uint8Array(512 * 1024));
    assert.ok(io.backlog() > 0, "the kernel took all of it: nothing is left unsent");
    io.close(true);
    const outcome = await Promise.race([
      closed.then(() => "closed"),
      new Promise((resolve) => timer = setTimeout(() => resolve("still open"), 15_000)),
    ]);
    assert.equal(outcome, "closed");
  } finally {
    clearTimeout(timer);
    socket.destroy();
    for (const peer of accepted) peer.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
});
