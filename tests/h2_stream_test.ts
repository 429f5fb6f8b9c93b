/**
 * The command line's own HTTP/2 client (cli/transport/h2 under cli/transport/http2.ts) against a
 * real worker over mutual TLS: a job's output three times our 8 MiB flow-control window arrives
 * byte-exact while the job writes and again once it has ended, with a consumer that pauses (so
 * the windows fill and must be given back); unary calls share the connection; a cancelled
 * stream leaves the connection usable; a TLS server that does not choose h2 is refused (and sent
 * nothing); after a protocol error the socket is closed once our GOAWAY is out, not left
 * half-open. (Deadlines, dropped connections and TLS failures through this transport:
 * tests/cli_e2e_test.ts and tests/auth_test.ts, which run the command line.)
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { JobClient } from "../cli/client.ts";
import { Status } from "../cli/status.ts";
import { jobworker } from "../proto/service.ts";
import { makePki } from "./helpers/pki.ts";
import { concatBytes } from "./helpers/process.ts";
import { WorkerProcess } from "./helpers/worker.ts";

const MiB = 1024 * 1024;
const HANG_MS = Number(Deno.env.get("H2_TEST_HANG_MS") ?? 120_000);
const pki = await makePki();
const dataDir = await Deno.makeTempDir({ prefix: "jobworker-test-h2-" });
const worker = await WorkerProcess.start({ certDir: pki.dir }).catch(async (e) => {
  await pki.remove();
  throw e;
});
const read = (file: string) => Deno.readTextFileSync(`${pki.dir}/${file}`);
/** A client of the command line's transport (admin) for `server`. */
function http2Client(server: string, callTimeoutMs?: number): JobClient {
  return JobClient.connect({
    server,
    caPem: read("ca-cert.pem"),
    certPem: read("admin-client-cert.pem"),
    keyPem: read("admin-client-key.pem"),
    transport: "http2",
    ...(callTimeoutMs === undefined ? {} : { callTimeoutMs }),
  });
}
const client = http2Client(worker.address);

/** A mutual TLS 1.3 server's options with the worker's certificate (no ALPN). */
function serverTls() {
  return {
    key: read("server-key.pem"),
    cert: read("server-cert.pem"),
    ca: read("ca-cert.pem"),
    requestCert: true,
    minVersion: "TLSv1.3" as const,
  };
}

async function randomFile(size: number): Promise<{ path: string; sha: string }> {
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i += 65536) crypto.getRandomValues(data.subarray(i, i + 65536));
  const path = `${dataDir}/random`;
  await Deno.writeFile(path, data);
  return { path, sha: createHash("sha256").update(data).digest("hex") };
}

/** The output's length and sha256, read with a pause after the first chunk. */
async function digest(id: string, noFollow = false): Promise<{ bytes: number; sha: string }> {
  const hash = createHash("sha256");
  let bytes = 0;
  let paused = false;
  // A window never given back would stall the stream forever: fail instead (a hang guard only).
  const signal = AbortSignal.timeout(HANG_MS);
  for await (const chunk of client.stream(id, { noFollow, signal })) {
    hash.update(chunk.payload);
    bytes += chunk.payload.length;
    if (!paused) {
      paused = true;
      // Let the worker fill our windows (and its own buffers) before reading on.
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }
  return { bytes, sha: hash.digest("hex") };
}

Deno.test({
  name:
    "h2 client: 24 MiB of output (3 windows) byte-exact, live and ended; calls share the connection",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const size = 24 * MiB;
    const data = await randomFile(size);
    const job = await client.createJob({ command: "cat", args: [data.path] });
    const live = await digest(job.id);
    assert.deepEqual(live, { bytes: size, sha: data.sha });
    const ended = await digest(job.id, true);
    assert.deepEqual(ended, { bytes: size, sha: data.sha });
    const got = await client.getJob(job.id);
    assert.equal(got.status, jobworker.JobStatus.COMPLETED);
    assert.equal(Number(got.outputBytes), size);
    assert.ok((await client.listJobs()).jobs.some((j) => j.id === job.id));
  },
});

Deno.test({
  name:
    "h2 client: a stream stopped early leaves the connection usable; an unknown job is NOT_FOUND",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const job = await client.createJob({
      command: "sh",
      args: ["-c", "while :; do echo tick; sleep 0.01; done"],
    });
    try {
      const controller = new AbortController();
      let chunks = 0;
      await assert.rejects(async () => {
        for await (const _ of client.stream(job.id, { signal: controller.signal })) {
          if (++chunks === 3) controller.abort(new Error("enough"));
        }
      }, /enough/);
      for await (const _ of client.stream(job.id)) break; // stopped by the consumer
      assert.equal((await client.getJob(job.id)).status, jobworker.JobStatus.RUNNING);
      await assert.rejects(
        client.getJob("00000000-0000-4000-8000-000000000000"),
        (e: { code: number }) => e.code === Status.NOT_FOUND,
      );
    } finally {
      await client.stopJob(job.id, { force: true });
    }
  },
});

Deno.test({
  name: "h2 client: a TLS server that does not choose h2 by ALPN is refused, saying so",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const { createServer } = await import("node:tls");
    // Mutual TLS 1.3 with our own certificates, but no ALPN: the handshake succeeds.
    const sockets: { destroy(): void }[] = [];
    let received = 0;
    const server = createServer(serverTls(), (socket) => {
      sockets.push(socket);
      socket.on("data", (bytes: Uint8Array) => void (received += bytes.length));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as { port: number }).port;
    const other = http2Client(`127.0.0.1:${port}`, 5000);
    try {
      await assert.rejects(other.listJobs(), (e: { code: number; message: string }) => {
        assert.equal(e.code, Status.UNAVAILABLE, e.message);
        assert.match(e.message, /did not choose HTTP\/2 in TLS \(ALPN none\)/);
        return true;
      });
      // Nothing the client wrote (the preface, the request) reached the server it refused.
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.equal(received, 0);

      // Nor from a client closed during its handshake (its GOAWAY's drained close uncorks what it
      // wrote): a relay holds the server's answer back until the client has closed.
      const { createServer: createRelay, connect } = await import("node:net");
      let release = () => {};
      const held = new Promise<void>((resolve) => release = resolve);
      let relayed = () => {};
      const connected = new Promise<void>((resolve) => relayed = resolve);
      const relay = createRelay((inbound) => {
        const outbound = connect(port, "127.0.0.1");
        sockets.push(inbound, outbound);
        inbound.on("error", () => outbound.destroy()).pipe(outbound);
        outbound.on("error", () => inbound.destroy());
        held.then(() => outbound.pipe(inbound));
        relayed();
      });
      await new Promise<void>((resolve) => relay.listen(0, "127.0.0.1", resolve));
      const relayPort = (relay.address() as { port: number }).port;
      const closing = http2Client(`127.0.0.1:${relayPort}`, 5000);
      try {
        const call = closing.listJobs().then(() => "answered", (e: Error) => e.message);
        await connected;
        await new Promise((resolve) => setTimeout(resolve, 100)); // the ClientHello is out
        closing.close();
        release();
        assert.doesNotMatch(await call, /^answered$/);
        await new Promise((resolve) => setTimeout(resolve, 300));
        assert.equal(received, 0);
      } finally {
        closing.close();
        await new Promise((resolve) => relay.close(resolve));
      }
    } finally {
      other.close();
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    }
  },
});

Deno.test({
  name:
    "h2 client: after a protocol error the connection is closed, not left half-open until the server's FIN",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const { createServer } = await import("node:tls");
    const { encodeFrame, ErrorCode, FrameReader, FrameType } = await import(
      "../cli/transport/h2/frames.ts"
    );
    const received: Uint8Array[] = [];
    const sockets: { destroy(): void }[] = [];
    const gone = Promise.withResolvers<void>();
    // A server that sends a bad frame, then never closes: after the client's FIN it keeps
    // writing, which only a client that closed its socket (not just its side) answers with RST.
    const options = { ...serverTls(), ALPNProtocols: ["h2"], allowHalfOpen: true };
    const server = createServer(options, (socket) => {
      sockets.push(socket);
      socket.on("error", () => {});
      socket.on("data", (chunk: Uint8Array) => void received.push(chunk));
      socket.once("data", () => {
        socket.write(encodeFrame(FrameType.SETTINGS, 0, 0));
        socket.write(encodeFrame(FrameType.PRIORITY, 0, 1, new Uint8Array(4)));
      });
      socket.on("end", () => {
        const timer = setInterval(
          () => socket.write(encodeFrame(FrameType.PING, 0, 0, new Uint8Array(8))),
          20,
        );
        socket.on("close", () => {
          clearInterval(timer);
          gone.resolve();
        });
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const port = (server.address() as { port: number }).port;
    const other = http2Client(`127.0.0.1:${port}`, 5000);
    let guard: ReturnType<typeof setTimeout> | undefined;
    try {
      await assert.rejects(other.listJobs(), (e: { code: number; message: string }) => {
        assert.equal(e.code, Status.UNAVAILABLE, e.message);
        assert.match(e.message, /PRIORITY of 4 bytes/);
        return true;
      });
      // A hang guard only: without the fix the connection stays open as long as the server's.
      const hang = new Promise<string>((resolve) => {
        guard = setTimeout(() => resolve("still open"), 10_000);
      });
      assert.equal(await Promise.race([gone.promise.then(() => "closed"), hang]), "closed");
      // And the GOAWAY saying why went out before the socket closed.
      const frames = new FrameReader().push(concatBytes(received).subarray(24));
      const goaway = frames.find((f) => f.type === FrameType.GOAWAY);
      assert.equal(
        goaway && new DataView(goaway.payload.buffer, goaway.payload.byteOffset).getUint32(4),
        ErrorCode.FRAME_SIZE_ERROR,
      );
    } finally {
      clearTimeout(guard);
      other.close();
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    }
  },
});

Deno.test({
  name: "h2 client: the end (close the client, stop the worker)",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    client.close();
    await worker.stop();
    await pki.remove();
    await Deno.remove(dataDir, { recursive: true });
  },
});
