/** Real gRPC clients (the product's own JobClient) for a test worker, one per identity. */
import { type ConnectionSettings, JobClient } from "../../cli/client.ts";
import type { ClientName } from "./pki.ts";
import { concatBytes } from "./process.ts";

export function clientFor(
  certDir: string,
  address: string,
  name: ClientName = "admin",
  settings: Partial<ConnectionSettings> = {},
): JobClient {
  const read = (file: string) => Deno.readTextFileSync(`${certDir}/${file}`);
  return JobClient.connect({
    server: address,
    caPem: read("ca-cert.pem"),
    certPem: read(`${name}-client-cert.pem`),
    keyPem: read(`${name}-client-key.pem`),
    ...settings,
  });
}

/** Collects a job's whole output through GetJobsStream. */
export async function collectOutput(
  client: JobClient,
  id: string,
  options: { offset?: number; noFollow?: boolean } = {},
): Promise<{ stdout: string; stderr: string; bytes: Uint8Array; chunks: number }> {
  const parts: Uint8Array[] = [];
  let stdout = "";
  let stderr = "";
  let chunks = 0;
  const decoder = { out: new TextDecoder(), err: new TextDecoder() };
  for await (const chunk of client.stream(id, options)) {
    chunks++;
    parts.push(chunk.payload);
    if (chunk.stream === 2) stderr += decoder.err.decode(chunk.payload, { stream: true });
    else stdout += decoder.out.decode(chunk.payload, { stream: true });
  }
  return { stdout, stderr, bytes: concatBytes(parts), chunks };
}
