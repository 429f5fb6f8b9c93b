/**
 * The server's certificate must be signed by our CA, checked by us with the CA's public key.
 *
 * Why not leave it to `ca`: Deno's node:tls (2.8.3, ext/node/ops/tls_wrap.rs) accepts an X.509 v1
 * server certificate after matching only its issuer *name* against the `ca` certificates and
 * skips the signature checks (the chain's and the handshake's) for it: anyone who knows our CA's
 * name (the worker sends it to every client that connects) could pose as the worker.
 * tests/foreign_ca_test.ts shows it.
 *
 * @module
 */
import { X509Certificate } from "node:crypto";
import type { PeerCertificate } from "node:tls";

/** A `checkServerIdentity` that first checks the signature, then runs `checkName`. */
export function signedByOurCa(
  caPem: string,
  checkName: (host: string, cert: PeerCertificate) => Error | undefined,
): (host: string, cert: PeerCertificate) => Error | undefined {
  const cas = caPem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
  const ours = cas.map((pem) => new X509Certificate(pem));
  return (host, cert) => {
    let ok = false;
    try {
      const peer = new X509Certificate(cert.raw);
      ok = ours.some((ca) => peer.checkIssued(ca) && peer.verify(ca.publicKey));
    } catch {
      ok = false;
    }
    if (!ok) {
      return Object.assign(
        new Error(
          `the server's certificate (subject "${cert.subject?.CN ?? "?"}") is not signed by the ` +
            "CA given to the client; refusing to talk to it",
        ),
        { code: "ERR_TLS_CERT_NOT_SIGNED_BY_OUR_CA", reason: "not signed by our CA", host, cert },
      );
    }
    return checkName(host, cert);
  };
}
