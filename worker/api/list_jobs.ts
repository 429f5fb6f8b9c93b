/**
 * GetJobs and ListJobs pages: newest first, as many jobs as the page size allows and the server's
 * send limit holds, whatever the jobs' args and env; nextPageToken continues after the last one.
 *
 * Each entry is encoded once, to measure it and to send it (proto/encoded_jobs.ts). An ended job
 * never changes again, so its entry is kept ({@link EntryCache}): a client polling GetJobs while
 * hundreds of jobs come and go (issue 12's burst) costs the worker a copy per ended job, not a
 * conversion and an encoding.
 */
import { EncodedJobs, jobEntryBytes, jobworker } from "../../proto/service.ts";
import { END_STATES, type Job } from "../jobs/job.ts";
import type { JobManager } from "../jobs/manager.ts";
import type { JobFilter } from "../jobs/store.ts";
import { log } from "../log/logger.ts";
import { decodePageToken, encodePageToken } from "./page_token.ts";

/** Room kept for countByStatus, nextPageToken and framing. */
const ENVELOPE_BYTES = 2048;
/** Jobs read from the store at a time while a page fills. */
const BATCH = 256;
/** What the kept entries of ended jobs may take at most. */
const CACHE_BYTES = 16 * 1024 * 1024;

/**
 * Encoded list entries of ended jobs, least recently listed dropped first beyond `maxBytes`. The
 * key holds everything an entry depends on that could differ: the view (a viewer may see env
 * without values), the job, its status and output size.
 */
export class EntryCache {
  readonly #entries = new Map<string, Uint8Array>();
  #bytes = 0;

  constructor(readonly maxBytes = CACHE_BYTES) {}

  get size(): number {
    return this.#entries.size;
  }

  get(key: string): Uint8Array | undefined {
    const entry = this.#entries.get(key);
    if (entry !== undefined) {
      this.#entries.delete(key);
      this.#entries.set(key, entry);
    }
    return entry;
  }

  set(key: string, entry: Uint8Array): void {
    if (entry.length > this.maxBytes) return;
    const old = this.#entries.get(key);
    if (old !== undefined) this.#bytes -= old.length;
    this.#entries.delete(key);
    this.#entries.set(key, entry);
    this.#bytes += entry.length;
    for (const [oldest, bytes] of this.#entries) {
      if (this.#bytes <= this.maxBytes) break;
      this.#entries.delete(oldest);
      this.#bytes -= bytes.length;
    }
  }
}

/** How one caller sees a job in a list; `key` names the view (same key, same entry). */
export interface JobView {
  key: string;
  of(job: Job): jobworker.Job;
}

function encode(job: jobworker.Job): Uint8Array {
  return jobworker.Job.encode(job).finish();
}

/** The job's encoded entry, kept once it has ended. */
function entryOf(job: Job, view: JobView, cache: EntryCache | undefined): Uint8Array {
  if (cache === undefined || !END_STATES.includes(job.status)) return encode(view.of(job));
  const key = `${view.key}/${job.id}/${job.status}/${job.outputBytes}`;
  let entry = cache.get(key);
  if (entry === undefined) {
    // A copy of its own: protobufjs may hand out a view into a shared pool.
    entry = new Uint8Array(encode(view.of(job)));
    cache.set(key, entry);
  }
  return entry;
}

export interface PageRequest {
  filter: JobFilter;
  /** 0 = as many as fit. */
  pageSize: number;
  pageToken: string;
  /** The largest response the server may send. */
  maxBytes: number;
}

export function listPage(
  manager: JobManager,
  view: JobView,
  req: PageRequest,
  cache?: EntryCache,
): jobworker.Jobs {
  let cursor = decodePageToken(req.pageToken, req.filter, manager.lastSeq);
  const limit = req.pageSize > 0 ? req.pageSize : Infinity;
  const budget = req.maxBytes - ENVELOPE_BYTES;
  const entries: Uint8Array[] = [];
  let used = 0;
  let lastSeq: number | undefined;
  let more = false;
  fill: for (;;) {
    const page = manager.page(req.filter, Math.min(BATCH, limit - entries.length), cursor);
    for (const [i, job] of page.jobs.entries()) {
      let entry = entryOf(job, view, cache);
      let size = jobEntryBytes(entry.length);
      if (used + size > budget) {
        if (entries.length > 0) {
          more = true;
          break fill;
        }
        // One job larger than a whole response: send it without args and env (GetJob has them),
        // rather than a page that can never hold it.
        log.warn("job too large for a list response; listed without args and env", {
          id: job.id,
          bytes: size,
        });
        entry = encode(jobworker.Job.create({ ...view.of(job), args: [], env: [] }));
        size = jobEntryBytes(entry.length);
      }
      entries.push(entry);
      used += size;
      lastSeq = job.seq;
      if (entries.length >= limit) {
        more = i + 1 < page.jobs.length || page.more;
        break fill;
      }
    }
    if (!page.more || page.jobs.length === 0) break;
    cursor = page.jobs[page.jobs.length - 1]!.seq;
  }
  return EncodedJobs.of(
    entries,
    manager.countByStatus(req.filter),
    more && lastSeq !== undefined ? encodePageToken(lastSeq, req.filter) : "",
  );
}
