/**
 * The one place that loads `@peculiar/x509`. Its dependency tsyringe needs the Reflect metadata
 * polyfill to be evaluated first, and the library needs a WebCrypto provider: both happen here, so
 * every other module of `cli/pki` imports `x509` from this file and never from the package.
 *
 * @module
 */
import "reflect-metadata";
import * as x509 from "@peculiar/x509";

x509.cryptoProvider.set(crypto);

/** `@peculiar/x509`, ready to use: Reflect polyfill loaded, WebCrypto provider set. */
export { x509 };

/**
 * Encodes DER bytes as a PEM block with Unix line endings and one final newline, the form openssl
 * itself writes.
 */
export function encodePem(der: BufferSource, tag: string): string {
  return x509.PemConverter.encode(der, tag).replace(/\r\n/g, "\n").replace(/\s*$/, "\n");
}
