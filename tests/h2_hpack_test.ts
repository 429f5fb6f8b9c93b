/**
 * HPACK (cli/transport/h2/hpack.ts, huffman.ts) against RFC 7541 Appendix C: the request examples
 * without and with Huffman coding (C.3, C.4) and the response examples whose 256-byte dynamic
 * table evicts entries (C.5, C.6), each sequence decoded by one decoder, its table checked after
 * every block. Then what a hostile server could send: each must be a COMPRESSION_ERROR (or
 * ENHANCE_YOUR_CALM for size), never a crash or an unbounded allocation.
 */
import assert from "node:assert/strict";
import { ErrorCode, H2ProtocolError } from "../cli/transport/h2/frames.ts";
import {
  decodeInteger,
  encodeHeaders,
  encodeInteger,
  type HeaderField,
  HpackDecoder,
} from "../cli/transport/h2/hpack.ts";
import { huffmanDecode, LENGTHS } from "../cli/transport/h2/huffman.ts";

const hex = (s: string) => Uint8Array.from(s.match(/../g)!.map((b) => parseInt(b, 16)));

interface Example {
  input: string;
  output: HeaderField[];
  table: [string, string, number][];
}

const requests: HeaderField[][] = [
  [[":method", "GET"], [":scheme", "http"], [":path", "/"], [":authority", "www.example.com"]],
  [[":method", "GET"], [":scheme", "http"], [":path", "/"], [":authority", "www.example.com"], [
    "cache-control",
    "no-cache",
  ]],
  [[":method", "GET"], [":scheme", "https"], [":path", "/index.html"], [
    ":authority",
    "www.example.com",
  ], ["custom-key", "custom-value"]],
];
const requestTables: [string, string, number][][] = [
  [[":authority", "www.example.com", 57]],
  [["cache-control", "no-cache", 53], [":authority", "www.example.com", 57]],
  [["custom-key", "custom-value", 54], ["cache-control", "no-cache", 53], [
    ":authority",
    "www.example.com",
    57,
  ]],
];
const date1 = "Mon, 21 Oct 2013 20:13:21 GMT";
const date2 = "Mon, 21 Oct 2013 20:13:22 GMT";
const location = "https://www.example.com";
const cookie = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
const responses: HeaderField[][] = [
  [[":status", "302"], ["cache-control", "private"], ["date", date1], ["location", location]],
  [[":status", "307"], ["cache-control", "private"], ["date", date1], ["location", location]],
  [[":status", "200"], ["cache-control", "private"], ["date", date2], ["location", location], [
    "content-encoding",
    "gzip",
  ], ["set-cookie", cookie]],
];
const responseTables: [string, string, number][][] = [
  [["location", location, 63], ["date", date1, 65], ["cache-control", "private", 52], [
    ":status",
    "302",
    42,
  ]],
  [[":status", "307", 42], ["location", location, 63], ["date", date1, 65], [
    "cache-control",
    "private",
    52,
  ]],
  [["set-cookie", cookie, 98], ["content-encoding", "gzip", 52], ["date", date2, 65]],
];

const sequences: Record<string, { tableSize: number; examples: Example[] }> = {
  "C.3 requests without Huffman coding": {
    tableSize: 4096,
    examples: [
      "828684410f7777772e6578616d706c652e636f6d",
      "828684be58086e6f2d6361636865",
      "828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565",
    ].map((input, i) => ({ input, output: requests[i]!, table: requestTables[i]! })),
  },
  "C.4 requests with Huffman coding": {
    tableSize: 4096,
    examples: [
      "828684418cf1e3c2e5f23a6ba0ab90f4ff",
      "828684be5886a8eb10649cbf",
      "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf",
    ].map((input, i) => ({ input, output: requests[i]!, table: requestTables[i]! })),
  },
  "C.5 responses without Huffman coding (evictions)": {
    tableSize: 256,
    examples: [
      "4803333032580770726976617465611d4d6f6e2c203231204f637420323031332032303a31333a323120474d546e1768747470733a2f2f7777772e6578616d706c652e636f6d",
      "4803333037c1c0bf",
      "88c1611d4d6f6e2c203231204f637420323031332032303a31333a323220474d54c05a04677a69707738666f6f3d4153444a4b48514b425a584f5157454f50495541585157454f49553b206d61782d6167653d333630303b2076657273696f6e3d31",
    ].map((input, i) => ({ input, output: responses[i]!, table: responseTables[i]! })),
  },
  "C.6 responses with Huffman coding (evictions)": {
    tableSize: 256,
    examples: [
      "488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c78f0b97c8e9ae82ae43d3",
      "4883640effc1c0bf",
      "88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007",
    ].map((input, i) => ({ input, output: responses[i]!, table: responseTables[i]! })),
  },
};

for (const [name, { tableSize, examples }] of Object.entries(sequences)) {
  Deno.test(`hpack: RFC 7541 ${name}`, () => {
    const decoder = new HpackDecoder(tableSize);
    for (const [i, example] of examples.entries()) {
      assert.deepEqual(decoder.decode(hex(example.input)), example.output, `block ${i + 1}`);
      assert.deepEqual(decoder.dynamicTable, example.table, `table after block ${i + 1}`);
      const size = example.table.reduce((sum, [, , s]) => sum + s, 0);
      assert.equal(decoder.tableSize, size);
    }
  });
}

Deno.test("hpack: integers of RFC 7541 C.1, both ways", () => {
  const cases: [number, number, number[]][] = [[10, 5, [0x0a]], [1337, 5, [0x1f, 0x9a, 0x0a]], [
    42,
    8,
    [0x2a],
  ]];
  for (const [value, prefix, bytes] of cases) {
    const out: number[] = [];
    encodeInteger(value, prefix, 0, out);
    assert.deepEqual(out, bytes);
    assert.deepEqual(decodeInteger(Uint8Array.from(bytes), 0, prefix), [value, bytes.length]);
  }
});

Deno.test("hpack: what we encode decodes to the same fields and leaves the table empty", () => {
  const fields: HeaderField[] = [
    [":method", "POST"],
    [":path", "/jobworker.v1.JobService/GetJobs"],
    ["grpc-timeout", "30000m"],
    ["x-long", "v".repeat(300)],
  ];
  const decoder = new HpackDecoder();
  assert.deepEqual(decoder.decode(encodeHeaders(fields)), fields);
  assert.equal(decoder.tableSize, 0);
});

function rejects(block: Uint8Array | (() => unknown), code: number, pattern: RegExp) {
  const run = typeof block === "function" ? block : () => new HpackDecoder().decode(block);
  assert.throws(run, (e: unknown) => {
    assert.ok(e instanceof H2ProtocolError, `not a protocol error: ${e}`);
    assert.equal(e.code, code);
    assert.match(e.message, pattern);
    return true;
  });
}

Deno.test("hpack: hostile header blocks are refused with a reason", () => {
  const C = ErrorCode.COMPRESSION_ERROR;
  rejects(hex("80"), C, /index 0/);
  rejects(hex("be"), C, /index 62 beyond/); // dynamic table empty
  rejects(hex("ff80808080808001"), C, /too large/); // an integer without end in sight
  // Zero-valued continuation bytes without end: refused before the shift makes the value NaN
  // (a table size update to NaN would have disabled eviction).
  rejects(hex("3f" + "80".repeat(150) + "00"), C, /too many continuation bytes/);
  rejects(hex("3f" + "80".repeat(5) + "00"), C, /too many continuation bytes/);
  assert.deepEqual(decodeInteger(hex("1f8080808000"), 0, 5), [31, 6]); // 5 continuations: fine
  rejects(hex("ff"), C, /ends inside an integer/);
  rejects(hex("0005616263"), C, /longer than its header block/); // name says 5, 3 follow
  rejects(hex("3fe21f"), C, /update to 4097, above the 4096 allowed/);
  rejects(hex("823f"), C, /ends inside/);
  rejects(hex("8220"), C, /after a header field/); // size update after a field
  // Huffman: 0x00 is 8 zero bits, not all-ones padding; a full EOS (30 ones) is refused.
  rejects(() => huffmanDecode(hex("00")), C, /bad padding/);
  rejects(() => huffmanDecode(hex("fffffffc")), C, /EOS/);
  rejects(() => huffmanDecode(hex("ffff")), C, /bad padding/); // 16 bits of padding
  // A header list beyond the limit, each field small: refused as it grows, not after.
  const many = encodeHeaders(Array.from({ length: 100 }, (_, i) => [`n${i}`, "v".repeat(100)]));
  rejects(
    () => new HpackDecoder(4096, 4096).decode(many),
    ErrorCode.ENHANCE_YOUR_CALM,
    /header list larger/,
  );
});

Deno.test("hpack: an entry larger than the table empties it and is not added", () => {
  const decoder = new HpackDecoder(100);
  decoder.decode(encodeIndexed("abc", "x"));
  assert.equal(decoder.dynamicTable.length, 1);
  decoder.decode(encodeIndexed("big", "y".repeat(100)));
  assert.deepEqual(decoder.dynamicTable, []);
  assert.equal(decoder.tableSize, 0);
});

/** A literal with incremental indexing, new name, no Huffman (short strings only). */
function encodeIndexed(name: string, value: string): Uint8Array {
  const out: number[] = [0x40];
  for (const text of [name, value]) {
    encodeInteger(text.length, 7, 0, out);
    for (const c of text) out.push(c.charCodeAt(0));
  }
  return Uint8Array.from(out);
}

Deno.test("Huffman: every byte value decodes, with codes built as RFC 7541 defines them", () => {
  // The canonical code, assigned symbol after symbol by (length, value), each code one more than
  // the last, shifted left as the length grows; a string of all 256 byte values in reverse.
  const order = [...Array(256).keys()]
    .sort((a, b) => LENGTHS.charCodeAt(a) - LENGTHS.charCodeAt(b) || a - b);
  const codes = new Map<number, { code: bigint; length: number }>();
  let code = -1n;
  let previous = 0;
  for (const symbol of order) {
    const length = LENGTHS.charCodeAt(symbol) - 48;
    code = (code + 1n) << BigInt(length - previous);
    previous = length;
    codes.set(symbol, { code, length });
  }
  const text = [...Array(256).keys()].reverse();
  let bits = 0n;
  let count = 0;
  for (const symbol of text) {
    const { code, length } = codes.get(symbol)!;
    bits = (bits << BigInt(length)) | code;
    count += length;
  }
  const padding = (8 - (count % 8)) % 8;
  bits = (bits << BigInt(padding)) | ((1n << BigInt(padding)) - 1n);
  const bytes = new Uint8Array((count + padding) / 8);
  for (let i = bytes.length - 1; i >= 0; i--, bits >>= 8n) bytes[i] = Number(bits & 0xffn);
  assert.deepEqual([...huffmanDecode(bytes)], text);
  // Spot checks against Appendix B's table: '0' is 00000, 'a' 00011, 0xff 11111111111111111111101110.
  assert.deepEqual(codes.get(48), { code: 0n, length: 5 });
  assert.deepEqual(codes.get(97), { code: 0b00011n, length: 5 });
  assert.deepEqual(codes.get(255), { code: 0x3ffffeen, length: 26 });
});
