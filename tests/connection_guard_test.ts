/**
 * Connections that never finish their TLS handshake leave nothing behind in the worker's memory.
 *
 * - The connection guard (worker/tls/connection_guard.ts): a connection past a cap is closed
 *   before its TLS handshake. In Deno 2.8.3 a refused socket destroyed at once, before node:tls's
 *   own 'connection' listener wrapped it, stayed for good with its TCP handle, a TLSSocket over a
 *   JSStreamSocket and that TLSSocket's TLSWrap (about 30 KiB of RSS per refused connection).
 * - The handshake deadline (worker/tls/handshake_deadline.ts) switches off node:tls's own handshake
 *   timer, which Deno 2.8.3 cancels only when a handshake completes: every connection closed before
 *   (by the client, by the guard, by the deadline) was kept until that timer ran.
 *
 * The server here is the worker's: a grpc-js Server with its mutual-TLS credentials, the handshake
 * deadline and the guard attached as startServer does, and node:tls's own timer given a minute, so
 * that what it would hold stays far past the checks here.
 *
 * Run: `deno test -A tests/connection_guard_test.ts`.
 *
 * @module
 */
import assert from "node:assert/strict";
import net from "node:net";
import tls from "node:tls";
import v8 from "node:v8";
import vm from "node:vm";
import * as grpc from "@grpc/grpc-js";
import { makePki } from "./helpers/pki.ts";
import {
  ConnectionGuard,
  type ConnectionLimits,
  isRefused,
} from "../worker/tls/connection_guard.ts";
import { HandshakeDeadline } from "../worker/tls/handshake_deadline.ts";
import { mutualTls13, readServerTlsFiles } from "../worker/tls/server_credentials.ts";
import { http2ServersOf } from "../worker/tls/internals.ts";

v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as () => void;
const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** The handshake deadline here: a refused connection must close well before it. */
const DEADLINE_MS = 1000;
/**
 * node:tls's own handshake timeout given to the server: were it left on, what it holds would stay
 * this long, far past every check here.
 */
const NODE_TLS_TIMEOUT_MS = 60_000;
const REFUSED = 40;

/** What node:tls made of an accepted socket: the TLSSocket its TCP handle now names as owner. */
function ownerOf(handle: object): unknown {
  const key = Object.getOwnPropertySymbols(handle).find((s) => s.description === "ownerSymbol");
  return key === undefined ? undefined : Reflect.get(handle, key);
}

/** A viewer client's mutual-TLS options for a server on 127.0.0.1:`port`. */
function clientTls(read: (file: string) => string, port: number): tls.ConnectionOptions {
  return {
    host: "127.0.0.1",
    port,
    servername: "localhost",
    ca: read("ca-cert.pem"),
    cert: read("viewer-client-cert.pem"),
    key: read("viewer-client-key.pem"),
    ALPNProtocols: ["h2"],
  };
}

/** A client's first flight (its ClientHello), taken from a plain TCP server that reads it. */
async function clientHello(read: (file: string) => string): Promise<Uint8Array> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  const hello = new Promise<Uint8Array>((resolve) =>
    server.once("connection", (socket) =>
      socket.once("data", (d: Uint8Array) => {
        resolve(d);
        socket.destroy();
      }))
  );
  const client = tls.connect(clientTls(read, port));
  client.on("error", () => {});
  try {
    return await hello;
  } finally {
    client.destroy();
    server.close();
  }
}

/** The worker's server on 127.0.0.1, with its handshake deadline and connection guard. */
async function startServer(limits: ConnectionLimits) {
  const pki = await makePki();
  const server = new grpc.Server();
  const files = await readServerTlsFiles(pki.dir);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(
      "127.0.0.1:0",
      mutualTls13(files, 16 * 1024, NODE_TLS_TIMEOUT_MS),
      (error, port) => error ? reject(error) : resolve(port),
    );
  });
  assert.ok(new HandshakeDeadline(DEADLINE_MS).attach(server));
  assert.ok(new ConnectionGuard(limits).attach(server));
  const read = (file: string) => Deno.readTextFileSync(`${pki.dir}/${file}`);
  const stop = async () => {
    server.forceShutdown();
    await pki.remove();
  };
  return { server, port, read, stop };
}

/**
 * Weak refs to the server's side of each connection accepted from now on that `which` picks: the
 * socket, its TCP handle (taken while open) and the TLSSocket node:tls wrapped it in.
 */
function trackConnections(server: grpc.Server, which: (socket: net.Socket) => boolean) {
  const refs: WeakRef<object>[] = [];
  let count = 0;
  for (const s of http2ServersOf(server)) {
    // Prepended after the guard's and the deadline's, so it runs first: the socket is as accepted.
    s.prependListener("connection", (socket) => {
      const handle = (socket as unknown as { _handle?: object })._handle;
      setTimeout(() => {
        if (!which(socket)) return;
        count++;
        refs.push(new WeakRef(socket));
        if (handle) refs.push(new WeakRef(handle));
        const tlsSocket = handle ? ownerOf(handle) : undefined;
        if (typeof tlsSocket === "object" && tlsSocket !== null && tlsSocket !== socket) {
          refs.push(new WeakRef(tlsSocket));
        }
      }, 0);
    });
  }
  return {
    get count() {
      return count;
    },
    /** How many tracked objects a few collections leave. */
    async alive(): Promise<{ alive: number; tracked: number }> {
      for (let i = 0; i < 4; i++) {
        gc();
        await delay(50);
      }
      return {
        alive: refs.filter((ref) => ref.deref() !== undefined).length,
        tracked: refs.length,
      };
    },
  };
}

/** Resolves with the ms from `opened` until `socket` closed, or Infinity after `limitMs`. */
function closedAfter(socket: net.Socket, opened: number, limitMs: number): Promise<number> {
  return Promise.race([
    new Promise<number>((resolve) =>
      socket.once("close", () => resolve(performance.now() - opened))
    ),
    delay(limitMs).then(() => Infinity),
  ]);
}

Deno.test({
  name: "a connection past the cap is closed before TLS, and nothing of it stays in memory",
  sanitizeOps: false, // grpc-js's server timers
  sanitizeResources: false,
  fn: async () => {
    const { server, port, read, stop } = await startServer({
      maxConnections: 1,
      maxConnectionsPerPeer: 1,
    });
    let holder: tls.TLSSocket | undefined;
    try {
      const refused = trackConnections(server, isRefused);
      // The one connection the cap allows: admitted, its handshake done (so that the deadline
      // leaves it), and held open.
      const hello = await clientHello(read);
      let holderClosed = false;
      await new Promise<void>((resolve, reject) => {
        holder = tls.connect(clientTls(read, port), resolve);
        holder.once("error", reject);
        holder.once("close", () => holderClosed = true);
      });
      // Each refused client sends a real ClientHello: without the guard the server would answer
      // it, and without the guard's close only the deadline would end the connection.
      for (let i = 0; i < REFUSED; i++) {
        const socket = net.connect(port, "127.0.0.1", () => socket.write(hello));
        let received = 0;
        socket.on("data", (d) => received += d.length);
        socket.on("error", () => {});
        const after = await closedAfter(socket, performance.now(), 5000);
        socket.destroy();
        assert.ok(
          after < DEADLINE_MS / 2,
          `refused connection ${i} closed after ${after.toFixed(0)} ms, not by the guard`,
        );
        assert.equal(received, 0, "a refused connection got bytes (TLS was answered)");
      }
      assert.equal(holderClosed, false, "the admitted connection was closed");
      const { alive, tracked } = await refused.alive();
      assert.equal(refused.count, REFUSED);
      assert.ok(tracked >= 2 * REFUSED, `only ${tracked} objects tracked`);
      assert.equal(alive, 0, `${alive} of ${tracked} objects of refused connections stayed`);
    } finally {
      holder?.destroy();
      await stop();
    }
  },
});

Deno.test({
  name:
    "connections closed before their TLS handshake, by the client or the deadline, leave nothing",
  sanitizeOps: false, // grpc-js's server timers
  sanitizeResources: false,
  fn: async () => {
    const { server, port, read, stop } = await startServer({
      maxConnections: 1000,
      maxConnectionsPerPeer: 1000,
    });
    try {
      const hello = await clientHello(read);
      const accepted = trackConnections(server, () => true);
      // Closed by the client: at once, after part of a ClientHello, after a whole one (the server
      // has answered it).
      const firstBytes = [undefined, hello.subarray(0, 20), hello];
      for (let i = 0; i < 30; i++) {
        const bytes = firstBytes[i % firstBytes.length];
        const socket = net.connect(port, "127.0.0.1");
        socket.on("error", () => {});
        await new Promise<void>((resolve) => socket.once("connect", resolve));
        if (bytes) {
          socket.write(bytes);
          await delay(20);
        }
        socket.destroy();
      }
      // Closed by the deadline: a client that sends half its ClientHello and waits.
      const stalled = Array.from({ length: 10 }, () => {
        const socket = net.connect(port, "127.0.0.1", () => socket.write(hello.subarray(0, 20)));
        socket.on("error", () => {});
        return closedAfter(socket, performance.now(), 3 * DEADLINE_MS);
      });
      for (const after of await Promise.all(stalled)) {
        assert.ok(
          after >= DEADLINE_MS - 50 && after < 2 * DEADLINE_MS + 500,
          `a stalled handshake was closed after ${after.toFixed(0)} ms, not by the deadline`,
        );
      }
      const { alive, tracked } = await accepted.alive();
      assert.equal(accepted.count, 40);
      assert.ok(tracked >= 2 * 40, `only ${tracked} objects tracked`);
      assert.equal(alive, 0, `${alive} of ${tracked} objects of closed connections stayed`);
    } finally {
      await stop();
    }
  },
});
