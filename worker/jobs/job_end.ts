/**
 * The end of a job: waits for its first process to be reaped, makes sure nothing of it is left in
 * its cgroup, drains its output, takes its final usage, removes its cgroup and records how it
 * ended (the transition, with a reason a person can read).
 */
import { log } from "../log/logger.ts";
import { signalName } from "../../proto/signals.ts";
import type { Job, JobStatus } from "./job.ts";
import type { JobEvents } from "./events.ts";
import type { LoopTurns } from "./turns.ts";
import { recordedSignal } from "./pid1_term.ts";
import { drainOutput } from "./job_output.ts";
import { delay, type Running, ZERO_USAGE } from "./running.ts";

/** What the end of a job changes in the manager. */
export interface EndContext {
  /** Heavy synchronous sections take turns on the event loop (see turns.ts). */
  turns: LoopTurns;
  events?: JobEvents;
  /** Moves the job to `to` and records it at once. */
  transition(job: Job, to: JobStatus, reason?: string): void;
  /** The job's processes and cgroup are gone: it no longer runs. */
  cleanedUp(id: string): void;
  /** The job's end is recorded: it is no longer live. */
  ended(id: string): void;
}

/** Waits for the job's end, then records how it ended and removes what it used. */
export async function finishJob(
  ctx: EndContext,
  job: Job,
  running: Running,
  outputDone: Promise<unknown>,
): Promise<void> {
  const exited = await running.exited;
  running.defaultTerm?.cancel();
  const status = {
    ...exited,
    signal: recordedSignal(running.defaultTerm ?? undefined, exited.signal),
  };
  clearTimeout(running.timeout);
  running.stopper.cancel();
  // PID 1 is gone, so the kernel kills the rest of the namespace; make sure through the cgroup.
  for (let i = 0; i < 250 && !running.cgroup.isEmpty(); i++) {
    if (i % 25 === 0) running.cgroup.killAll();
    await delay(20);
  }
  const outputComplete = await drainOutput(running.process, outputDone);
  if (!outputComplete) {
    log.warn("job output still open after its processes ended", { id: job.id });
    job.output?.markIncomplete();
  }
  await ctx.turns.next();
  try {
    const final = await running.cgroup.final({ thenRemove: true });
    job.finalUsage = { ...final.usage, memoryBytes: 0, pids: 0 };
    job.oomKilled = final.oomKilled;
  } catch (e) {
    log.warn("cannot read the job's final usage", { id: job.id, error: String(e) });
    job.finalUsage = ZERO_USAGE;
  }
  try {
    await running.cgroup.remove();
  } catch (e) {
    // Still busy: a process the quick emptiness check could not see (on v1 one that left the pids
    // hierarchy alone). Everything in the cgroup is killed, and it is removed once more.
    log.warn("the job's cgroup was still busy at its end; killing what is left", {
      id: job.id,
      error: String(e),
    });
    await running.cgroup.killAll();
    await running.cgroup.remove().catch((e) =>
      log.error("cannot remove the job's cgroup", { id: job.id, error: String(e) })
    );
  }
  ctx.cleanedUp(job.id);
  running.process.release();
  job.exit = { exitCode: status.exitCode ?? -1, signal: status.signal ?? 0 };
  if (job.status === "INITIALIZING") {
    ctx.transition(job, "FAILED", "the job could not start");
    job.output?.finish();
    ctx.ended(job.id);
    ctx.events?.ended(job);
    return;
  }
  const how =
    (status.signal !== null
      ? `killed by ${signalName(status.signal)}`
      : `exited with code ${status.exitCode}`) +
    (outputComplete ? "" : "; output may be incomplete: a process outside the job held its pipe");
  const lost = job.outputLost
    ? `; output from byte ${job.outputLost.offset} on was lost (${job.outputLost.error})`
    : "";
  if (job.stopReason !== undefined) {
    ctx.transition(job, "STOPPED", `${job.stopReason}; ${how}${lost}`);
  } else if (job.oomKilled) {
    ctx.transition(
      job,
      "FAILED",
      `killed by the OOM killer: memory limit ${job.spec.limits.memoryMiB} MiB; ${how}${lost}`,
    );
  } else if (status.exitCode === 0) {
    ctx.transition(job, "COMPLETED", how + lost);
  } else {
    ctx.transition(job, "FAILED", how + lost);
  }
  // Only now do streams of the job end: a client that then asks sees how the job ended.
  job.output?.finish();
  ctx.ended(job.id);
  log.info("job ended", { id: job.id, status: job.status, reason: job.reason });
  ctx.events?.ended(job);
}
