/**
 * Certificate serial numbers.
 *
 * @module
 */

/**
 * A random positive serial number of 16 bytes (RFC 5280 allows up to 20), as hexadecimal. The
 * first byte has its top bit clear (so the DER INTEGER is positive without a padding byte) and
 * its next bit set (so it never starts with a zero byte and always has 16 bytes).
 */
export function randomSerialNumber(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0] = ((bytes[0] ?? 0) & 0x7f) | 0x40;
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}
