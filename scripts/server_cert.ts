/**
 * Issues a server certificate for a remote host from the local CA, for `make deploy`: only the
 * new server pair and the CA certificate are written to OUT_DIR, never the CA key.
 *   deno run -A scripts/server_cert.ts CA_DIR OUT_DIR NAME...   (DNS names and IP addresses)
 */
import { isIP } from "node:net";
import { loadCA } from "../cli/pki/authority.ts";
import { issueServerCert } from "../cli/pki/issue.ts";
import { readKeyPair, writeKeyPair } from "../cli/pki/files.ts";

const [caDir, outDir, ...names] = Deno.args;
if (caDir === undefined || outDir === undefined || names.length === 0) {
  console.error("usage: server_cert.ts CA_DIR OUT_DIR NAME...");
  Deno.exit(2);
}
try {
  const ca = await loadCA(await readKeyPair(caDir, "ca"));
  const pair = await issueServerCert(ca, {
    dnsNames: names.filter((n) => isIP(n) === 0),
    ips: names.filter((n) => isIP(n) !== 0),
  });
  await writeKeyPair(outDir, "server", pair);
  await Deno.copyFile(`${caDir}/ca-cert.pem`, `${outDir}/ca-cert.pem`);
  console.log(`issued a server certificate for ${names.join(", ")} from the CA in ${caDir}`);
} catch (e) {
  console.error(`cannot issue the server certificate: ${(e as Error).message}`);
  Deno.exit(1);
}
