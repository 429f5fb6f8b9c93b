/**
 * Parsing of the server address a client connects to: `HOST:PORT`, `HOST` (default port),
 * `1.2.3.4:PORT`, `[::1]:PORT`, `[::1]` or a bare IPv6 address.
 *
 * @module
 */
import { isIPv4, isIPv6 } from "node:net";

/** The port used when an address names none. */
export const DEFAULT_PORT = 50051;

/** A parsed server address. */
export interface ServerAddress {
  /** Host name or IP address, without brackets. */
  host: string;
  /** TCP port, 1..65535. */
  port: number;
  /** 4 or 6 when `host` is an IP address of that family, 0 for a host name. */
  family: 0 | 4 | 6;
  /** The address as a gRPC target: `host:port`, IPv6 in brackets. */
  target: string;
}

/**
 * Parse a server address.
 *
 * @example
 * ```ts
 * parseServerAddress("[::1]:7000"); // { host: "::1", port: 7000, family: 6, target: "[::1]:7000" }
 * ```
 * @throws {TypeError} When the address is malformed; the message quotes it.
 */
export function parseServerAddress(address: string): ServerAddress {
  const text = address.trim();
  let host: string;
  let portText: string | undefined;
  const bracketed = /^\[([^\]]+)\](?::(.*))?$/.exec(text);
  if (bracketed) {
    host = bracketed[1] ?? "";
    portText = bracketed[2];
    if (ipFamily(host) !== 6) {
      throw new TypeError(`Invalid server address "${address}": not an IPv6 address in brackets`);
    }
  } else if (ipFamily(text) === 6) {
    host = text;
  } else {
    const colon = text.lastIndexOf(":");
    if (colon >= 0 && text.indexOf(":") !== colon) {
      throw new TypeError(
        `Invalid server address "${address}": write an IPv6 address as [ADDR]:PORT`,
      );
    }
    host = colon >= 0 ? text.slice(0, colon) : text;
    portText = colon >= 0 ? text.slice(colon + 1) : undefined;
  }
  if (host === "" || /[\s/@?#]/.test(host)) {
    throw new TypeError(`Invalid server address "${address}": expected HOST:PORT`);
  }
  let port = DEFAULT_PORT;
  if (portText !== undefined) {
    port = /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
    if (!(port >= 1 && port <= 65535)) {
      throw new TypeError(`Invalid server address "${address}": the port must be 1..65535`);
    }
  }
  const family = ipFamily(host);
  const target = family === 6 ? `[${host}]:${port}` : `${host}:${port}`;
  return { host, port, family, target };
}

/**
 * node:net's `isIP`, without its IPv6 pattern for text that cannot be an IPv6 address (fewer than
 * two colons): the first match of that large pattern costs a short-lived command about a
 * millisecond.
 */
function ipFamily(text: string): 0 | 4 | 6 {
  if (isIPv4(text)) return 4;
  const colon = text.indexOf(":");
  return colon >= 0 && text.indexOf(":", colon + 1) >= 0 && isIPv6(text) ? 6 : 0;
}
