/**
 * The steps that turn a freshly cloned process into a job, in order: one sequence for both ways a
 * job starts. `jobworker init` runs them as it goes (init/main.ts); the direct start records them
 * into a plan that jwstart, a small C program, runs in the job's new namespaces (init/direct_plan.ts,
 * init/shim/jwdirect.c). Either way a failed step is reported at its stage with `what` it was.
 */
import { dropPrivileges, type ProfileCalls, protectFilesystem } from "./profile.ts";
import type { InitFailure, InitSpec } from "./spec.ts";
import { type Shim, ShimError } from "./shim/ffi.ts";
import { quoted } from "../worker/log/quoted.ts";

export type Stage = InitFailure["stage"];

/** What a failed exec of the job's command is reported as (the exec step's `what`). */
export function execWhat(command: string): string {
  return `cannot execute ${quoted(command)}`;
}

/**
 * The report of the minimal init (jwinit.c) when it could not run the command: its child's exec
 * failed, or it had no child (its fork, or the pipe it makes before, failed).
 */
export interface MinimalInitReport {
  minimalInit: "execve" | "fork" | "pipe";
  errno: number;
}

/** Whether parsed status text is a {@link MinimalInitReport}. */
export function isMinimalInitReport(report: unknown): report is MinimalInitReport {
  const r = report as Partial<MinimalInitReport> | null;
  return typeof r === "object" && r !== null && !Array.isArray(r) &&
    (r.minimalInit === "execve" || r.minimalInit === "fork" || r.minimalInit === "pipe") &&
    isErrno(r.errno);
}

/**
 * The failure a {@link MinimalInitReport} stands for, for the job's command `command`: a failed exec
 * reads as the command's own failed exec would without jwinit (refused as the job's `command`); no
 * process for it is a failure of the start (a job's maxPids below 2 is refused before it starts,
 * worker/api/validation.ts, so this is the host's limits: the user's RLIMIT_NPROC, memory, pids).
 */
export function minimalInitFailure(command: string, report: MinimalInitReport): InitFailure {
  const { errno } = report;
  const why = new ShimError(report.minimalInit, errno).message;
  if (report.minimalInit === "execve") {
    return { stage: "exec", errno, message: `${execWhat(command)}: ${why}` };
  }
  return {
    stage: "spawn",
    errno,
    message: `the minimal init could not start a process for ${quoted(command)}: ${why}`,
  };
}

/**
 * The failure for status text the worker cannot make sense of (init's, jwstart's or jwinit's
 * report, garbled): a fault of the start, not of the job's command.
 */
export function unreadableReport(text: string): InitFailure {
  return {
    stage: "spawn",
    errno: 0,
    message: `the job's start sent a report the worker cannot read: ${quoted(text.slice(0, 200))}`,
  };
}

/** Whether `value` is an errno as the reports carry it: an integer, 0 or more. */
export function isErrno(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

/** The shim's calls a job's steps make (init makes them; the direct start's plan records them). */
export type StepCalls =
  & ProfileCalls
  & Pick<
    Shim,
    | "makeMountsPrivate"
    | "mountProc"
    | "setHostname"
    | "unshareNetwork"
    | "loopbackUp"
    | "joinCgroup"
    | "chdir"
  >;

export interface JobSteps {
  readonly calls: StepCalls;
  /** Runs `fn` as one step of the start: a failure inside it is reported as `what`, at `stage`. */
  step<T>(stage: Stage, what: string, fn: () => T): T;
  /** Opens the minimal init to exec later, while its directory is still visible. */
  openMinimalInit(path: string): void;
  /** Looks the command up as the job's user and execs it (under the minimal init if opened). */
  execCommand(spec: InitSpec): void;
}

/** The isolation no job's spec changes (a pooled init takes it before its spec comes). */
export function isolateMounts(t: JobSteps): void {
  t.step("mounts", "making mounts private", () => t.calls.makeMountsPrivate());
  t.step("proc", "mounting /proc", () => t.calls.mountProc());
}

/** Everything from the hostname to the exec, for the job `spec` describes. */
export function becomeJob(t: JobSteps, spec: InitSpec): void {
  t.step("hostname", "setting the hostname", () => t.calls.setHostname(spec.jobId));
  if (spec.network === "none") {
    if (spec.unshareNetwork) {
      t.step("network", "creating the network namespace", () => t.calls.unshareNetwork());
    }
    t.step("network", "bringing up loopback", () => t.calls.loopbackUp());
  }
  // Before the profile: it makes the cgroup files read-only and drops the rights to write them.
  for (const file of spec.cgroupProcsFiles) {
    t.step("cgroup", `joining the job's cgroup (${file})`, () => t.calls.joinCgroup(file));
  }
  // Opened before the masks, which may cover the directory it is installed in.
  if (spec.minimalInit !== null) {
    const path = spec.minimalInit;
    t.step("profile", "opening the minimal init", () => t.openMinimalInit(path));
  }
  if (!spec.privileged) {
    t.step("profile", "protecting the filesystem", () => protectFilesystem(t.calls, spec));
  }
  t.step("user", `becoming ${spec.user.uid}:${spec.user.gid}`, () => dropPrivileges(t.calls, spec));
  // From here on as the job's user: the checks below are the ones the job itself would meet.
  t.step("workdir", `entering workDir ${quoted(spec.workDir)}`, () => t.calls.chdir(spec.workDir));
  t.execCommand(spec);
}
