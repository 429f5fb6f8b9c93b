/**
 * Real certificates for tests, made with the product's own PKI library: a CA, a server
 * certificate for localhost and 127.0.0.1, and clients for every case of the authorization matrix.
 */
import { createCA } from "../../cli/pki/authority.ts";
import { issueClientCert, issueServerCert } from "../../cli/pki/issue.ts";
import { writeKeyPair } from "../../cli/pki/files.ts";

/** Client identities present in a fixture directory as `<name>-client-{cert,key}.pem`. */
export type ClientName = "admin" | "viewer" | "intruder" | "noou" | "otherca" | "expired";

export interface PkiFixture {
  dir: string;
  remove(): Promise<void>;
}

/** Fixture directories made and not removed yet, removed when the test file unloads. */
const unremoved = new Set<string>();

/**
 * Removes the fixtures a test file did not (a filtered run skipping the test that removes them, a
 * test failing first). Registered at the first makePki, after worker.ts's own unload listener
 * (registered when that module loads), which stops the workers still using them first.
 */
function removeLeftSync(): void {
  for (const dir of unremoved) {
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch { /* removed */ }
  }
  unremoved.clear();
}

export async function makePki(): Promise<PkiFixture> {
  globalThis.addEventListener("unload", removeLeftSync); // once: the same listener is kept once
  const dir = await Deno.makeTempDir({ prefix: "jobworker-test-pki-" });
  unremoved.add(dir);
  const ca = await createCA({ commonName: "test CA" });
  const otherCa = await createCA({ commonName: "another CA" });
  await writeKeyPair(dir, "ca", ca);
  await writeKeyPair(
    dir,
    "server",
    await issueServerCert(ca, { dnsNames: ["localhost"], ips: ["127.0.0.1"] }),
  );
  const client = async (
    name: ClientName,
    issuer: typeof ca,
    commonName: string,
    organizationalUnit: string | null,
    validity: { notBefore?: Date; notAfter?: Date } = {},
  ) =>
    await writeKeyPair(
      dir,
      `${name}-client`,
      await issueClientCert(issuer, { commonName, organizationalUnit, ...validity }),
    );
  await client("admin", ca, "alice", "admin");
  await client("viewer", ca, "victor", "viewer");
  await client("intruder", ca, "mallory", "intruder");
  await client("noou", ca, "nobody", null);
  await client("otherca", otherCa, "eve", "admin");
  const day = 24 * 3600 * 1000;
  await client("expired", ca, "old", "admin", {
    notBefore: new Date(Date.now() - 10 * day),
    notAfter: new Date(Date.now() - day),
  });
  return {
    dir,
    remove: async () => {
      await Deno.remove(dir, { recursive: true });
      unremoved.delete(dir);
    },
  };
}
