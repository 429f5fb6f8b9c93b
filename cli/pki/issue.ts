/**
 * End-entity certificates signed by a {@link CertificateAuthority}: a TLS server certificate and
 * TLS client certificates whose OU carries the role and whose CN carries the owner.
 *
 * @module
 */
import { encodePem, x509 } from "./_x509.ts";
import { resolveValidity, type Validity, type ValidityOptions } from "./_validity.ts";
import { randomSerialNumber } from "./_serial.ts";
import { exportPrivateKeyPem, generateKeyPair, SIGNING_ALGORITHM } from "./keys.ts";
import { buildName, parseServerName, type SubjectAltName } from "./names.ts";
import type { CertificateAuthority, CertifiedKeyPair } from "./types.ts";

/** Default validity of end-entity certificates, in days. */
export const DEFAULT_LEAF_VALID_DAYS = 365;

/** Options of {@link issueServerCert}. */
export interface ServerCertOptions {
  /** DNS names for the subjectAltName; a leading `*.` wildcard label is allowed. */
  dnsNames: string[];
  /** IPv4 or IPv6 addresses for the subjectAltName. */
  ips: string[];
  /** Validity in days from now; default 365, and never past the CA's own expiry. */
  validDays?: number | undefined;
  /** Start of validity; default five minutes ago. */
  notBefore?: Date | undefined;
  /** End of validity, used as given (tests use it for expired certificates). */
  notAfter?: Date | undefined;
}

/**
 * Issues a TLS server certificate: ECDSA P-256 key, keyUsage `digitalSignature` (critical),
 * extKeyUsage `serverAuth` only (so it cannot authenticate a client), subjectAltName with the
 * DNS names and IP addresses, basicConstraints `CA:FALSE` (critical), subject and authority key
 * identifiers. The subject is `CN=<first DNS name, else first IP>`.
 *
 * @param ca The signing CA.
 * @param options Names and validity.
 * @returns The certificate and key.
 * @throws {RangeError} If there is no name at all, a DNS name or an IP address is invalid (an
 * address given as a DNS name or the reverse is an error too), or the validity is invalid.
 *
 * @example
 * ```ts
 * const ca = await createCA();
 * const server = await issueServerCert(ca, { dnsNames: ["localhost"], ips: ["127.0.0.1", "::1"] });
 * ```
 */
export async function issueServerCert(
  ca: CertificateAuthority,
  options: ServerCertOptions,
): Promise<CertifiedKeyPair> {
  const sans: SubjectAltName[] = [
    ...options.dnsNames.map((name) => expectType(name, "dns")),
    ...options.ips.map((address) => expectType(address, "ip")),
  ];
  const first = sans[0];
  if (first === undefined) {
    throw new RangeError("A server certificate needs at least one DNS name or IP address");
  }
  return await issue(ca, {
    subject: buildName({ commonName: first.value }),
    validity: leafValidity(ca, options),
    extendedKeyUsage: x509.ExtendedKeyUsage.serverAuth,
    extraExtensions: [new x509.SubjectAlternativeNameExtension(sans, false)],
  });
}

/** Options of {@link issueClientCert}. */
export interface ClientCertOptions {
  /** CN: the owner of the client. */
  commonName: string;
  /** OU: the role; `null` or absent for a subject without any OU. Any non-empty text is allowed. */
  organizationalUnit?: string | null | undefined;
  /** Validity in days from now; default 365, and never past the CA's own expiry. */
  validDays?: number | undefined;
  /** Start of validity; default five minutes ago. */
  notBefore?: Date | undefined;
  /** End of validity, used as given (tests use it for expired certificates). */
  notAfter?: Date | undefined;
}

/**
 * Issues a TLS client certificate with subject `OU=<role>, CN=<owner>`: ECDSA P-256 key, keyUsage
 * `digitalSignature` (critical), extKeyUsage `clientAuth` only (so it cannot serve as a server
 * certificate), basicConstraints `CA:FALSE` (critical), subject and authority key identifiers.
 *
 * @param ca The signing CA.
 * @param options CN, OU and validity.
 * @returns The certificate and key.
 * @throws {RangeError} If the CN or OU is empty or longer than 64 characters, or the validity is
 * invalid.
 *
 * @example
 * ```ts
 * const admin = await issueClientCert(ca, { commonName: "alice", organizationalUnit: "admin" });
 * const expired = await issueClientCert(ca, {
 *   commonName: "bob",
 *   organizationalUnit: "viewer",
 *   notBefore: new Date(Date.now() - 2 * 86_400_000),
 *   notAfter: new Date(Date.now() - 86_400_000),
 * });
 * ```
 */
export async function issueClientCert(
  ca: CertificateAuthority,
  options: ClientCertOptions,
): Promise<CertifiedKeyPair> {
  return await issue(ca, {
    subject: buildName({
      organizationalUnit: options.organizationalUnit,
      commonName: options.commonName,
    }),
    validity: leafValidity(ca, options),
    extendedKeyUsage: x509.ExtendedKeyUsage.clientAuth,
    extraExtensions: [],
  });
}

function expectType(name: string, type: SubjectAltName["type"]): SubjectAltName {
  const san = parseServerName(name);
  if (san.type !== type) {
    throw new RangeError(
      type === "ip"
        ? `"${name}" is not an IP address`
        : `"${name}" is an IP address, not a DNS name`,
    );
  }
  return san;
}

/** A validity within the CA's: a period derived from days is cut at the CA's expiry. */
function leafValidity(ca: CertificateAuthority, options: ValidityOptions): Validity {
  const validity = resolveValidity(options, DEFAULT_LEAF_VALID_DAYS);
  if (validity.derived && validity.notAfter > ca.certificate.notAfter) {
    return { ...validity, notAfter: ca.certificate.notAfter };
  }
  return validity;
}

interface IssueParams {
  subject: x509.Name;
  validity: Validity;
  extendedKeyUsage: x509.ExtendedKeyUsage;
  extraExtensions: x509.Extension[];
}

async function issue(ca: CertificateAuthority, params: IssueParams): Promise<CertifiedKeyPair> {
  const keys = await generateKeyPair();
  const certificate = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerialNumber(),
    subject: params.subject,
    issuer: ca.certificate.subjectName,
    notBefore: params.validity.notBefore,
    notAfter: params.validity.notAfter,
    publicKey: keys.publicKey,
    signingKey: ca.privateKey,
    signingAlgorithm: SIGNING_ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([params.extendedKeyUsage], false),
      ...params.extraExtensions,
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await authorityKeyIdentifier(ca),
    ],
  });
  return {
    certificate,
    privateKey: keys.privateKey,
    certPem: encodePem(certificate.rawData, "CERTIFICATE"),
    keyPem: await exportPrivateKeyPem(keys.privateKey),
  };
}

/** The CA's own subject key identifier when it has one, else one computed from its key. */
async function authorityKeyIdentifier(
  ca: CertificateAuthority,
): Promise<x509.AuthorityKeyIdentifierExtension> {
  const ski = ca.certificate.getExtension(x509.SubjectKeyIdentifierExtension);
  if (ski !== null) {
    return new x509.AuthorityKeyIdentifierExtension(ski.keyId, false);
  }
  return await x509.AuthorityKeyIdentifierExtension.create(ca.certificate.publicKey, false);
}
