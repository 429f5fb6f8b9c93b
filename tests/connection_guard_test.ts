/**
 * The connection guard (worker/tls/connection_guard.ts): a connection past a cap is closed before
 * its TLS handshake, and nothing of it stays in memory. In Deno 2.8.3 a refused socket destroyed
 * at once, before node:tls's own 'connection' listener wrapped it, stayed for good with its TCP
 * handle, a TLSSocket over a JSStreamSocket and that TLSSocket's TLSWrap (about 30 KiB of RSS per
 * refused connection in the worker). The server here is the worker's: a grpc-js Server with its
 * mutual-TLS credentials, the handshake deadline and the guard attached as startServer does.
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
import { ConnectionGuard, isRefused } from "../worker/tls/connection_guard.ts";
import { backstopMs, HandshakeDeadline } from "../worker/tls/handshake_deadline.ts";
import { mutualTls13, readServerTlsFiles } from "../worker/tls/server_credentials.ts";
import { http2ServersOf } from "../worker/tls/internals.ts";

v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as () => void;
const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * The handshake deadline here: node:tls's own timer (the backstop) runs 3 times this after accept.
 * A refused connection must close well before it, or it was the deadline that closed it.
 */
const DEADLINE_MS = 1000;
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

Deno.test({
  name: "a connection past the cap is closed before TLS, and nothing of it stays in memory",
  sanitizeOps: false, // grpc-js's server timers
  sanitizeResources: false,
  fn: async () => {
    const pki = await makePki();
    const server = new grpc.Server();
    let holder: tls.TLSSocket | undefined;
    try {
      const files = await readServerTlsFiles(pki.dir);
      const port = await new Promise<number>((resolve, reject) => {
        server.bindAsync(
          "127.0.0.1:0",
          mutualTls13(files, 16 * 1024, backstopMs(DEADLINE_MS)),
          (error, port) => error ? reject(error) : resolve(port),
        );
      });
      assert.ok(new HandshakeDeadline(DEADLINE_MS).attach(server));
      assert.ok(
        new ConnectionGuard({ maxConnections: 1, maxConnectionsPerPeer: 1 }).attach(server),
      );
      // Weak refs to the server's side of each refused connection: the socket, its TCP handle
      // (taken while open) and the TLSSocket node:tls wrapped it in, if it did.
      const refs: WeakRef<object>[] = [];
      let refused = 0;
      for (const s of http2ServersOf(server)) {
        // Prepended after the guard's, so it runs first: the socket is as accepted.
        s.prependListener("connection", (socket) => {
          const handle = (socket as unknown as { _handle?: object })._handle;
          setTimeout(() => {
            if (!isRefused(socket)) return;
            refused++;
            refs.push(new WeakRef(socket));
            if (handle) refs.push(new WeakRef(handle));
            const tlsSocket = handle ? ownerOf(handle) : undefined;
            if (typeof tlsSocket === "object" && tlsSocket !== null && tlsSocket !== socket) {
              refs.push(new WeakRef(tlsSocket));
            }
          }, 0);
        });
      }
      // The one connection the cap allows: admitted, its handshake done (so that the deadline
      // leaves it), and held open.
      const read = (file: string) => Deno.readTextFileSync(`${pki.dir}/${file}`);
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
        const opened = performance.now();
        let received = 0;
        socket.on("data", (d) => received += d.length);
        socket.on("error", () => {});
        const closedAfter = await Promise.race([
          new Promise<number>((resolve) =>
            socket.once("close", () => resolve(performance.now() - opened))
          ),
          delay(5000).then(() => Infinity),
        ]);
        socket.destroy();
        assert.ok(
          closedAfter < DEADLINE_MS / 2,
          `refused connection ${i} closed after ${closedAfter.toFixed(0)} ms, not by the guard`,
        );
        assert.equal(received, 0, "a refused connection got bytes (TLS was answered)");
      }
      assert.equal(holderClosed, false, "the admitted connection was closed");
      // Until node:tls's handshake timer has run (the backstop), it keeps each TLSSocket.
      await delay(backstopMs(DEADLINE_MS) + 300);
      for (let i = 0; i < 4; i++) {
        gc();
        await delay(50);
      }
      assert.equal(refused, REFUSED);
      assert.ok(refs.length >= 2 * REFUSED, `only ${refs.length} objects tracked`);
      const alive = refs.filter((ref) => ref.deref() !== undefined).length;
      assert.equal(alive, 0, `${alive} of ${refs.length} objects of refused connections stayed`);
    } finally {
      holder?.destroy();
      server.forceShutdown();
      await pki.remove();
    }
  },
});
