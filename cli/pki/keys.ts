/**
 * ECDSA P-256 key pairs through WebCrypto, and their PKCS#8 PEM form.
 *
 * @module
 */
import { encodePem, x509 } from "./_x509.ts";

/** The key algorithm of every key this module makes: ECDSA on NIST P-256. */
export const KEY_ALGORITHM: EcKeyGenParams = { name: "ECDSA", namedCurve: "P-256" };

/** The signature algorithm used with {@link KEY_ALGORITHM} keys: ECDSA with SHA-256. */
export const SIGNING_ALGORITHM: EcdsaParams = { name: "ECDSA", hash: "SHA-256" };

const PRIVATE_KEY_TAG = "PRIVATE KEY";

/**
 * Generates a new ECDSA P-256 key pair. The private key is extractable so that it can be written
 * out as PKCS#8.
 *
 * @returns The new key pair.
 *
 * @example
 * ```ts
 * const keys = await generateKeyPair();
 * const pem = await exportPrivateKeyPem(keys.privateKey);
 * ```
 */
export async function generateKeyPair(): Promise<CryptoKeyPair> {
  return await crypto.subtle.generateKey(KEY_ALGORITHM, true, ["sign", "verify"]);
}

/**
 * Encodes a private key as an unencrypted PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), the form
 * that openssl, Node's `tls` and grpc-js read.
 *
 * @param privateKey An extractable private key.
 * @returns The PEM text, ending with a newline.
 * @throws {TypeError} If the key is not a private key or not extractable.
 */
export async function exportPrivateKeyPem(privateKey: CryptoKey): Promise<string> {
  if (privateKey.type !== "private") {
    throw new TypeError(`Expected a private key, got a "${privateKey.type}" key`);
  }
  if (!privateKey.extractable) {
    throw new TypeError("The private key is not extractable");
  }
  const der = await crypto.subtle.exportKey("pkcs8", privateKey);
  return encodePem(der, PRIVATE_KEY_TAG);
}

/**
 * Reads an ECDSA P-256 private key from an unencrypted PKCS#8 PEM.
 *
 * @param pem The PEM text; it must hold one `PRIVATE KEY` block.
 * @returns An extractable signing key.
 * @throws {TypeError} If the text is not a PKCS#8 `PRIVATE KEY` PEM (for example an
 * `EC PRIVATE KEY` or an encrypted key), or not an ECDSA P-256 key.
 */
export async function importPrivateKeyPem(pem: string): Promise<CryptoKey> {
  let blocks: x509.PemStruct[];
  try {
    blocks = x509.PemConverter.decodeWithHeaders(pem);
  } catch {
    throw new TypeError("Not a PEM file");
  }
  const block = blocks[0];
  if (block === undefined) {
    throw new TypeError("Not a PEM file");
  }
  if (block.type !== PRIVATE_KEY_TAG) {
    throw new TypeError(
      `Expected an unencrypted PKCS#8 "${PRIVATE_KEY_TAG}" PEM, found "${block.type}"`,
    );
  }
  try {
    return await crypto.subtle.importKey("pkcs8", block.rawData, KEY_ALGORITHM, true, ["sign"]);
  } catch {
    throw new TypeError("The private key is not an ECDSA P-256 key");
  }
}

/**
 * Tells whether a private key belongs to a certificate, by comparing the public point of the
 * private key with the certificate's public key.
 *
 * @param privateKey An extractable ECDSA private key.
 * @param certificate The certificate.
 * @returns `true` when the key is the certificate's private key.
 */
export async function privateKeyMatches(
  privateKey: CryptoKey,
  certificate: x509.X509Certificate,
): Promise<boolean> {
  const publicKeyAlgorithm = certificate.publicKey.algorithm as Partial<EcKeyAlgorithm>;
  if (
    publicKeyAlgorithm.name !== KEY_ALGORITHM.name ||
    publicKeyAlgorithm.namedCurve !== KEY_ALGORITHM.namedCurve
  ) {
    return false;
  }
  const publicKey = await certificate.publicKey.export(KEY_ALGORITHM, ["verify"]);
  const [privateJwk, publicJwk] = await Promise.all([
    crypto.subtle.exportKey("jwk", privateKey),
    crypto.subtle.exportKey("jwk", publicKey),
  ]);
  return privateJwk.crv === publicJwk.crv && privateJwk.x === publicJwk.x &&
    privateJwk.y === publicJwk.y;
}
