/**
 * ListJobs page tokens: where the next page starts (the seq of the last job sent) and a digest of
 * the filter it was made for, so a token is only accepted with the listing it came from.
 */
import type { JobFilter } from "../jobs/store.ts";
import { InvalidField } from "./validation.ts";

const PREFIX = "jw1";

/** FNV-1a, 32 bits: enough to tell filters apart, not a security measure. */
function digest(text: string): string {
  let h = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(text)) {
    h ^= byte;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(36);
}

function filterDigest(filter: JobFilter): string {
  return digest(JSON.stringify([[...filter.statuses ?? []].sort(), filter.owner ?? ""]));
}

export function encodePageToken(beforeSeq: number, filter: JobFilter): string {
  return btoa(`${PREFIX}.${beforeSeq}.${filterDigest(filter)}`).replace(/=+$/, "");
}

/**
 * The seq a page continues before; undefined for an empty token. `lastSeq` is the newest seq the
 * server gave: a token beyond it was not made by this server. Throws InvalidField.
 */
export function decodePageToken(
  token: string,
  filter: JobFilter,
  lastSeq: number,
): number | undefined {
  if (token === "") return undefined;
  let text = "";
  try {
    text = atob(token);
  } catch { /* not base64: reported below */ }
  const match = /^jw1\.(\d{1,15})\.([0-9a-z]+)$/.exec(text);
  if (!match || Number(match[1]) > lastSeq + 1) {
    throw new InvalidField("pageToken", "unknown to this server; list again without a pageToken");
  }
  if (match[2] !== filterDigest(filter)) {
    throw new InvalidField(
      "pageToken",
      "was made for a listing with other filters; use the same statuses and owner",
    );
  }
  return Number(match[1]);
}
