/**
 * The job manager's side of a reload (worker/runtime/reload.ts): wait until every live job is
 * simply running, hand the running jobs over to the next process of this worker, take them over in
 * that process, or go on as before when the exec failed.
 */
import type { CgroupManager, JobCgroup } from "../cgroups/types.ts";
import type { LaunchedProcess, Launcher } from "../runtime/launcher.ts";
import type { HandedJob, HandedRecord } from "../runtime/reexec.ts";
import type { OutputSinks } from "../runtime/output_pipe.ts";
import { log } from "../log/logger.ts";
import { Job, type JobRecord } from "./job.ts";
import type { JobEvents } from "./events.ts";
import type { JobStore } from "./store.ts";
import { OutputLog } from "./output_log.ts";
import { Stopper } from "./stopper.ts";
import { jobDir } from "./job_start.ts";
import { outputEnded, outputSinks } from "./job_output.ts";
import { stopOrphan } from "./adopt_orphan.ts";
import { delay, type Running } from "./running.ts";

/** What a reload reads and changes in the manager. */
export interface HandoverContext {
  stateDir: string;
  maxOutputBytes: number;
  store: JobStore;
  launcher: Launcher;
  cgroups: CgroupManager;
  events?: JobEvents;
  /** Jobs not yet ended and cleaned up, by id. */
  live: Map<string, Job>;
  /** Jobs whose processes exist, by id. */
  running: Map<string, Running>;
  /** Creates past the limit check that have not reached `running` yet. */
  starting(): number;
  /** Retries the records the store could not take; the jobs still unrecorded. */
  saveUnsaved(): Job[];
  runningOf(process: LaunchedProcess, cgroup: JobCgroup, stopper: Stopper): Running;
  armTimeout(job: Job, running: Running, at: number): void;
  /** Cleans up after the job once it ends. */
  watch(job: Job, running: Running, outputDone: Promise<unknown>): void;
}

/**
 * Waits (up to `ms`) until no job is starting or being cleaned up, so every live job is simply
 * running. False if that did not happen in time, or if `abort` fired first.
 */
export async function settle(ctx: HandoverContext, ms: number, abort?: AbortSignal) {
  const deadline = Date.now() + ms;
  const settled = () =>
    ctx.starting() === 0 &&
    [...ctx.running.values()].every((r) => !r.reaped) &&
    [...ctx.live.values()].every((j) => j.status === "RUNNING" && ctx.running.has(j.id));
  while (!settled()) {
    if (Date.now() > deadline || abort?.aborted) return false;
    await delay(10);
  }
  return true;
}

/**
 * Right before the exec: stops reading every job's output (what is not read yet stays in its pipe
 * for the new process) and describes each running job. Output pipes hand each read to the job's
 * log as it happens (worker/runtime/output_pipe.ts), so the positions recorded here are final only
 * because nothing awaits between this call and the exec: no read can land in between.
 */
export function handOver(ctx: HandoverContext): { jobs: HandedJob[]; unsaved: HandedRecord[] } {
  // Still RUNNING in the database: the new process would take them for jobs the stop of the
  // worker interrupted, and their real end (an exit code) would be lost. It writes them instead.
  const unsaved = ctx.saveUnsaved().map((job) => handedRecord(job.toRecord()));
  for (const { id } of unsaved) {
    log.warn("a job's final state is not recorded yet: the reloaded process writes it", { id });
  }
  const handed: HandedJob[] = [];
  for (const [id, running] of ctx.running) {
    const job = ctx.live.get(id)!;
    running.process.stdout.pause();
    running.process.stderr.pause();
    handed.push({
      id,
      pid: running.process.pid,
      pidfd: running.process.pidfd,
      // -1 for a pipe that ended: it is closed, and its number may be another descriptor's by now.
      stdoutFd: running.process.stdout.handedFd,
      stderrFd: running.process.stderr.handedFd,
      timeoutAt: running.timeoutAt ?? null,
      killAt: running.stopper.killAt ?? null,
      terminated: running.stopper.terminated,
      stopReason: job.stopReason ?? null,
      output: job.output!.state,
      outputLost: job.outputLost ?? null,
    });
  }
  return { jobs: handed, unsaved };
}

/** A record as it crosses the exec (JSON). */
export function handedRecord(record: JobRecord): HandedRecord {
  return {
    ...record,
    createTime: record.createTime.toISOString(),
    startTime: record.startTime?.toISOString() ?? null,
    endTime: record.endTime?.toISOString() ?? null,
  };
}

/** The job a handed record describes, in the new process. */
export function unsavedJob(handed: HandedRecord): Job {
  return Job.fromRecord({
    ...handed,
    createTime: new Date(handed.createTime),
    startTime: handed.startTime === null ? undefined : new Date(handed.startTime),
    endTime: handed.endTime === null ? undefined : new Date(handed.endTime),
  });
}

/** The exec failed: every job's output is read again. */
export function resumeOutput(ctx: HandoverContext): void {
  for (const running of ctx.running.values()) {
    running.process.stdout.resume();
    running.process.stderr.resume();
  }
}

/**
 * Takes over a job the previous process handed over; `reattach` opens its process's pipes with the
 * sinks given. False when the job could not be kept: it has no record (stopped, without
 * reattaching: adopt_orphan.ts).
 */
export function adoptJob(
  ctx: HandoverContext,
  handed: HandedJob,
  reattach: (sinks: OutputSinks) => LaunchedProcess,
): boolean {
  const record = ctx.store.get(handed.id);
  if (!record) {
    void stopOrphan(handed, ctx.launcher, ctx.cgroups);
    return false;
  }
  const job = Job.fromRecord(record);
  job.stopReason = handed.stopReason ?? undefined;
  job.outputLost = handed.outputLost ?? undefined;
  job.output = OutputLog.resume(
    `${jobDir(ctx.stateDir, job.id)}/output`,
    handed.output,
    ctx.maxOutputBytes,
  );
  if (handed.outputLost) job.output.finish();
  job.stopper = new Stopper();
  const process = reattach(outputSinks(job, ctx.events));
  const running = ctx.runningOf(process, ctx.cgroups.open(job.id), job.stopper);
  ctx.live.set(job.id, job);
  ctx.running.set(job.id, running);
  const outputDone = outputEnded(job, process);
  running.stopper.adopted();
  if (handed.terminated) running.stopper.markTerminated();
  if (handed.killAt !== null) running.stopper.killBy(handed.killAt);
  if (handed.timeoutAt !== null) ctx.armTimeout(job, running, handed.timeoutAt);
  ctx.watch(job, running, outputDone);
  return true;
}
