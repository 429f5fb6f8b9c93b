/**
 * Types shared by the modules of `cli/pki`.
 *
 * @module
 */
import type { x509 } from "./_x509.ts";

/** A certificate and its private key, both as PEM text. */
export interface PemKeyPair {
  /** The certificate, `-----BEGIN CERTIFICATE-----`. */
  certPem: string;
  /** The private key, unencrypted PKCS#8, `-----BEGIN PRIVATE KEY-----`. */
  keyPem: string;
}

/** A certificate and its private key, as PEM text and as parsed objects. */
export interface CertifiedKeyPair extends PemKeyPair {
  /** The parsed certificate. */
  certificate: x509.X509Certificate;
  /** The private key (ECDSA P-256, extractable). */
  privateKey: CryptoKey;
}

/**
 * A certificate authority able to sign: a CA certificate with its private key. Obtain one from
 * `createCA` or `loadCA` in `authority.ts`, which check that it really is one.
 */
export interface CertificateAuthority extends CertifiedKeyPair {
  /** Marks values that went through `createCA` or `loadCA`. */
  readonly kind: "certificate-authority";
}
