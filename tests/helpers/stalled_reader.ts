/**
 * Hostile output readers for tests: clients that ask for a job's output and then never read it.
 *
 * - "http2": a raw `node:http2` client over mutual TLS that announces the largest flow-control
 *   windows HTTP/2 allows (2 GiB - 1, per stream and per connection), so the server's HTTP/2 layer
 *   may send everything at once: whatever the server queues is held on the server's side of TCP.
 * - "grpc": the product's own gRPC client opening GetJobsStream and never reading a message.
 *
 * Each reader runs as its own process (this file is also its program); once the request is out
 * it is stopped with SIGSTOP, so it provably reads nothing: the kernel buffers fill and the rest
 * stays in the server. `kill()` ends it with SIGKILL (its connections close).
 *
 * @module
 */
import http2 from "node:http2";
import { jobworker } from "../../proto/service.ts";
// The product's gRPC message framing (that module loads no node:http2 and node:tls only lazily).
import { frame } from "../../cli/transport/http2.ts";

export type StalledKind = "http2" | "grpc";
const MAX_WINDOW = 2 ** 31 - 1;

export interface StalledReader {
  readonly pid: number;
  /** SIGKILLs the reader and waits for it. */
  kill(): Promise<void>;
}

/**
 * Readers started at once: 50 Deno processes started together on 2 cores starved each other's TLS
 * handshakes past the worker's deadline (commit b97594e has the figures).
 */
const STARTING_AT_ONCE = 4;
let starting = 0;
const waitingToStart: (() => void)[] = [];

async function startSlot(): Promise<() => void> {
  while (starting >= STARTING_AT_ONCE) await new Promise<void>((r) => waitingToStart.push(r));
  starting++;
  return () => {
    starting--;
    waitingToStart.shift()?.();
  };
}

/** Starts a reader of `jobId`'s output; resolves once its request is out and it is stopped. */
export async function startStalledReader(
  kind: StalledKind,
  certDir: string,
  address: string,
  jobId: string,
  streams = 1,
): Promise<StalledReader> {
  const done = await startSlot();
  try {
    return await start(kind, certDir, address, jobId, streams);
  } finally {
    done();
  }
}

async function start(
  kind: StalledKind,
  certDir: string,
  address: string,
  jobId: string,
  streams: number,
): Promise<StalledReader> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--cached-only",
      // node_modules as `make deps` made it and the parent, loading the same packages, checked
      // it: with "auto" every start locks the directory to check it again, and readers started
      // together printed "Blocking waiting for file lock on node_modules directory".
      "--node-modules-dir=manual",
      new URL(import.meta.url).pathname,
      kind,
      certDir,
      address,
      jobId,
      String(streams),
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let said = "";
  while (!said.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the ${kind} stalled reader exited before sending its request`);
    said += value;
  }
  reader.releaseLock();
  child.stdout.cancel().catch(() => {});
  child.kill("SIGSTOP");
  return {
    pid: child.pid,
    async kill() {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await child.status;
    },
  };
}

function grpcRequest(jobId: string): Uint8Array {
  return frame(jobworker.GetJobsStreamReq.encode({ id: jobId }).finish());
}

/** A GetJobsStream request for `jobId` sent on `session` as a raw HTTP/2 stream (errors ignored). */
export function requestJobsStream(
  session: http2.ClientHttp2Session,
  jobId: string,
): http2.ClientHttp2Stream {
  const stream = session.request({
    ":method": "POST",
    ":path": "/jobworker.JobService/GetJobsStream",
    "content-type": "application/grpc",
    "te": "trailers",
  });
  stream.on("error", () => {});
  stream.end(grpcRequest(jobId));
  return stream;
}

async function runHttp2(certDir: string, address: string, jobId: string, streams: number) {
  const read = (f: string) => Deno.readTextFileSync(`${certDir}/${f}`);
  const session = http2.connect(`https://${address}`, {
    ca: read("ca-cert.pem"),
    cert: read("viewer-client-cert.pem"),
    key: read("viewer-client-key.pem"),
    servername: "localhost",
    settings: { initialWindowSize: MAX_WINDOW },
  });
  session.on("error", () => {});
  // Streams are opened once the worker's SETTINGS are in: then the worker has finished the TLS
  // handshake too (it sends them from its session, made after the handshake). The client's side
  // of a TLS 1.3 handshake ends first: a request sent at 'connect' may meet a connection the
  // worker then closes in its handshake, and Deno's client reports that as the stream closing
  // with NGHTTP2_CANCEL, no response and no error, which says nothing of why.
  await new Promise<void>((resolve, reject) => {
    session.once("remoteSettings", () => resolve());
    session.once("error", reject);
    session.once("close", () =>
      reject(
        new Error(
          "the worker closed the connection before its HTTP/2 SETTINGS (in the TLS handshake; " +
            "the worker's log says why)",
        ),
      ));
  });
  session.once("close", () => console.error("stalled reader: the session closed"));
  session.setLocalWindowSize(MAX_WINDOW);
  const firstBytes: Promise<void>[] = [];
  for (let i = 0; i < streams; i++) {
    firstBytes.push(firstData(requestJobsStream(session, jobId), i));
  }
  // Output is flowing: from here on, nothing is read (the parent stops this process).
  await Promise.all(firstBytes);
}

/**
 * Resolves at the stream's first DATA frame; rejects, saying how the stream ended, if it closes
 * before one (otherwise this process would just end with nothing pending and no reason given).
 */
function firstData(stream: http2.ClientHttp2Stream, index: number): Promise<void> {
  let headers: http2.IncomingHttpHeaders = {};
  stream.once("response", (h) => headers = h);
  stream.once("trailers", (t) => headers = { ...headers, ...t });
  return new Promise((resolve, reject) => {
    stream.once("data", () => resolve());
    stream.once("close", () => {
      const said = ["grpc-status", "grpc-message", ":status"]
        .map((name) => `${name}=${JSON.stringify(headers[name])}`)
        .join(" ");
      reject(
        new Error(`stream ${index} closed before any data: rstCode=${stream.rstCode} ${said}`),
      );
    });
  });
}

async function runGrpc(certDir: string, address: string, jobId: string, streams: number) {
  const { clientFor } = await import("./clients.ts");
  const client = clientFor(certDir, address, "viewer");
  const firstChunks = Array.from({ length: streams }, async () => {
    const it = client.stream(jobId)[Symbol.asyncIterator]();
    await it.next(); // one message, then never another
  });
  await Promise.all(firstChunks);
}

if (import.meta.main) {
  const [kind, certDir, address, jobId, streams] = Deno.args as [
    StalledKind,
    string,
    string,
    string,
    string,
  ];
  const run = kind === "http2" ? runHttp2 : runGrpc;
  await run(certDir, address, jobId, Number(streams));
  console.log("reading nothing from now on");
  await new Promise(() => {}); // keep the connection open until killed
}
