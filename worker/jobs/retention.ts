/**
 * Forgetting ended jobs: one deleted by request, or those beyond the retention limits (how many
 * ended jobs are kept, and for how long). The record goes first, then the output: a record never
 * points at missing output, but on a full disk (below).
 */
import { log } from "../log/logger.ts";
import { JobError } from "./errors.ts";
import { jobDir } from "./job_start.ts";
import { type JobStore, StoreWriteError } from "./store.ts";
import { message } from "./running.ts";
import type { JobReaders } from "./readers.ts";

export interface RetentionContext {
  stateDir: string;
  store: JobStore;
  /** Jobs being read or just read (readers.ts): the limits leave them for later. */
  readers: JobReaders;
  /** The job's record is gone. */
  forgotten(id: string): void;
}

/**
 * Deletes an ended job's record, then its output. Throws JobError if the record stays.
 *
 * On a full disk the database cannot take even a delete (SQLite needs room in its WAL), and the
 * output, which a job being forgotten loses either way, is what would make room: so when the
 * record cannot be deleted, the output goes first and the delete is tried again. Without that, a
 * disk filled by job output could not be emptied through the worker at all: neither DeleteJob nor
 * the retention limits could forget anything. Should the record still stay, it remains listed
 * with its output gone (a stream of it answers NOT_FOUND) and the limits try again later.
 */
export async function forget(ctx: RetentionContext, id: string): Promise<void> {
  const dir = jobDir(ctx.stateDir, id);
  try {
    ctx.store.delete(id);
  } catch (e) {
    if (!(e instanceof StoreWriteError)) throw e;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    try {
      ctx.store.delete(id);
    } catch (again) {
      throw new JobError(
        "resource-exhausted",
        `cannot delete the record: ${message(again)}; its output was deleted to make room`,
      );
    }
    log.warn("the job database was full: a forgotten job's output was deleted before its record", {
      id,
    });
  }
  ctx.forgotten(id);
  // Streams still reading it keep their open handles; the files go when they close them.
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}

/**
 * Forgets the ended jobs beyond the newest `maxEnded`, and those that ended more than
 * `retentionMs` ago (0: no age limit); a job someone reads or just read (ctx.readers) waits for
 * a later pass.
 */
export function forgetExpired(ctx: RetentionContext, maxEnded: number, retentionMs: number): void {
  const now = Date.now();
  const endedBefore = retentionMs > 0 ? new Date(now - retentionMs) : undefined;
  let expired: string[];
  try {
    expired = ctx.store.expired(maxEnded, endedBefore);
  } catch (e) {
    log.warn("cannot apply the retention limits", { error: message(e) });
    return;
  }
  ctx.readers.prune(now);
  for (const id of expired) {
    if (ctx.readers.held(id, now)) continue;
    forget(ctx, id).catch((e) =>
      log.warn("cannot forget an expired job", { id, error: message(e) })
    );
  }
}
