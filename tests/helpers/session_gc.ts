/**
 * `deno run -A --v8-flags=--expose-gc session_gc.ts CERT_DIR COUNT [release]`: a real node:http2
 * server with mutual TLS serves COUNT connections (one gRPC-shaped call each), with the worker's
 * session release (worker/tls/session_release.ts) when "release" is given; after they closed and
 * the garbage collector ran, prints how many of the server's sessions were collected.
 */
import http2 from "node:http2";
import { churnConnections } from "./tls_churn.ts";
import { releaseSessionsOf } from "../../worker/tls/session_release.ts";

const [certDir, count, release] = Deno.args;
if (!certDir || !count) throw new Error("usage: session_gc.ts CERT_DIR COUNT [release]");
const read = (file: string) => Deno.readTextFileSync(`${certDir}/${file}`);
const server = http2.createSecureServer({
  ca: read("ca-cert.pem"),
  cert: read("server-cert.pem"),
  key: read("server-key.pem"),
  requestCert: true,
  minVersion: "TLSv1.3",
});
let collected = 0;
const registry = new FinalizationRegistry(() => collected++);
server.on("session", (session) => registry.register(session, 0));
if (release === "release") releaseSessionsOf(server);
server.on("stream", (stream: http2.ServerHttp2Stream) => {
  stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
  stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
  stream.end();
});
await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
const { port } = server.address() as { port: number };
const served = await churnConnections(certDir, `127.0.0.1:${port}`, Number(count), 8);
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with --v8-flags=--expose-gc");
for (let i = 0; i < 10; i++) {
  gc();
  await new Promise((resolve) => setTimeout(resolve, 100));
}
console.log(JSON.stringify({ served, collected }));
server.close();
Deno.exit(0);
