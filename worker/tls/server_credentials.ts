/**
 * Server credentials for mutual TLS 1.3: grpc-js's createSsl accepts TLS 1.2, so this subclass
 * builds the same secure options with a TLS 1.3 floor and a required, verified client certificate.
 */
import { Buffer } from "node:buffer";
import { ServerCredentials } from "@grpc/grpc-js";

export interface ServerTlsFiles {
  caPem: Uint8Array;
  certPem: Uint8Array;
  keyPem: Uint8Array;
}

class MutualTls13Credentials extends ServerCredentials {
  constructor(files: ServerTlsFiles, maxHeaderListSize: number, handshakeTimeoutMs: number) {
    super(
      {
        // A client that has not completed its handshake by then is dropped (half-open and idle
        // TLS connections would otherwise be kept forever).
        handshakeTimeout: handshakeTimeoutMs,
        requestCert: true,
        rejectUnauthorized: true,
        minVersion: "TLSv1.3",
        settings: { maxHeaderListSize },
      },
      {
        ca: Buffer.from(files.caPem),
        cert: Buffer.from(files.certPem),
        key: Buffer.from(files.keyPem),
      },
    );
  }

  override _equals(other: ServerCredentials): boolean {
    return other === this;
  }
}

export function mutualTls13(
  files: ServerTlsFiles,
  maxHeaderListSize: number,
  handshakeTimeoutMs = 5000,
): ServerCredentials {
  return new MutualTls13Credentials(files, maxHeaderListSize, handshakeTimeoutMs);
}

/** Reads the server's TLS files from `dir`, naming any that is missing. */
export async function readServerTlsFiles(dir: string): Promise<ServerTlsFiles> {
  const read = async (name: string) => {
    try {
      return await Deno.readFile(`${dir}/${name}`);
    } catch (e) {
      throw new Error(
        `Cannot read ${dir}/${name} (${e instanceof Error ? e.message : e}); ` +
          "set JOB_WORKER_CERT_PATH or --cert-path, or create certificates with `jobworker certs`",
      );
    }
  };
  return {
    caPem: await read("ca-cert.pem"),
    certPem: await read("server-cert.pem"),
    keyPem: await read("server-key.pem"),
  };
}
