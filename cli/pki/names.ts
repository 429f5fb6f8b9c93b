/**
 * Distinguished names and subject alternative names: building them from plain strings, and
 * checking server names before they go into a certificate.
 *
 * @module
 */
import { isIPv4, isIPv6 } from "node:net";
import { x509 } from "./_x509.ts";

/** OID of the commonName (CN) attribute. */
export const OID_COMMON_NAME = "2.5.4.3";
/** OID of the organizationalUnitName (OU) attribute. */
export const OID_ORGANIZATIONAL_UNIT = "2.5.4.11";
/** OID of the organizationName (O) attribute. */
export const OID_ORGANIZATION = "2.5.4.10";

/** RFC 5280 upper bound for CN, OU and O values (ub-common-name and friends). */
const MAX_ATTRIBUTE_LENGTH = 64;

/** One subject alternative name: a DNS name or an IP address (in its textual form). */
export interface SubjectAltName {
  /** `dns` for a host name, `ip` for an IPv4 or IPv6 address. */
  type: "dns" | "ip";
  /** The host name, or the address in the form the certificate will show. */
  value: string;
}

/** The attributes of a subject name this tool writes, in the order they appear. */
export interface SubjectAttributes {
  /** O; omitted when undefined. */
  organization?: string | undefined;
  /** OU; omitted when undefined or null. */
  organizationalUnit?: string | null | undefined;
  /** CN; required. */
  commonName: string;
}

/**
 * Builds a distinguished name. Values are stored as UTF8String exactly as given: no RFC 4514
 * escaping or `#hex` interpretation is applied, so any text is taken literally.
 *
 * @param attributes The CN and the optional O and OU.
 * @returns The name, `O=..., OU=..., CN=...` with absent attributes left out.
 * @throws {RangeError} If a value is empty or longer than 64 characters.
 */
export function buildName(attributes: SubjectAttributes): x509.Name {
  const rdns: x509.JsonAttributeAndObjectValue[] = [];
  const add = (oid: string, label: string, value: string) => {
    checkAttribute(label, value);
    rdns.push({ [oid]: [{ utf8String: value }] });
  };
  if (attributes.organization !== undefined) {
    add(OID_ORGANIZATION, "organization (O)", attributes.organization);
  }
  if (attributes.organizationalUnit !== undefined && attributes.organizationalUnit !== null) {
    add(OID_ORGANIZATIONAL_UNIT, "organizational unit (OU)", attributes.organizationalUnit);
  }
  add(OID_COMMON_NAME, "common name (CN)", attributes.commonName);
  return new x509.Name(rdns);
}

function checkAttribute(label: string, value: string): void {
  if (value.length === 0) {
    throw new RangeError(`The ${label} must not be empty`);
  }
  if ([...value].length > MAX_ATTRIBUTE_LENGTH) {
    throw new RangeError(
      `The ${label} "${value}" is longer than ${MAX_ATTRIBUTE_LENGTH} characters`,
    );
  }
}

const DNS_LABEL = "[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?";
const DNS_NAME = new RegExp(`^(?:\\*\\.)?${DNS_LABEL}(?:\\.${DNS_LABEL})*$`, "i");

/**
 * Classifies a server name as an IP address or a DNS name and checks its syntax. IPv6 addresses
 * may be written in brackets (`[::1]`); an IPv6 address ending in dotted IPv4 is rewritten to
 * hexadecimal groups. A DNS name may start with one wildcard label (`*.example.com`).
 *
 * @param name The name as a user typed it.
 * @returns The subject alternative name to put into a certificate.
 * @throws {RangeError} If the name is neither a valid IP address nor a valid DNS name.
 *
 * @example
 * ```ts
 * parseServerName("127.0.0.1"); // { type: "ip", value: "127.0.0.1" }
 * parseServerName("localhost"); // { type: "dns", value: "localhost" }
 * ```
 */
export function parseServerName(name: string): SubjectAltName {
  const unbracketed = /^\[(.*)\]$/.exec(name)?.[1] ?? name;
  if (isIPv4(unbracketed)) {
    return { type: "ip", value: unbracketed };
  }
  if (isIPv6(unbracketed)) {
    if (unbracketed.includes("%")) {
      throw new RangeError(
        `The IPv6 address "${name}" has a zone, which a certificate cannot hold`,
      );
    }
    return { type: "ip", value: embeddedIPv4ToHex(unbracketed) };
  }
  if (name.length <= 253 && DNS_NAME.test(name)) {
    return { type: "dns", value: name };
  }
  throw new RangeError(`"${name}" is neither an IP address nor a valid DNS name`);
}

/** `::ffff:1.2.3.4` → `::ffff:102:304`; addresses without a dotted tail are returned unchanged. */
function embeddedIPv4ToHex(address: string): string {
  const match = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(address);
  if (match === null) {
    return address;
  }
  const octets = (match[2] ?? "").split(".").map(Number);
  const [a = 0, b = 0, c = 0, d = 0] = octets;
  return `${match[1]}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
}

/** Formats a subject alternative name for messages: `DNS:localhost`, `IP:127.0.0.1`. */
export function formatSubjectAltName(san: SubjectAltName): string {
  return san.type === "dns" ? `DNS:${san.value}` : `IP:${san.value}`;
}
