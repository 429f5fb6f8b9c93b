/**
 * The least any TLS client written for Deno pays, for reading the `jobworker list` row of
 * `make bench`: one mutual-TLS 1.3 handshake with the worker through `Deno.connectTls` (Deno's own
 * TLS, no node: modules, no HTTP/2, no command line), then exit. bench/client_start.ts runs it as
 * a new process beside `deno eval ''`.
 *
 * Why it is well above `deno eval ''`: Deno 2.8.3's crypto library (AWS-LC) seeds its random
 * generator once per process from CPU-jitter entropy (a build-time choice of the library, with no
 * runtime switch), about 18 ms of CPU (36-37 ms on an AMD EPYC) before the first key share can be made.
 *
 * Usage: `deno run -A --no-config bench/tls_floor.ts HOST:PORT CERT_DIR`
 *
 * @module
 */
const [address, certDir] = Deno.args;
if (!address || !certDir) throw new Error("usage: tls_floor.ts HOST:PORT CERT_DIR");
const colon = address.lastIndexOf(":");
const read = (name: string) => Deno.readTextFileSync(`${certDir}/${name}`);
const conn = await Deno.connectTls({
  hostname: address.slice(0, colon).replace(/^\[|\]$/g, ""),
  port: Number(address.slice(colon + 1)),
  caCerts: [read("ca-cert.pem")],
  cert: read("admin-client-cert.pem"),
  key: read("admin-client-key.pem"),
  alpnProtocols: ["h2"],
});
await conn.handshake();
conn.close();
