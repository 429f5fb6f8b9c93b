/**
 * Run as a child process with a trust store of its own (DENO_TLS_CA_STORE, DENO_CERT, ...):
 * `deno run -A trust_probe.ts <mode> <address> <ca> <cert> <key>` prints one line, "ok" or
 * "refused: <message>".
 *   - `jobclient-http2`, `jobclient-grpc-js`: the product's JobClient (ca = the given file) lists
 *     jobs;
 *   - `plain-tls`: a node:tls client WITHOUT `ca` (the process's default store) completes a
 *     verified handshake (shows what that store trusts).
 */
import * as tls from "node:tls";
import { JobClient } from "../../cli/client.ts";

const [mode, address, caPath, certPath, keyPath] = Deno.args as [
  string,
  string,
  string,
  string,
  string,
];
const read = (path: string) => Deno.readTextFileSync(path);

async function jobClient(transport: "http2" | "grpc-js"): Promise<string> {
  const client = JobClient.connect({
    server: address,
    caPem: read(caPath),
    certPem: read(certPath),
    keyPem: read(keyPath),
    transport,
  });
  try {
    await client.listJobsPage({});
    return "ok";
  } catch (e) {
    return `refused: ${e instanceof Error ? e.message : e}`;
  } finally {
    client.close();
  }
}

function plainTls(): Promise<string> {
  const [host, port] = [address.slice(0, address.lastIndexOf(":")), address.split(":").pop()!];
  return new Promise((resolve) => {
    const socket = tls.connect({
      host,
      port: Number(port),
      servername: "localhost",
      cert: read(certPath),
      key: read(keyPath),
      ALPNProtocols: ["h2"],
    });
    socket.once("secureConnect", () => {
      resolve(socket.authorized ? "ok" : `refused: ${socket.authorizationError}`);
      socket.destroy();
    });
    socket.once("error", (e) => resolve(`refused: ${e.message}`));
  });
}

const result = mode === "plain-tls"
  ? await plainTls()
  : await jobClient(mode === "jobclient-grpc-js" ? "grpc-js" : "http2");
console.log(result);
Deno.exit(0);
