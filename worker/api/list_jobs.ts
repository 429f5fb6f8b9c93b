/**
 * GetJobs and ListJobs pages: newest first, as many jobs as the page size allows and the server's
 * send limit holds, whatever the jobs' args and env; nextPageToken continues after the last one.
 */
import { jobworker } from "../../proto/service.ts";
import type { Job } from "../jobs/job.ts";
import type { JobManager } from "../jobs/manager.ts";
import type { JobFilter } from "../jobs/store.ts";
import { log } from "../log/logger.ts";
import { decodePageToken, encodePageToken } from "./page_token.ts";

/** Room kept for countByStatus, nextPageToken and framing. */
const ENVELOPE_BYTES = 2048;
/** Jobs read from the store at a time while a page fills. */
const BATCH = 256;

function varintBytes(n: number): number {
  let bytes = 1;
  while (n >= 128) {
    n = Math.floor(n / 128);
    bytes++;
  }
  return bytes;
}

/** Bytes `job` takes as one `repeated Job jobs = 1` entry. */
function entryBytes(job: jobworker.Job): number {
  const n = jobworker.Job.encode(job).finish().length;
  return 1 + varintBytes(n) + n;
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
  view: (job: Job) => jobworker.Job,
  req: PageRequest,
): jobworker.Jobs {
  let cursor = decodePageToken(req.pageToken, req.filter, manager.lastSeq);
  const limit = req.pageSize > 0 ? req.pageSize : Infinity;
  const budget = req.maxBytes - ENVELOPE_BYTES;
  const jobs: jobworker.Job[] = [];
  let used = 0;
  let lastSeq: number | undefined;
  let more = false;
  fill: for (;;) {
    const page = manager.page(req.filter, Math.min(BATCH, limit - jobs.length), cursor);
    for (const [i, job] of page.jobs.entries()) {
      let entry = view(job);
      let size = entryBytes(entry);
      if (used + size > budget) {
        if (jobs.length > 0) {
          more = true;
          break fill;
        }
        // One job larger than a whole response: send it without args and env (GetJob has them),
        // rather than a page that can never hold it.
        log.warn("job too large for a list response; listed without args and env", {
          id: job.id,
          bytes: size,
        });
        entry = jobworker.Job.create({ ...entry, args: [], env: [] });
        size = entryBytes(entry);
      }
      jobs.push(entry);
      used += size;
      lastSeq = job.seq;
      if (jobs.length >= limit) {
        more = i + 1 < page.jobs.length || page.more;
        break fill;
      }
    }
    if (!page.more || page.jobs.length === 0) break;
    cursor = page.jobs[page.jobs.length - 1]!.seq;
  }
  return jobworker.Jobs.create({
    jobs,
    countByStatus: manager.countByStatus(req.filter),
    nextPageToken: more && lastSeq !== undefined ? encodePageToken(lastSeq, req.filter) : "",
  });
}
