/**
 * The start of a job, from its spec to RUNNING: its output files, its durable record, its cgroup,
 * its init (claimed from the pool or cloned) and the init's answer. A job that cannot start leaves
 * nothing behind (record, files, cgroup) and the caller gets a JobError saying why.
 */
import type { CgroupManager, JobCgroup } from "../cgroups/types.ts";
import type { FileBatch } from "../cgroups/file_batch.ts";
import { errnoOf } from "../cgroups/files.ts";
import { LimitError } from "../cgroups/types.ts";
import type { InitFailure } from "../../init/spec.ts";
import { errnoName } from "../../init/shim/errno.ts";
import type { LaunchedProcess, Launcher } from "../runtime/launcher.ts";
import { log } from "../log/logger.ts";
import { Job, type JobSpec, type JobStatus } from "./job.ts";
import { JobError } from "./errors.ts";
import { OutputLog } from "./output_log.ts";
import { jobEnvironment } from "./environment.ts";
import { type JobStore, StoreWriteError } from "./store.ts";
import type { JobEvents } from "./events.ts";
import { outputEnded, outputSinks } from "./job_output.ts";
import { Stopper } from "./stopper.ts";
import { message, type Running } from "./running.ts";

/** Where a job's output files live under the state directory. */
export function jobDir(stateDir: string, id: string): string {
  return `${stateDir}/jobs/${id}`;
}

/**
 * Makes the job's directory and its empty output file in one call off the event loop (the file's
 * inode is made there: a wait for the filesystem's journal, up to a few ms while the disk is busy,
 * holds up no other job). A jobs directory gone since the start is made again.
 */
async function makeOutputFile(files: FileBatch, dir: string): Promise<void> {
  const make = () =>
    files.run(
      [{ kind: "privateDir", path: dir }, { kind: "privateFile", path: `${dir}/output` }],
      true,
    );
  let [madeDir, madeFile] = await make();
  if (madeDir!.error && errnoOf(madeDir!.error) === "ENOENT") {
    await Deno.mkdir(dir.slice(0, dir.lastIndexOf("/")), { recursive: true, mode: 0o700 });
    [madeDir, madeFile] = await make();
  }
  if (madeDir!.error) throw new Error(`making ${dir}: ${madeDir!.error.message}`);
  if (madeFile!.error) throw new Error(`making ${dir}/output: ${madeFile!.error.message}`);
}

/** What the start of a job uses and tells the manager. */
export interface StartContext {
  stateDir: string;
  /** How the job's output directory and file are made (file_batch.ts). */
  files: FileBatch;
  maxOutputBytes: number;
  store: JobStore;
  cgroups: CgroupManager;
  launcher: Launcher;
  events?: JobEvents;
  /** The next job's seq. */
  nextSeq(): number;
  /**
   * The job's record exists: it is live (`true`), or, having failed to start, no more (`false`;
   * its stopper is abandoned then).
   */
  setLive(job: Job, live: boolean): void;
  /**
   * What the manager holds for a launched job (the reaper's watch); `stopper` gets its target
   * there, and a stop asked for while the job was starting goes out.
   */
  runningOf(process: LaunchedProcess, cgroup: JobCgroup, stopper: Stopper): Running;
  /** The job's first process exists: it runs (for the limits), it no longer counts as starting. */
  launched(id: string, running: Running): void;
  /** The init answered (exec'd or failed): the next job may start (see start_gate.ts). */
  answered(): void;
  /** The end of a job (job_end.ts), for a job whose init failed. */
  finish(job: Job, running: Running, outputDone: Promise<unknown>): Promise<void>;
  /** Moves the job to `to` and records it at once. */
  transition(job: Job, to: JobStatus, reason?: string): void;
}

/** A job that reached RUNNING. */
export interface Started {
  job: Job;
  running: Running;
  /** Resolves when both output pipes reached EOF. */
  outputDone: Promise<unknown>;
}

/** Starts the job; resolves once it runs. `began`: performance.now() when its create began. */
export async function startJob(
  ctx: StartContext,
  spec: JobSpec,
  owner: string,
  began: number,
): Promise<Started> {
  const id = crypto.randomUUID();
  const dir = jobDir(ctx.stateDir, id);
  const job = new Job(id, ctx.nextSeq(), owner, spec);
  // Stops can come from the record's insert on; they are carried out once the job has processes.
  const stopper = job.stopper = new Stopper();
  // When each phase ended, in ms from the create's start: the log line says where a slow start
  // spent its time (make bench prints the slowest one's).
  const phasesMs: Record<string, number> = {};
  const phase = (name: string) =>
    phasesMs[name] = Math.round((performance.now() - began) * 100) / 100;
  try {
    await makeOutputFile(ctx.files, dir);
    job.output = OutputLog.create(`${dir}/output`, ctx.maxOutputBytes, true);
    phase("output");
  } catch (e) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw new JobError("resource-exhausted", `cannot store the job's output: ${message(e)}`);
  }
  const forget = async () => {
    ctx.setLive(job, false);
    stopper.abandon();
    job.output?.finish();
    try {
      ctx.store.delete(id);
    } catch (e) {
      log.error("cannot delete the record of a job that did not start", {
        id,
        error: message(e),
      });
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  // The record is durable before anything runs: a job a caller hears of is never forgotten.
  // It is live from its insert on, so a stop that finds it in a list meanwhile acts on this Job.
  ctx.setLive(job, true);
  // The job's cgroup is made while the record is being synced (an fdatasync on another thread):
  // nothing runs in it until both are done, and a record that cannot be made durable removes it.
  let cgroupMade: Promise<JobCgroup> | undefined;
  try {
    ctx.store.insert(job.toRecord());
    phase("record");
    cgroupMade = ctx.cgroups.create(id, spec.limits);
    cgroupMade.then(() => phase("cgroup"), () => {});
    await ctx.store.durable();
    phase("durable");
  } catch (e) {
    await cgroupMade?.then((made) => made.remove(), () => {}).catch(() => {});
    ctx.setLive(job, false);
    stopper.abandon();
    job.output.finish();
    if (e instanceof StoreWriteError) {
      // Written but not durable: no job may be left behind that the caller was not told of.
      try {
        ctx.store.delete(id);
      } catch { /* the record was not written at all */ }
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    if (e instanceof StoreWriteError) {
      throw new JobError("resource-exhausted", `cannot record the job: ${e.message}`);
    }
    throw e;
  }
  let cgroup: JobCgroup;
  try {
    cgroup = await cgroupMade;
  } catch (e) {
    await forget();
    if (e instanceof LimitError) throw new JobError("failed-precondition", e.message);
    throw e;
  }
  let process: LaunchedProcess;
  try {
    process = ctx.launcher.launch({
      jobId: id,
      command: spec.command,
      args: spec.args,
      env: jobEnvironment(id, spec.env, spec.user.home),
      workDir: spec.workDir,
      cgroupProcsFiles: cgroup.procsFiles,
      cloneInto: cgroup.cloneInto,
      user: { uid: spec.user.uid, gid: spec.user.gid, groups: spec.user.groups },
      network: spec.network,
      privileged: spec.privileged,
      init: spec.init,
    }, outputSinks(job, ctx.events));
  } catch (e) {
    await cgroup.remove().catch(() => {});
    await forget();
    throw new JobError("internal", `cannot start the job: ${message(e)}`);
  }
  phase("init");
  const running = ctx.runningOf(process, cgroup, stopper);
  ctx.launched(id, running);
  const outputDone = outputEnded(job, process);
  const failure = await process.started;
  phase("exec");
  ctx.answered();
  if (failure) {
    // Before its end is recorded: a stop waiting for this job answers NOT_FOUND, as the job is
    // forgotten right after.
    stopper.abandon();
    await ctx.finish(job, running, outputDone);
    await forget();
    throw startError(failure);
  }
  ctx.transition(job, "RUNNING");
  phase("running");
  const startMs = performance.now() - began;
  ctx.events?.started(job, startMs / 1000);
  log.info("job started", {
    id,
    owner,
    command: spec.command,
    pid: process.pid,
    pooled: process.pooled,
    direct: process.direct,
    intoCgroup: process.intoCgroup,
    startMs: Math.round(startMs * 100) / 100,
    phasesMs,
  });
  running.stopper.started();
  return { job, running, outputDone };
}

export function startError(failure: InitFailure): JobError {
  switch (failure.stage) {
    case "lookup":
    case "exec":
      return new JobError("invalid-argument", `command: ${failure.message}`);
    case "workdir":
      return new JobError("invalid-argument", `workDir: ${failure.message}`);
    case "cgroup":
      return new JobError("failed-precondition", failure.message);
    case "spawn": {
      // No process (or pipe) for the job: the host's limits when the kernel says so.
      const exhausted = ["EAGAIN", "ENOMEM", "EMFILE"].includes(errnoName(failure.errno));
      return new JobError(
        exhausted ? "resource-exhausted" : "internal",
        `the job could not be started: ${failure.message}`,
      );
    }
    default:
      return new JobError("internal", `the job could not be isolated: ${failure.message}`);
  }
}
