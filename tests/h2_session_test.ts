/**
 * The command line's HTTP/2 client (cli/transport/h2/frames.ts, session.ts) against a scripted
 * server: the frames it writes are parsed back and checked, the server's frames are built here
 * byte by byte, so each rule of RFC 9113 that the client must keep, and each bound that protects
 * it from a hostile server, is exercised alone. The client against the real worker (nghttp2
 * through Deno's node:http2) is tests/h2_stream_test.ts and every CLI test.
 */
import assert from "node:assert/strict";
import {
  encodeFrame,
  ErrorCode,
  Flag,
  type Frame,
  framePayload,
  FrameReader,
  FrameType,
  H2ProtocolError,
  Setting,
} from "../cli/transport/h2/frames.ts";
import { encodeHeaders } from "../cli/transport/h2/hpack.ts";
import { H2Session, type H2Stream } from "../cli/transport/h2/session.ts";
import { frame, MessageReader } from "../cli/transport/http2.ts";
import { concatBytes } from "./helpers/process.ts";

const PREFACE = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const MiB = 1024 * 1024;

/** A scripted server: what the session wrote, parsed; what it is sent, built here. */
class Peer {
  written: Uint8Array[] = [];
  closed = false;
  /** Whether the session asked for what it wrote to be sent before the connection closes. */
  drained: boolean | undefined;
  backlog = 0;
  readonly session: H2Session;
  #reader = new FrameReader(2 ** 24 - 1);
  #preface = false;

  constructor(windowBytes = 8 * MiB, maxHeaderListSize = 64 * 1024) {
    this.session = new H2Session({
      write: (bytes) => void this.written.push(bytes),
      backlog: () => this.backlog,
      close: (drain) => {
        this.closed = true;
        this.drained = drain;
      },
    }, { windowBytes, maxHeaderListSize });
  }

  /** The frames the client wrote since the last call. */
  sent(): Frame[] {
    let bytes = concatBytes(this.written);
    this.written = [];
    if (!this.#preface) {
      assert.equal(new TextDecoder().decode(bytes.subarray(0, 24)), PREFACE);
      bytes = bytes.subarray(24);
      this.#preface = true;
    }
    return this.#reader.push(bytes);
  }

  send(type: number, flags: number, streamId: number, payload?: Uint8Array): void {
    this.session.receive(encodeFrame(type, flags, streamId, payload));
  }

  /** The server's SETTINGS (the first frame it must send). */
  settings(values: [number, number][] = []): void {
    const payload = new Uint8Array(6 * values.length);
    const view = new DataView(payload.buffer);
    values.forEach(([id, value], i) => {
      view.setUint16(6 * i, id);
      view.setUint32(6 * i + 2, value);
    });
    this.send(FrameType.SETTINGS, 0, 0, payload);
  }

  /** A started session with one call (stream 1) open. */
  static withCall(body = new Uint8Array([0, 0, 0, 0, 0])): { peer: Peer; stream: H2Stream } {
    const peer = new Peer();
    peer.settings();
    const stream = peer.session.request([[":method", "POST"], [":path", "/x"]], body);
    peer.sent();
    return { peer, stream };
  }
}

const u32 = (n: number) => {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n);
  return out;
};
const OK_HEADERS = encodeHeaders([[":status", "200"], ["content-type", "application/grpc"]]);
const OK_TRAILERS = encodeHeaders([["grpc-status", "0"]]);

async function drain(stream: H2Stream): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const part of stream) parts.push(part);
  return concatBytes(parts);
}

/** The GOAWAY the client sent last, or undefined. */
function goawayOf(frames: Frame[]): { last: number; code: number; debug: string } | undefined {
  const frame = frames.findLast((f) => f.type === FrameType.GOAWAY);
  if (!frame) return undefined;
  const view = new DataView(frame.payload.buffer, frame.payload.byteOffset);
  return {
    last: view.getUint32(0),
    code: view.getUint32(4),
    debug: new TextDecoder().decode(frame.payload.subarray(8)),
  };
}

Deno.test("frames: the same frames however the bytes are split; padding and priority removed", () => {
  const frames = [
    encodeFrame(FrameType.DATA, Flag.PADDED, 1, new Uint8Array([3, 7, 8, 9, 0, 0, 0])),
    encodeFrame(
      FrameType.HEADERS,
      Flag.PRIORITY | Flag.END_HEADERS,
      3,
      new Uint8Array([0, 0, 0, 1, 16, 42]),
    ),
    encodeFrame(
      FrameType.HEADERS,
      Flag.PADDED | Flag.PRIORITY,
      5,
      new Uint8Array([2, 0, 0, 0, 1, 16, 43, 0, 0]),
    ),
    encodeFrame(FrameType.PING, 0, 0, new Uint8Array(8)),
    encodeFrame(0xfa, 0, 0, new Uint8Array(0)),
  ];
  const bytes = concatBytes(frames);
  for (let chunk = 1; chunk <= bytes.length; chunk++) {
    const reader = new FrameReader();
    const got: Frame[] = [];
    for (let at = 0; at < bytes.length; at += chunk) {
      got.push(...reader.push(bytes.slice(at, at + chunk)));
    }
    assert.deepEqual(got.map((f) => [f.type, f.streamId]), [[0, 1], [1, 3], [1, 5], [6, 0], [
      0xfa,
      0,
    ]]);
    assert.deepEqual([...framePayload(got[0]!)], [7, 8, 9]);
    assert.deepEqual([...framePayload(got[1]!)], [42]);
    assert.deepEqual([...framePayload(got[2]!)], [43]);
  }
});

Deno.test("frames: an oversize frame is refused from its header; padding longer than the frame too", () => {
  const header = encodeFrame(FrameType.DATA, 0, 1, new Uint8Array(16_385)).subarray(0, 9);
  assert.throws(
    () => new FrameReader().push(header),
    (e: H2ProtocolError) => e.code === ErrorCode.FRAME_SIZE_ERROR && /16385/.test(e.message),
  );
  assert.equal(new FrameReader().push(encodeFrame(0, 0, 1, new Uint8Array(16_384))).length, 1);
  const [padded] = new FrameReader().push(encodeFrame(0, Flag.PADDED, 1, new Uint8Array([5, 1])));
  assert.throws(
    () => framePayload(padded!),
    (e: H2ProtocolError) => e.code === ErrorCode.PROTOCOL_ERROR,
  );
});

Deno.test("session: preface, SETTINGS (no push, 8 MiB window) and the connection window; SETTINGS acknowledged; PING answered; unknown frames ignored", () => {
  const peer = new Peer();
  const [settings, window] = peer.sent();
  assert.equal(settings!.type, FrameType.SETTINGS);
  const view = new DataView(settings!.payload.buffer, settings!.payload.byteOffset);
  const values = new Map<number, number>();
  for (let at = 0; at < settings!.payload.length; at += 6) {
    values.set(view.getUint16(at), view.getUint32(at + 2));
  }
  assert.equal(values.get(Setting.ENABLE_PUSH), 0);
  assert.equal(values.get(Setting.INITIAL_WINDOW_SIZE), 8 * MiB);
  assert.equal(values.get(Setting.MAX_HEADER_LIST_SIZE), 64 * 1024);
  assert.equal(window!.type, FrameType.WINDOW_UPDATE);
  assert.deepEqual([...window!.payload], [...u32(8 * MiB - 65_535)]);
  assert.equal(peer.session.started, false);
  peer.settings([[Setting.MAX_CONCURRENT_STREAMS, 100]]);
  assert.equal(peer.session.started, true);
  const [ack] = peer.sent();
  assert.deepEqual([ack!.type, ack!.flags, ack!.payload.length], [FrameType.SETTINGS, Flag.ACK, 0]);
  peer.send(0xfa, 0xff, 0, new Uint8Array(100)); // unknown type: ignored
  peer.send(FrameType.PING, 0, 0, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]));
  const [pong, ...rest] = peer.sent();
  assert.deepEqual([pong!.type, pong!.flags, [...pong!.payload]], [FrameType.PING, Flag.ACK, [
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
  ]]);
  assert.equal(rest.length, 0);
  assert.equal(peer.session.usable, true);
});

Deno.test("session: a request is HEADERS then DATA with END_STREAM; a response in HEADERS + CONTINUATION, padded DATA and trailers", async () => {
  const { peer, stream } = (() => {
    const peer = new Peer();
    peer.settings([[Setting.MAX_FRAME_SIZE, 16_384]]);
    peer.sent();
    const stream = peer.session.request(
      [[":method", "POST"], [":path", "/p"]],
      new Uint8Array([9, 9]),
    );
    return { peer, stream };
  })();
  const [headers, data] = peer.sent();
  assert.deepEqual([headers!.type, headers!.flags, headers!.streamId], [
    FrameType.HEADERS,
    Flag.END_HEADERS,
    1,
  ]);
  assert.deepEqual([data!.type, data!.flags, [...data!.payload]], [
    FrameType.DATA,
    Flag.END_STREAM,
    [9, 9],
  ]);
  const split = 3;
  peer.send(
    FrameType.HEADERS,
    Flag.PADDED,
    1,
    concatBytes([new Uint8Array([2]), OK_HEADERS.subarray(0, split), new Uint8Array(2)]),
  );
  peer.send(FrameType.CONTINUATION, Flag.END_HEADERS, 1, OK_HEADERS.subarray(split));
  peer.send(FrameType.DATA, Flag.PADDED, 1, new Uint8Array([4, 1, 2, 3, 0, 0, 0, 0]));
  peer.send(FrameType.DATA, 0, 1, new Uint8Array([4, 5]));
  peer.send(FrameType.HEADERS, Flag.END_HEADERS | Flag.END_STREAM, 1, OK_TRAILERS);
  assert.deepEqual([...await drain(stream)], [1, 2, 3, 4, 5]);
  assert.deepEqual(stream.headers, { ":status": "200", "content-type": "application/grpc" });
  assert.deepEqual(stream.trailers, { "grpc-status": "0" });
  assert.equal(stream.rstCode, undefined);
  // The next call gets the next odd stream id.
  assert.equal(peer.session.request([[":path", "/q"]], new Uint8Array(0)).id, 3);
});

Deno.test("session: a frame inside a header block is a connection error: GOAWAY PROTOCOL_ERROR, the call fails saying why", async () => {
  const { peer, stream } = Peer.withCall();
  peer.session.request([[":path", "/y"]], new Uint8Array(0)); // stream 3
  peer.send(FrameType.HEADERS, 0, 1, OK_HEADERS.subarray(0, 2)); // no END_HEADERS
  peer.send(FrameType.PING, 0, 0, new Uint8Array(8));
  const goaway = goawayOf(peer.sent());
  assert.equal(goaway?.code, ErrorCode.PROTOCOL_ERROR);
  // Its last stream id names the server-opened streams we processed: none (push is disabled),
  // not our own last stream.
  assert.equal(goaway?.last, 0);
  assert.equal(peer.closed, true);
  await assert.rejects(
    drain(stream),
    /HTTP\/2 protocol error from the server: .*inside a header block/,
  );
  assert.throws(() => peer.session.request([[":path", "/x"]], new Uint8Array(0)), /protocol error/);
});

Deno.test("session: flow control: the window is given back as the consumer reads; DATA beyond it is FLOW_CONTROL_ERROR", async () => {
  const { peer, stream } = Peer.withCall();
  peer.send(FrameType.HEADERS, Flag.END_HEADERS, 1, OK_HEADERS);
  const frame = new Uint8Array(16_384);
  // Fill the whole 8 MiB window without reading: held, no WINDOW_UPDATE yet.
  for (let sent = 0; sent < 8 * MiB; sent += frame.length) peer.send(FrameType.DATA, 0, 1, frame);
  assert.deepEqual(peer.sent().filter((f) => f.type === FrameType.WINDOW_UPDATE), []);
  // Reading gives it back, in batches, for the stream and for the connection.
  const iterator = stream[Symbol.asyncIterator]();
  for (let read = 0; read < 4 * MiB; read += frame.length) await iterator.next();
  const updates = peer.sent().filter((f) => f.type === FrameType.WINDOW_UPDATE);
  const credit = (id: number) =>
    updates.filter((f) => f.streamId === id).reduce(
      (sum, f) => sum + new DataView(f.payload.buffer, f.payload.byteOffset).getUint32(0),
      0,
    );
  assert.equal(credit(1), 4 * MiB);
  assert.equal(credit(0), 4 * MiB);
  // The server may now send 4 MiB more, and not one byte beyond.
  for (let sent = 0; sent < 4 * MiB; sent += frame.length) peer.send(FrameType.DATA, 0, 1, frame);
  assert.equal(peer.closed, false);
  peer.send(FrameType.DATA, 0, 1, new Uint8Array(1));
  const goaway = goawayOf(peer.sent());
  assert.equal(goaway?.code, ErrorCode.FLOW_CONTROL_ERROR);
  assert.match(goaway!.debug, /window/);
  await assert.rejects(async () => {
    for (;;) if ((await iterator.next()).done) break;
  }, /beyond the connection window/);
});

Deno.test("session: a call cancelled with unread data gives that data's window back to the connection", async () => {
  const { peer, stream } = Peer.withCall();
  peer.send(FrameType.HEADERS, Flag.END_HEADERS, 1, OK_HEADERS);
  const frame = new Uint8Array(16_384);
  for (let sent = 0; sent < 8 * MiB; sent += frame.length) peer.send(FrameType.DATA, 0, 1, frame);
  stream.close();
  const sent = peer.sent();
  assert.ok(sent.some((f) => f.type === FrameType.RST_STREAM && f.streamId === 1));
  const credit = sent.filter((f) => f.type === FrameType.WINDOW_UPDATE && f.streamId === 0)
    .reduce((sum, f) => sum + new DataView(f.payload.buffer, f.payload.byteOffset).getUint32(0), 0);
  assert.equal(credit, 8 * MiB);
  // The next call on the same connection can receive a whole window again.
  const next = peer.session.request([[":path", "/next"]], new Uint8Array(0));
  peer.send(FrameType.HEADERS, Flag.END_HEADERS, 3, OK_HEADERS);
  for (let sent = 0; sent < 8 * MiB; sent += frame.length) peer.send(FrameType.DATA, 0, 3, frame);
  peer.send(FrameType.HEADERS, Flag.END_HEADERS | Flag.END_STREAM, 3, OK_TRAILERS);
  assert.equal(peer.closed, false);
  assert.equal((await drain(next)).length, 8 * MiB);
  // A call the server has ended, left unread by its consumer: its window comes back on close.
  const third = peer.session.request([[":path", "/third"]], new Uint8Array(0));
  peer.send(FrameType.HEADERS, Flag.END_HEADERS, 5, OK_HEADERS);
  for (let sent = 0; sent < 8 * MiB; sent += frame.length) peer.send(FrameType.DATA, 0, 5, frame);
  peer.send(FrameType.HEADERS, Flag.END_HEADERS | Flag.END_STREAM, 5, OK_TRAILERS);
  peer.sent();
  third.close();
  const back = peer.sent().filter((f) => f.type === FrameType.WINDOW_UPDATE && f.streamId === 0)
    .reduce((sum, f) => sum + new DataView(f.payload.buffer, f.payload.byteOffset).getUint32(0), 0);
  assert.equal(back, 8 * MiB);
});

Deno.test("session: a request body larger than the server's window waits for its WINDOW_UPDATE", () => {
  const peer = new Peer();
  peer.settings([[Setting.INITIAL_WINDOW_SIZE, 10]]);
  peer.sent();
  const body = Uint8Array.from({ length: 25 }, (_, i) => i);
  peer.session.request([[":path", "/big"]], body);
  const data = () => peer.sent().filter((f) => f.type === FrameType.DATA);
  const first = data();
  assert.deepEqual(first.map((f) => [f.payload.length, f.flags]), [[10, 0]]);
  peer.send(FrameType.WINDOW_UPDATE, 0, 1, u32(10));
  assert.deepEqual(data().map((f) => [f.payload.length, f.flags]), [[10, 0]]);
  // A SETTINGS raising the initial window applies to the open stream too.
  peer.settings([[Setting.INITIAL_WINDOW_SIZE, 1000]]);
  const last = data();
  assert.deepEqual(last.map((f) => [f.payload.length, f.flags]), [[5, Flag.END_STREAM]]);
  assert.deepEqual([...concatBytes([first[0]!.payload, last[0]!.payload])].length, 15);
});

Deno.test("session: GOAWAY refuses the streams it did not process (retryable) and new calls; RST_STREAM ends a call with its code", async () => {
  const peer = new Peer();
  peer.settings();
  const one = peer.session.request([[":path", "/1"]], new Uint8Array(0));
  const three = peer.session.request([[":path", "/3"]], new Uint8Array(0));
  const five = peer.session.request([[":path", "/5"]], new Uint8Array(0));
  peer.send(FrameType.RST_STREAM, 0, 5, u32(ErrorCode.ENHANCE_YOUR_CALM));
  assert.equal(five.rstCode, ErrorCode.ENHANCE_YOUR_CALM);
  await drain(five);
  peer.send(FrameType.GOAWAY, 0, 0, concatBytes([u32(1), u32(ErrorCode.NO_ERROR)]));
  assert.equal(peer.session.usable, false);
  assert.equal(three.rstCode, ErrorCode.REFUSED_STREAM);
  assert.equal(one.rstCode, undefined);
  assert.throws(() => peer.session.request([[":path", "/7"]], new Uint8Array(0)));
  // Stream 1 still completes; then the connection ends.
  peer.send(
    FrameType.HEADERS,
    Flag.END_HEADERS | Flag.END_STREAM,
    1,
    encodeHeaders([[":status", "200"], ["grpc-status", "0"]]),
  );
  await drain(one);
  assert.equal(one.headers?.["grpc-status"], "0");
  assert.equal(peer.closed, true);
});

Deno.test("session: what a hostile server cannot do: grow a header block without end, push, skip SETTINGS, leave our writes unread", async () => {
  // A header block is refused as soon as it passes the limit, not when it ends.
  {
    const { peer, stream } = (() => {
      const peer = new Peer(8 * MiB, 4096);
      peer.settings();
      const stream = peer.session.request([[":path", "/x"]], new Uint8Array(0));
      peer.sent();
      return { peer, stream };
    })();
    peer.send(FrameType.HEADERS, 0, 1, new Uint8Array(4000));
    assert.equal(peer.closed, false);
    peer.send(FrameType.CONTINUATION, 0, 1, new Uint8Array(100));
    assert.equal(goawayOf(peer.sent())?.code, ErrorCode.ENHANCE_YOUR_CALM);
    await assert.rejects(drain(stream), /header block larger than the 4096 bytes/);
  }
  {
    const { peer, stream } = Peer.withCall();
    peer.send(FrameType.PUSH_PROMISE, Flag.END_HEADERS, 1, concatBytes([u32(2), OK_HEADERS]));
    assert.equal(goawayOf(peer.sent())?.code, ErrorCode.PROTOCOL_ERROR);
    await assert.rejects(drain(stream), /PUSH_PROMISE/);
  }
  {
    const peer = new Peer();
    peer.send(FrameType.PING, 0, 0, new Uint8Array(8));
    assert.equal(goawayOf(peer.sent())?.code, ErrorCode.PROTOCOL_ERROR);
    assert.match(String(peer.session.error), /first frame is not SETTINGS/);
  }
  {
    const { peer, stream } = Peer.withCall();
    peer.send(FrameType.DATA, 0, 3, new Uint8Array(1)); // stream 3 was never opened
    assert.equal(goawayOf(peer.sent())?.code, ErrorCode.PROTOCOL_ERROR);
    await assert.rejects(drain(stream), /idle stream 3/);
  }
  {
    // PINGs while we cannot send (the server does not read): the answers are capped.
    const { peer, stream } = Peer.withCall();
    peer.backlog = 4 * MiB + 1;
    peer.send(FrameType.PING, 0, 0, new Uint8Array(8));
    assert.equal(peer.closed, true);
    assert.equal(peer.drained, false); // closed at once: waiting for it to drain would keep it
    await assert.rejects(drain(stream), /does not read what we send/);
  }
});

Deno.test("session: a CONTINUATION flood is refused by count: empty ones without END_HEADERS at once, small ones past 32 frames", async () => {
  {
    const { peer, stream } = Peer.withCall();
    peer.send(FrameType.HEADERS, 0, 1, OK_HEADERS.subarray(0, 1));
    peer.send(FrameType.CONTINUATION, 0, 1, new Uint8Array(0));
    assert.equal(goawayOf(peer.sent())?.code, ErrorCode.PROTOCOL_ERROR);
    await assert.rejects(drain(stream), /empty CONTINUATION without END_HEADERS/);
  }
  {
    // A block may come in small pieces, up to 32 frames in all.
    const { peer, stream } = Peer.withCall();
    const block = encodeHeaders([[":status", "200"], ["x-pad", "p".repeat(40)]]);
    assert.ok(block.length > 32);
    peer.send(FrameType.HEADERS, 0, 1, block.subarray(0, 1));
    for (let at = 1; at < 31; at++) {
      peer.send(FrameType.CONTINUATION, 0, 1, block.subarray(at, at + 1));
    }
    peer.send(FrameType.CONTINUATION, Flag.END_HEADERS, 1, block.subarray(31));
    assert.equal(peer.closed, false);
    assert.equal(stream.headers?.["x-pad"], "p".repeat(40));
  }
  {
    const { peer, stream } = Peer.withCall();
    peer.send(FrameType.HEADERS, 0, 1, OK_HEADERS.subarray(0, 1));
    for (let i = 0; i < 31; i++) peer.send(FrameType.CONTINUATION, 0, 1, new Uint8Array(1));
    assert.equal(peer.closed, false);
    peer.send(FrameType.CONTINUATION, 0, 1, new Uint8Array(1));
    assert.equal(goawayOf(peer.sent())?.code, ErrorCode.ENHANCE_YOUR_CALM);
    await assert.rejects(drain(stream), /header block in more than 32 frames/);
  }
});

Deno.test("session: a PRIORITY frame of other than 5 bytes is a FRAME_SIZE_ERROR", async () => {
  const { peer, stream } = Peer.withCall();
  peer.send(FrameType.PRIORITY, 0, 1, new Uint8Array(5));
  assert.equal(peer.closed, false);
  peer.send(FrameType.PRIORITY, 0, 1, new Uint8Array(4));
  assert.equal(goawayOf(peer.sent())?.code, ErrorCode.FRAME_SIZE_ERROR);
  await assert.rejects(drain(stream), /PRIORITY of 4 bytes/);
});

Deno.test("session: a SETTINGS lowering the initial window below what was sent: nothing more is sent until the window is positive again", () => {
  const peer = new Peer();
  peer.settings([[Setting.INITIAL_WINDOW_SIZE, 10]]);
  peer.sent();
  peer.session.request([[":path", "/big"]], new Uint8Array(25));
  const data = () => peer.sent().filter((f) => f.type === FrameType.DATA);
  assert.deepEqual(data().map((f) => f.payload.length), [10]);
  peer.settings([[Setting.INITIAL_WINDOW_SIZE, 0]]); // the stream's window is now -10
  peer.send(FrameType.WINDOW_UPDATE, 0, 1, u32(10)); // back to 0
  assert.deepEqual(data(), []);
  peer.send(FrameType.WINDOW_UPDATE, 0, 1, u32(5));
  assert.deepEqual(data().map((f) => [f.payload.length, f.flags]), [[5, 0]]);
  peer.send(FrameType.WINDOW_UPDATE, 0, 1, u32(100));
  assert.deepEqual(data().map((f) => [f.payload.length, f.flags]), [[10, Flag.END_STREAM]]);
  // The connection window was only spent by what was sent (10 + 5 + 10 of 65,535).
  const second = peer.session.request([[":path", "/more"]], new Uint8Array(65_535));
  peer.send(FrameType.WINDOW_UPDATE, 0, 3, u32(70_000));
  assert.equal(data().reduce((sum, f) => sum + f.payload.length, 0), 65_535 - 25);
  assert.equal(second.closed, false);
});

Deno.test("session: many tiny DATA frames to a paused reader hold their bytes plus a block, not a buffer or an object each", async () => {
  const { peer, stream } = Peer.withCall();
  peer.send(FrameType.HEADERS, Flag.END_HEADERS, 1, OK_HEADERS);
  // 256 Ki DATA frames of 1 byte, arriving in socket chunks of 64 KiB (each its own buffer).
  const frames = 256 * 1024;
  const one = encodeFrame(FrameType.DATA, 0, 1, new Uint8Array([7]));
  const wire = new Uint8Array(frames * one.length);
  for (let i = 0; i < frames; i++) wire.set(one, i * one.length);
  for (let at = 0; at < wire.length; at += 64 * 1024) {
    peer.session.receive(wire.slice(at, at + 64 * 1024));
  }
  assert.equal(peer.closed, false);
  const held = stream.held();
  // What is held is the unread bytes plus at most one block being filled (16 KiB), in chunks of
  // 16 KiB: not the 2.5 MiB of socket chunks, nor an entry per frame.
  assert.ok(held.bytes <= frames + 16 * 1024, `held ${held.bytes} bytes for ${frames} unread`);
  assert.ok(held.chunks <= frames / (16 * 1024) + 1, `held ${held.chunks} chunks`);
  // And the bytes are all there, in order, with mixed sizes in between.
  peer.send(FrameType.DATA, 0, 1, Uint8Array.from({ length: 10_000 }, (_, i) => i % 251));
  peer.send(FrameType.HEADERS, Flag.END_HEADERS | Flag.END_STREAM, 1, OK_TRAILERS);
  const body = await drain(stream);
  assert.equal(body.length, frames + 10_000);
  assert.ok(body.subarray(0, frames).every((b) => b === 7));
  assert.ok(body.subarray(frames).every((b, i) => b === i % 251));
});

Deno.test("session: DATA frames each alone in a large socket chunk keep views only within twice the unread bytes plus a slack", () => {
  const { peer, stream } = Peer.withCall();
  peer.send(FrameType.HEADERS, Flag.END_HEADERS, 1, OK_HEADERS);
  // 512 socket chunks of about 64 KiB, each a 4 KiB DATA frame and 60 KiB of frames of an unknown
  // type (ignored, and outside flow control): a view of each payload would keep 32 MiB for 2 MiB.
  const filler = encodeFrame(0xfa, 0, 0, new Uint8Array(15_000));
  const payload = new Uint8Array(4096).fill(3);
  for (let i = 0; i < 512; i++) {
    peer.session.receive(
      concatBytes([encodeFrame(FrameType.DATA, 0, 1, payload), filler, filler, filler, filler]),
    );
  }
  assert.equal(peer.closed, false);
  const unread = 512 * 4096;
  const held = stream.held();
  // Twice the unread bytes, the 256 KiB slack, one socket chunk beyond it, and one block.
  const bound = 2 * unread + 256 * 1024 + 64 * 1024 + 16 * 1024;
  assert.ok(held.bytes <= bound, `held ${held.bytes} bytes for ${unread} unread`);
});

Deno.test("session + MessageReader: a large message in DATA frames each alone in a large socket chunk, read promptly, holds the message, not the socket chunks", async () => {
  const { peer, stream } = Peer.withCall();
  peer.send(FrameType.HEADERS, Flag.END_HEADERS, 1, OK_HEADERS);
  // A 4 MiB message in 4 KiB DATA frames, each alone with 60 KiB of unknown-type frames in a
  // socket chunk of about 64 KiB: the stream pins nothing once a payload is read, but a reader
  // that kept the views until the message was whole would keep 64 MiB of socket chunks.
  const message = Uint8Array.from({ length: 4 * MiB }, (_, i) => (i * 7) % 253);
  const body = frame(message);
  const filler = encodeFrame(0xfa, 0, 0, new Uint8Array(15_000));
  const reader = new MessageReader();
  const chunks = stream[Symbol.asyncIterator]();
  const got: Uint8Array[] = [];
  const buffers = new Set<ArrayBufferLike>();
  let most = 0;
  for (let at = 0; at < body.length; at += 4096) {
    const data = encodeFrame(FrameType.DATA, 0, 1, body.subarray(at, at + 4096));
    const wire = concatBytes([data, filler, filler, filler, filler]);
    buffers.add(wire.buffer);
    peer.session.receive(wire);
    const next = await chunks.next(); // a prompt reader: each payload read as it comes
    assert.equal(next.done, false);
    got.push(...reader.push(next.value as Uint8Array));
    most = Math.max(most, reader.held);
  }
  assert.equal(peer.closed, false);
  assert.equal(got.length, 1);
  assert.ok(got[0]!.every((b, i) => b === message[i]), "the message arrives whole, in order");
  // The message's own buffer and a prefix; never a socket chunk.
  assert.ok(most <= message.length + 64, `held ${most} bytes for a ${message.length}-byte message`);
  assert.ok(!buffers.has(got[0]!.buffer), "the message is not a view of a socket chunk");
});
