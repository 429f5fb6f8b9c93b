/**
 * Connection churn for memory tests: `count` fresh mutual-TLS HTTP/2 connections, each making one
 * real gRPC call (GetServerInfo) and closing, `concurrency` at a time. Each connection gets its
 * own TLS handshake (no session resumption) and its own HTTP/2 session and stream on the server.
 */
import http2 from "node:http2";
import { Buffer } from "node:buffer";
import type { ClientName } from "./pki.ts";

/** One connection: handshake, one call, close. Resolves with the call's grpc-status. */
function oneCall(
  address: string,
  tls: { ca: string; cert: string; key: string },
): Promise<string> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`https://${address}`, {
      ...tls,
      servername: "localhost",
      minVersion: "TLSv1.3",
    });
    session.on("error", reject);
    const stream = session.request({
      ":method": "POST",
      ":path": "/jobworker.JobService/GetServerInfo",
      "content-type": "application/grpc",
      te: "trailers",
    });
    let grpcStatus = "";
    stream.on("trailers", (trailers) => grpcStatus = String(trailers["grpc-status"] ?? ""));
    stream.on("response", (headers) => {
      if (headers["grpc-status"] !== undefined) grpcStatus = String(headers["grpc-status"]);
    });
    stream.on("data", () => {});
    stream.on("error", reject);
    stream.on("close", () => {
      session.close();
      resolve(grpcStatus);
    });
    stream.end(Buffer.from([0, 0, 0, 0, 0])); // an empty GetServerInfoReq
  });
}

/** Makes `count` connections; returns how many calls ended with grpc-status 0. */
export async function churnConnections(
  certDir: string,
  address: string,
  count: number,
  concurrency = 16,
  name: ClientName = "viewer",
): Promise<number> {
  const read = (file: string) => Deno.readTextFileSync(`${certDir}/${file}`);
  const tls = {
    ca: read("ca-cert.pem"),
    cert: read(`${name}-client-cert.pem`),
    key: read(`${name}-client-key.pem`),
  };
  let started = 0;
  let ok = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (started < count) {
      started++;
      if ((await oneCall(address, tls)) === "0") ok++;
    }
  }));
  return ok;
}
