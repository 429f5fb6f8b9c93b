/**
 * Forgetting ended jobs: one deleted by request, or those beyond the retention limits (how many
 * ended jobs are kept, and for how long). The record goes first, then the output: a record never
 * points at missing output, but on a full disk (below).
 */
import { log } from "../log/logger.ts";
import { JobError } from "./errors.ts";
import { jobDir } from "./job_start.ts";
import { isStoreFull, type JobStore, StoreWriteError } from "./store.ts";
import { message } from "./running.ts";
import type { JobReaders } from "./readers.ts";

export interface RetentionContext {
  stateDir: string;
  store: JobStore;
  /** Jobs being read or just read (readers.ts): the limits leave them for later. */
  readers: JobReaders;
  /**
   * Jobs being forgotten whose record may still be in the store (its output is gone or going):
   * the manager answers for them as for forgotten jobs (NOT_FOUND), and each retention pass tries
   * their record's delete again. The value is true once forget() gave up on the record (a later
   * retention pass deletes it), false while forget() is under way.
   */
  forgetting: Map<string, boolean>;
  /** The job's record is gone. */
  forgotten(id: string): void;
}

/**
 * Deletes an ended job's record, then its output. Throws JobError if the record stays.
 *
 * On a full disk the database cannot take even a delete (SQLite needs room in its WAL), and the
 * output, which a job being forgotten loses either way, is what would make room: so when the
 * record cannot be deleted for want of space, the job is marked forgetting (from then on it is
 * answered for as forgotten: no reader sees its output cut short or empty), its output goes, and
 * the delete is tried again. Without that, a disk filled by job output could not be emptied
 * through the worker at all. Should the record still stay, each retention pass tries again. Any
 * other write failure (read-only, I/O error) leaves the job as it was.
 */
export async function forget(ctx: RetentionContext, id: string): Promise<void> {
  const dir = jobDir(ctx.stateDir, id);
  // Marked before anything is removed, and until all is: a reader opening the job's output
  // meanwhile is told it is gone rather than shown a part of it, or none, as if complete.
  ctx.forgetting.set(id, false);
  try {
    ctx.store.delete(id);
  } catch (e) {
    if (!(e instanceof StoreWriteError) || !isStoreFull(e)) {
      ctx.forgetting.delete(id);
      if (!(e instanceof StoreWriteError)) throw e;
      throw new JobError("unavailable", `cannot delete the job's record: ${message(e)}`);
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    try {
      ctx.store.delete(id);
    } catch (again) {
      ctx.forgetting.set(id, true);
      throw new JobError(
        "resource-exhausted",
        `cannot delete the record: ${
          message(again)
        }; its output was deleted to make room, the record goes at a later retention pass`,
      );
    }
    log.warn("the disk was full: a forgotten job's output was deleted before its record", { id });
  }
  ctx.forgotten(id);
  // Streams still reading it keep their open handles; the files go when they close them.
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  ctx.forgetting.delete(id);
}

/**
 * Per manager: forgetting failed and that was logged. Logged once until the first success: on a
 * full disk every pass (each job's end, every minute) would fail again for every expired job.
 */
const failing = new WeakSet<RetentionContext>();

function forgetFailed(ctx: RetentionContext, what: string, id: string, e: unknown): void {
  if (failing.has(ctx)) return;
  failing.add(ctx);
  log.warn(`cannot forget ${what} (logged again once it works)`, { id, error: message(e) });
}

function forgetWorked(ctx: RetentionContext): void {
  if (!failing.delete(ctx)) return;
  log.info("forgetting ended jobs works again");
}

/**
 * Forgets the ended jobs beyond the newest `maxEnded`, and those that ended more than
 * `retentionMs` ago (0: no age limit); a job someone reads or just read, and that ended less than
 * READ_HOLD_MS ago (ctx.readers), waits for a later pass. Jobs whose output went before their
 * record could (a full disk) have their record's delete tried again.
 */
export function forgetExpired(
  ctx: RetentionContext,
  maxEnded: number,
  retentionMs: number,
  now = Date.now(),
): void {
  for (const [id, recordLeft] of [...ctx.forgetting]) {
    if (!recordLeft) continue;
    try {
      ctx.store.delete(id);
      ctx.forgetting.delete(id);
      ctx.forgotten(id);
      forgetWorked(ctx);
    } catch (e) {
      forgetFailed(ctx, "the record of a job whose output is gone", id, e);
    }
  }
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
    if (ctx.forgetting.has(id)) continue;
    if (ctx.readers.has(id) && ctx.readers.held(id, ctx.store.get(id)?.endTime, now)) continue;
    forget(ctx, id).then(
      () => forgetWorked(ctx),
      (e) => forgetFailed(ctx, "an expired job", id, e),
    );
  }
}
