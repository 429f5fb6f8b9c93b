/**
 * What a start finds and settles. A job the record still shows as INITIALIZING or RUNNING was
 * running when the previous worker process died (its processes died with it: PR_SET_PDEATHSIG);
 * it is recorded FAILED, ended when this start noticed, with the output its files hold. Output
 * directories no record names (a create the crash interrupted) are removed. Jobs a reload handed
 * over are left alone: they still run. Stale cgroups are
 * the cgroup layer's business (cleanupStale).
 */
import { log } from "../log/logger.ts";
import { Job } from "./job.ts";
import { jobDir } from "./manager.ts";
import { OutputLog } from "./output_log.ts";
import { type JobStore, StoreWriteError } from "./store.ts";

export const WORKER_STOPPED_REASON =
  "the worker stopped while the job ran (found when the worker started again)";

export interface RecoveryResult {
  /** Jobs that were running and are now recorded FAILED. */
  failed: string[];
  /** Output directories without a record, removed. */
  orphans: number;
  /** Of `failed`, those whose new state the store could not take (a full disk): write them later. */
  unsaved: Job[];
}

export async function recover(
  store: JobStore,
  stateDir: string,
  now = new Date(),
  /** Jobs a reload handed over: they still run. */
  handedOver: ReadonlySet<string> = new Set(),
): Promise<RecoveryResult> {
  const failed: string[] = [];
  const unsaved: Job[] = [];
  for (const record of store.unended()) {
    if (handedOver.has(record.id)) continue;
    const job = Job.fromRecord(record);
    try {
      const output = OutputLog.open(`${jobDir(stateDir, job.id)}/output`);
      job.output = output;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) {
        log.warn("cannot read the output of an interrupted job", { id: job.id, error: String(e) });
      }
    }
    job.transition("FAILED", WORKER_STOPPED_REASON, now);
    job.output = undefined;
    try {
      store.update(job.toRecord());
    } catch (e) {
      if (!(e instanceof StoreWriteError)) throw e;
      log.error("cannot record the job's state; will retry", { id: job.id, error: e.message });
      unsaved.push(job);
    }
    failed.push(job.id);
  }
  let orphans = 0;
  try {
    for await (const entry of Deno.readDir(`${stateDir}/jobs`)) {
      if (!entry.isDirectory || store.get(entry.name)) continue;
      await Deno.remove(`${stateDir}/jobs/${entry.name}`, { recursive: true }).catch(() => {});
      orphans++;
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  if (failed.length > 0) {
    log.warn("jobs that were running when the worker stopped are recorded FAILED", {
      count: failed.length,
    });
  }
  if (orphans > 0) log.info("removed output without a job record", { count: orphans });
  return { failed, orphans, unsaved };
}
