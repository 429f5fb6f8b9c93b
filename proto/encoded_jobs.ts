/**
 * A Jobs response (GetJobs, ListJobs) built in its wire form from job entries encoded once each.
 * A page is filled by the encoded size of its entries (worker/api/list_jobs.ts), so each entry is
 * encoded to be measured anyway; encoding the whole response again through protobufjs doubled the
 * work, and an ended job's entry, which never changes again, can be kept and sent as it is.
 *
 * The `jobs` entries come first, then `countByStatus` and `nextPageToken`: protobuf decoders
 * accept fields in any order (see data_chunk.ts).
 *
 * @module
 */
import { Buffer } from "node:buffer";
// @ts-types="./gen/jobworker.d.ts"
import { jobworker } from "./gen/jobworker.js";
import { varintBytes, writeVarint } from "./varint.ts";

/** `repeated Job jobs = 1`: length-delimited. */
const TAG_JOBS = (1 << 3) | 2;

/** Bytes an encoded Job of `length` bytes takes as one `jobs` entry of a Jobs message. */
export function jobEntryBytes(length: number): number {
  return 1 + varintBytes(length) + length;
}

/**
 * A Jobs message whose encoding is done: what the server sends is `wire`. Its `jobs` array is
 * empty: the entries are only in `wire` (decode it to read them).
 */
export class EncodedJobs extends jobworker.Jobs {
  private constructor(
    /** The encoded message. */
    readonly wire: Buffer,
    countByStatus: Record<string, number>,
    nextPageToken: string,
  ) {
    super({ jobs: [], countByStatus, nextPageToken });
  }

  /** The response with `entries` (each an encoded Job, in order), the counts and the token. */
  static of(
    entries: readonly Uint8Array[],
    countByStatus: Record<string, number>,
    nextPageToken: string,
  ): EncodedJobs {
    const rest = jobworker.Jobs.encode({ jobs: [], countByStatus, nextPageToken }).finish();
    let size = rest.length;
    for (const entry of entries) size += jobEntryBytes(entry.length);
    const wire = Buffer.allocUnsafe(size);
    let at = 0;
    for (const entry of entries) {
      wire[at++] = TAG_JOBS;
      at = writeVarint(wire, at, entry.length);
      wire.set(entry, at);
      at += entry.length;
    }
    wire.set(rest, at);
    return new EncodedJobs(wire, countByStatus, nextPageToken);
  }
}
