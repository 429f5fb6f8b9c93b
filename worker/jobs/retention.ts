/**
 * Forgetting ended jobs: one deleted by request, or those beyond the retention limits (how many
 * ended jobs are kept, and for how long). The record goes first, then the output: a record never
 * points at missing output.
 */
import { log } from "../log/logger.ts";
import { JobError } from "./errors.ts";
import { jobDir } from "./job_start.ts";
import type { JobStore } from "./store.ts";
import { message } from "./running.ts";

export interface RetentionContext {
  stateDir: string;
  store: JobStore;
  /** The job's record is gone. */
  forgotten(id: string): void;
}

/** Deletes an ended job's record, then its output. Throws JobError if the record stays. */
export async function forget(ctx: RetentionContext, id: string): Promise<void> {
  try {
    ctx.store.delete(id);
  } catch (e) {
    throw new JobError("resource-exhausted", `cannot delete the record: ${message(e)}`);
  }
  ctx.forgotten(id);
  // Streams still reading it keep their open handles; the files go when they close them.
  await Deno.remove(jobDir(ctx.stateDir, id), { recursive: true }).catch(() => {});
}

/**
 * Forgets the ended jobs beyond the newest `maxEnded`, and those that ended more than
 * `retentionMs` ago (0: no age limit).
 */
export function forgetExpired(ctx: RetentionContext, maxEnded: number, retentionMs: number): void {
  const endedBefore = retentionMs > 0 ? new Date(Date.now() - retentionMs) : undefined;
  let expired: string[];
  try {
    expired = ctx.store.expired(maxEnded, endedBefore);
  } catch (e) {
    log.warn("cannot apply the retention limits", { error: message(e) });
    return;
  }
  for (const id of expired) {
    forget(ctx, id).catch((e) =>
      log.warn("cannot forget an expired job", { id, error: message(e) })
    );
  }
}
