/**
 * Revoked client certificates: a file of serial numbers (hex, one a line; `#` comments, colons,
 * leading zeros and the `serial=` that `openssl x509 -noout -serial` prints allowed), named by
 * JOB_WORKER_REVOKED. grpc-js ignores CRLs, so the server
 * checks the serial of the caller's certificate on every call. The file is read again whenever
 * its modification time, size or inode changes (a stat per call), so an edit or a replacement
 * takes effect at the next call without a restart or SIGHUP.
 */
import { log } from "../log/logger.ts";

/** A revocation file that cannot be used; the message names the file and line. */
export class RevocationFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RevocationFileError";
  }
}

/** The canonical form of a serial: uppercase hex without colons and leading zeros. */
export function normalizeSerial(serial: string): string {
  return serial.replaceAll(":", "").trim().toUpperCase().replace(/^0+(?=.)/, "");
}

/** Parses the file's text; throws RevocationFileError naming the first bad line. */
export function parseRevoked(text: string, file: string): Set<string> {
  const serials = new Set<string>();
  text.split("\n").forEach((raw, i) => {
    const entry = raw.replace(/#.*/, "").trim();
    if (entry === "") return;
    // `openssl x509 -noout -serial` prints `serial=0A1B...`: taken as it is printed.
    const serial = entry.replace(/^serial\s*=\s*/i, "");
    // Hex digits, in groups between single colons: a line of colons alone (`:`, `serial=:`)
    // passed a character class and added an empty serial.
    if (!/^[0-9A-Fa-f]+(:[0-9A-Fa-f]+)*$/.test(serial)) {
      throw new RevocationFileError(
        `${file}:${i + 1}: "${entry.slice(0, 80)}" is not a hex serial`,
      );
    }
    serials.add(normalizeSerial(serial));
  });
  return serials;
}

export class RevocationList {
  #serials = new Set<string>();
  #stamp = "";

  /** Loads `file` now; throws RevocationFileError when it cannot be read or parsed. */
  constructor(readonly file: string) {
    const stamp = this.#statStamp();
    if (stamp === null) throw new RevocationFileError(`${file}: cannot be read`);
    this.#load(stamp, true);
  }

  #statStamp(): string | null {
    try {
      const info = Deno.statSync(this.file);
      return `${info.mtime?.getTime()}:${info.size}:${info.ino}`;
    } catch {
      return null;
    }
  }

  #load(stamp: string, strict: boolean): void {
    try {
      this.#serials = parseRevoked(Deno.readTextFileSync(this.file), this.file);
      this.#stamp = stamp;
      log.info("revoked certificates loaded", { file: this.file, count: this.#serials.size });
    } catch (e) {
      if (strict) {
        throw e instanceof RevocationFileError ? e : new RevocationFileError(`${this.file}: ${e}`);
      }
      // A half-written or broken file must not un-revoke anything: keep the last good list.
      log.error("cannot reload the revoked certificates; keeping the last list", {
        file: this.file,
        error: String(e),
      });
      this.#stamp = stamp;
    }
  }

  /** Whether the certificate with this serial (any hex form) is revoked; reloads if changed. */
  isRevoked(serial: string): boolean {
    const stamp = this.#statStamp();
    if (stamp !== null && stamp !== this.#stamp) this.#load(stamp, false);
    return this.#serials.has(normalizeSerial(serial));
  }
}
