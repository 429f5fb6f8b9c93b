/**
 * Turns requests into validated values. Every failure names the field, for INVALID_ARGUMENT.
 */
import { jobworker } from "../../proto/service.ts";
import type { Limits } from "../cgroups/types.ts";
import { JOB_STATUSES, type JobSpec, type JobStatus } from "../jobs/job.ts";
import { resolveUser, UnknownUser } from "../runtime/users.ts";
import { quote } from "../log/quoted.ts";

/** A request field that is not acceptable. */
export class InvalidField extends Error {
  constructor(readonly field: string, problem: string) {
    super(`${field}: ${problem}`);
    this.name = "InvalidField";
  }
}

/** A request the server's policy refuses, for PERMISSION_DENIED; the message says how to allow it. */
export class NotAllowed extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NotAllowed";
  }
}

/** What the server's configuration allows in a CreateJob. */
export interface JobPolicy {
  /** Who a job runs as when it does not say ("root", a name, "uid[:gid]"). */
  defaultUser: string;
  /** JOB_WORKER_ALLOW_PRIVILEGED. */
  allowPrivileged: boolean;
}

export const DEFAULT_POLICY: JobPolicy = { defaultUser: "root", allowPrivileged: false };

/** Bounds well under the kernel's execve limits (128 KiB a string, 2 MiB in all). */
const MAX_STRING_BYTES = 128 * 1024;
const MAX_TOTAL_BYTES = 512 * 1024;
const MAX_ENTRIES = 4096;

/** The worker hands the request to init as JSON through a 1 MiB pipe; escapes make it grow. */
const MAX_ENCODED_BYTES = 960 * 1024;
/** Longest timer a JavaScript runtime keeps (2^31 - 1 ms). */
const MAX_SECONDS = 2_147_483;
/** Longest idempotency key (the contract's limit). */
const MAX_REQUEST_ID = 128;
/** The kernel's PID_MAX_LIMIT. */
const MAX_PIDS = 4_194_304;

const byteLength = (s: string) => new TextEncoder().encode(s).length;

function checkString(field: string, value: string): void {
  if (value.includes("\0")) throw new InvalidField(field, "must not contain NUL bytes");
  if (byteLength(value) > MAX_STRING_BYTES) {
    throw new InvalidField(field, `longer than ${MAX_STRING_BYTES} bytes`);
  }
}

function nonNegative(field: string, value: number | null | undefined, max = 2 ** 31 - 1): number {
  const n = value ?? 0;
  if (!Number.isInteger(n) || n < 0) throw new InvalidField(field, `must be >= 0, got ${n}`);
  if (n > max) throw new InvalidField(field, `must be at most ${max}, got ${n}`);
  return n;
}

/** The least maxPids of an `init: true` job: the minimal init is one of its processes. */
export const MIN_PIDS_WITH_INIT = 2;

/** Validates a CreateJobReq and resolves 0 limits to the server's defaults. */
export function jobSpecFrom(
  req: jobworker.ICreateJobReq,
  defaults: Limits,
  policy: JobPolicy = DEFAULT_POLICY,
): JobSpec {
  const command = req.command ?? "";
  if (command.trim() === "") throw new InvalidField("command", "must not be empty");
  checkString("command", command);
  const args = req.args ?? [];
  const env = req.env ?? [];
  if (args.length > MAX_ENTRIES) throw new InvalidField("args", `more than ${MAX_ENTRIES} entries`);
  if (env.length > MAX_ENTRIES) throw new InvalidField("env", `more than ${MAX_ENTRIES} entries`);
  args.forEach((a, i) => checkString(`args[${i}]`, a));
  env.forEach((e, i) => {
    checkString(`env[${i}]`, e);
    const eq = e.indexOf("=");
    if (eq < 0) throw new InvalidField(`env[${i}]`, `${quote(e)} is not KEY=VALUE`);
    if (eq === 0) throw new InvalidField(`env[${i}]`, "the name before '=' is empty");
  });
  const total = [command, ...args, ...env].reduce((n, s) => n + byteLength(s) + 1, 0);
  if (total > MAX_TOTAL_BYTES) {
    throw new InvalidField("args", `command, args and env exceed ${MAX_TOTAL_BYTES} bytes`);
  }
  if (byteLength(JSON.stringify([command, args, env])) > MAX_ENCODED_BYTES) {
    throw new InvalidField("args", "command, args and env are too large once encoded");
  }
  const workDir = req.workDir || "/";
  checkString("workDir", workDir);
  if (!workDir.startsWith("/")) {
    throw new InvalidField("workDir", `must be an absolute path, got ${quote(workDir)}`);
  }
  const timeoutSeconds = nonNegative("timeoutSeconds", req.timeoutSeconds, MAX_SECONDS);
  const requestId = req.requestId ?? "";
  if (requestId.length > MAX_REQUEST_ID) {
    throw new InvalidField("requestId", `longer than ${MAX_REQUEST_ID} characters`);
  }
  if (!/^[\x20-\x7e]*$/.test(requestId)) {
    throw new InvalidField("requestId", "must be printable ASCII characters only");
  }
  const limit = (field: string, value: number | null | undefined, fallback: number, max?: number) =>
    nonNegative(field, value, max) || fallback;
  const network = req.network || "host";
  if (network !== "host" && network !== "none") {
    throw new InvalidField("network", `must be "host" or "none", got "${network.slice(0, 64)}"`);
  }
  const userText = req.user || policy.defaultUser;
  checkString("user", userText);
  let user;
  try {
    user = resolveUser(userText);
  } catch (e) {
    if (e instanceof UnknownUser) throw new InvalidField("user", e.message);
    throw e;
  }
  const privileged = req.privileged === true;
  if (privileged && !policy.allowPrivileged) {
    throw new NotAllowed(
      "privileged: this server does not run privileged jobs (every capability, no masks); " +
        "start it with JOB_WORKER_ALLOW_PRIVILEGED=1 to allow them",
    );
  }
  const init = req.init === true;
  const pids = limit("maxPids", req.maxPids, defaults.pids, MAX_PIDS);
  if (init && pids > 0 && pids < MIN_PIDS_WITH_INIT) {
    // The minimal init is a process of the job: with one process allowed, the command gets none.
    const given = (req.maxPids ?? 0) > 0
      ? `maxPids is ${pids}`
      : `the server's default maxPids (JOB_WORKER_DEFAULT_PIDS) is ${pids}`;
    throw new InvalidField(
      "maxPids",
      `init: true needs at least ${MIN_PIDS_WITH_INIT} processes (the minimal init and the ` +
        `command), but ${given}; ask for a larger maxPids or leave init off`,
    );
  }
  return {
    command,
    args,
    env,
    workDir,
    timeoutSeconds,
    requestId,
    user,
    network,
    privileged,
    init,
    limits: {
      cpuPercent: limit("maxCPU", req.maxCPU, defaults.cpuPercent),
      memoryMiB: limit("maxMemory", req.maxMemory, defaults.memoryMiB),
      ioBps: limit("maxIOBPS", req.maxIOBPS, defaults.ioBps),
      pids,
    },
  };
}

export function graceFrom(req: jobworker.IStopJobReq): number {
  return nonNegative("graceSeconds", req.graceSeconds, MAX_SECONDS);
}

export function offsetFrom(req: jobworker.IGetJobsStreamReq): number {
  const offset = Number(req.offset ?? 0);
  if (offset < 0) throw new InvalidField("offset", `must be >= 0, got ${offset}`);
  if (!Number.isSafeInteger(offset)) {
    throw new InvalidField("offset", `must be at most ${Number.MAX_SAFE_INTEGER}, got ${offset}`);
  }
  return offset;
}

/** ListJobs' page size: 0 = as many as fit. */
export function pageSizeFrom(req: jobworker.IListJobsReq): number {
  return nonNegative("pageSize", req.pageSize);
}

/** ListJobs' status filter as names; UNSPECIFIED or unknown values are refused. */
export function statusesFrom(req: jobworker.IListJobsReq): JobStatus[] {
  return (req.statuses ?? []).map((value, i) => {
    const name = STATUS_BY_NUMBER.get(value);
    if (!name) throw new InvalidField(`statuses[${i}]`, `${value} is not a job status`);
    return name;
  });
}

const STATUS_BY_NUMBER = new Map<number, JobStatus>(
  JOB_STATUSES.map((name) => [jobworker.JobStatus[name], name]),
);
