/**
 * The pre-encoded DataChunk (proto/data_chunk.ts) decodes, through the generated decoder, to the
 * same message protobufjs would have encoded, for small and large offsets and payload lengths.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { EncodedDataChunk, jobworker } from "../proto/service.ts";

const cases: [number, number, jobworker.OutputStream][] = [
  [0, 0, jobworker.OutputStream.STDOUT],
  [1, 127, jobworker.OutputStream.STDERR],
  [128, 128, jobworker.OutputStream.STDOUT],
  [65_536, 300, jobworker.OutputStream.STDERR],
  [2 ** 32 + 5, 16_384, jobworker.OutputStream.STDOUT],
  [Number.MAX_SAFE_INTEGER, 131_072, jobworker.OutputStream.STDERR],
];

Deno.test("an EncodedDataChunk decodes to its offset, stream and payload", () => {
  for (const [offset, length, stream] of cases) {
    const chunk = EncodedDataChunk.allocate(length, offset, stream);
    for (let i = 0; i < length; i++) chunk.payload[i] = (i * 7 + offset) & 0xff;
    const decoded = jobworker.DataChunk.decode(chunk.wire);
    assert.equal(decoded.offset, offset);
    assert.equal(decoded.stream, stream);
    assert.deepEqual(new Uint8Array(decoded.payload), new Uint8Array(chunk.payload));
    assert.equal(chunk.payload.length, length);
  }
});

Deno.test("a shortened EncodedDataChunk keeps its first bytes and re-encodes the length", () => {
  const chunk = EncodedDataChunk.allocate(1000, 42, jobworker.OutputStream.STDOUT);
  chunk.payload.fill(9);
  const short = chunk.shortened(300);
  const decoded = jobworker.DataChunk.decode(short.wire);
  assert.equal(decoded.payload.length, 300);
  assert.equal(decoded.offset, 42);
  assert.ok(decoded.payload.every((b) => b === 9));
});

Deno.test("the GetJobsStream serializer sends an EncodedDataChunk as it is", async () => {
  const { jobServiceDefinition } = await import("../proto/service.ts");
  const chunk = EncodedDataChunk.allocate(10, 7, jobworker.OutputStream.STDERR);
  chunk.payload.fill(1);
  const serialized = jobServiceDefinition.GetJobsStream.responseSerialize(chunk);
  assert.equal(serialized, chunk.wire);
  const plain = jobworker.DataChunk.create({ payload: chunk.payload, offset: 7, stream: 2 });
  assert.deepEqual(
    jobworker.DataChunk.decode(jobServiceDefinition.GetJobsStream.responseSerialize(plain)),
    jobworker.DataChunk.decode(serialized),
  );
});

Deno.test("an EncodedDataChunk's framed form is gRPC's uncompressed prefix, then its wire bytes", () => {
  for (const [offset, length, stream] of cases) {
    const chunk = EncodedDataChunk.allocate(length, offset, stream);
    const { framed, wire } = chunk;
    assert.equal(framed.length, wire.length + 5);
    assert.equal(framed[0], 0);
    assert.equal(framed.readUInt32BE(1), wire.length);
    assert.equal(framed.buffer, wire.buffer);
    assert.equal(framed.byteOffset + 5, wire.byteOffset);
  }
});

Deno.test("an EncodedDataChunk is built in a backing buffer large enough for it, else anew", () => {
  const backing = Buffer.alloc(EncodedDataChunk.capacityFor(1000));
  for (const [offset, length, stream] of [...cases, [7, 1000, 1] as const]) {
    if (length > 1000) continue;
    const chunk = EncodedDataChunk.allocate(length, offset, stream, backing);
    assert.equal(chunk.framed.buffer, backing.buffer);
    assert.equal(chunk.framed.byteOffset, backing.byteOffset);
    chunk.payload.fill(3);
    const decoded = jobworker.DataChunk.decode(chunk.wire);
    assert.equal(decoded.offset, offset);
    assert.equal(decoded.stream, stream);
    assert.equal(decoded.payload.length, length);
    assert.ok(decoded.payload.every((b) => b === 3));
  }
  const big = EncodedDataChunk.allocate(1100, Number.MAX_SAFE_INTEGER, 2, backing);
  assert.notEqual(big.framed.buffer, backing.buffer);
  assert.equal(jobworker.DataChunk.decode(big.wire).payload.length, 1100);
});
