/**
 * Certificate authorities: creating a new one, and loading (and checking) an existing one.
 *
 * @module
 */
import { encodePem, x509 } from "./_x509.ts";
import { resolveValidity } from "./_validity.ts";
import {
  exportPrivateKeyPem,
  generateKeyPair,
  importPrivateKeyPem,
  privateKeyMatches,
  SIGNING_ALGORITHM,
} from "./keys.ts";
import { buildName } from "./names.ts";
import { randomSerialNumber } from "./_serial.ts";
import type { CertificateAuthority, PemKeyPair } from "./types.ts";

/** Default common name of a new CA. */
export const DEFAULT_CA_COMMON_NAME = "jobworker CA";

/** Default validity of a new CA, in days (10 years). */
export const DEFAULT_CA_VALID_DAYS = 3650;

/** Options of {@link createCA}. */
export interface CreateCAOptions {
  /** CN of the CA; default `"jobworker CA"`. */
  commonName?: string | undefined;
  /** Validity in days from now; default 3650. */
  validDays?: number | undefined;
}

/**
 * Creates a self-signed certificate authority: an ECDSA P-256 key and a certificate with
 * basicConstraints `CA:TRUE, pathlen:0` (critical; it signs end-entity certificates only),
 * keyUsage `keyCertSign, cRLSign` (critical), a subject key identifier and a random positive
 * 128-bit serial number.
 *
 * @param options CN and validity.
 * @returns The CA with its PEM texts.
 * @throws {RangeError} If the CN is empty or too long, or `validDays` is out of range.
 *
 * @example
 * ```ts
 * const ca = await createCA({ commonName: "test CA" });
 * const server = await issueServerCert(ca, { dnsNames: ["localhost"], ips: ["127.0.0.1"] });
 * ```
 */
export async function createCA(options: CreateCAOptions = {}): Promise<CertificateAuthority> {
  const name = buildName({
    organization: "jobworker",
    commonName: options.commonName ?? DEFAULT_CA_COMMON_NAME,
  });
  const { notBefore, notAfter } = resolveValidity(
    { validDays: options.validDays },
    DEFAULT_CA_VALID_DAYS,
  );
  const keys = await generateKeyPair();
  const certificate = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerialNumber(),
    subject: name,
    issuer: name,
    notBefore,
    notAfter,
    publicKey: keys.publicKey,
    signingKey: keys.privateKey,
    signingAlgorithm: SIGNING_ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return {
    kind: "certificate-authority",
    certificate,
    privateKey: keys.privateKey,
    certPem: encodePem(certificate.rawData, "CERTIFICATE"),
    keyPem: await exportPrivateKeyPem(keys.privateKey),
  };
}

/** Options of {@link loadCA}. */
export interface LoadCAOptions {
  /** The time at which the CA must be valid; default now. */
  now?: Date | undefined;
}

/**
 * Loads an existing certificate authority from PEM texts and checks that it can sign: the
 * certificate has basicConstraints `CA:TRUE` (and keyCertSign if it has a keyUsage), is valid now,
 * and the key is its ECDSA P-256 private key in PKCS#8.
 *
 * @param pair The CA certificate and key PEM texts.
 * @param options The time of the validity check.
 * @returns The CA.
 * @throws {TypeError} If a PEM text cannot be parsed, or the key is not a PKCS#8 ECDSA P-256 key.
 * @throws {RangeError} If the certificate is not a CA, is not valid at `now`, or does not
 * belong to the key.
 */
export async function loadCA(
  pair: PemKeyPair,
  options: LoadCAOptions = {},
): Promise<CertificateAuthority> {
  const certificate = parseCertificatePem(pair.certPem, "The CA certificate");
  const basicConstraints = certificate.getExtension(x509.BasicConstraintsExtension);
  if (basicConstraints === null || !basicConstraints.ca) {
    throw new RangeError(`The certificate "${certificate.subject}" is not a CA (no CA:TRUE)`);
  }
  const keyUsage = certificate.getExtension(x509.KeyUsagesExtension);
  if (keyUsage !== null && (keyUsage.usages & x509.KeyUsageFlags.keyCertSign) === 0) {
    throw new RangeError(`The CA certificate "${certificate.subject}" may not sign certificates`);
  }
  const now = options.now ?? new Date();
  if (certificate.notAfter.getTime() <= now.getTime()) {
    throw new RangeError(
      `The CA certificate "${certificate.subject}" expired on ${certificate.notAfter.toISOString()}`,
    );
  }
  if (certificate.notBefore.getTime() > now.getTime()) {
    throw new RangeError(
      `The CA certificate "${certificate.subject}" is not valid before ${certificate.notBefore.toISOString()}`,
    );
  }
  let privateKey: CryptoKey;
  try {
    privateKey = await importPrivateKeyPem(pair.keyPem);
  } catch (error) {
    throw new TypeError(`The CA key: ${(error as Error).message}`, { cause: error });
  }
  if (!(await privateKeyMatches(privateKey, certificate))) {
    throw new RangeError(
      `The CA key does not belong to the CA certificate "${certificate.subject}"`,
    );
  }
  return { kind: "certificate-authority", certificate, privateKey, ...pair };
}

/**
 * Parses one PEM certificate.
 *
 * @param pem The PEM text.
 * @param what How to name the certificate in the error message.
 * @throws {TypeError} If the text is not a PEM certificate.
 */
export function parseCertificatePem(pem: string, what = "The certificate"): x509.X509Certificate {
  if (!pem.includes("-----BEGIN CERTIFICATE-----")) {
    throw new TypeError(`${what} is not a PEM certificate`);
  }
  try {
    return new x509.X509Certificate(pem);
  } catch (error) {
    throw new TypeError(`${what} cannot be parsed: ${(error as Error).message}`, { cause: error });
  }
}
