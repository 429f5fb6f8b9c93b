/**
 * `jobworker init`: the first program of a job, PID 1 of its new namespaces. It finishes the
 * isolation the worker's clone3 started, joins the job's cgroup and execs the job's command, so
 * no jobworker process stays alive beside the job. See init/spec.ts for the handshake.
 */
import {
  type InitFailure,
  type InitSpec,
  JOB_STDERR_FD,
  JOB_STDOUT_FD,
  POOL_READY,
  SLOT_FD_BASE,
  SPEC_FD,
  STATUS_FD,
} from "./spec.ts";
import { Shim, ShimError, type SymbolName } from "./shim/ffi.ts";
import { resolveCommand } from "./resolve_command.ts";
import {
  becomeJob,
  execWhat,
  isolateMounts,
  type JobSteps,
  type Stage,
  type StepCalls,
} from "./job_steps.ts";

const SPEC_LIMIT = 64 * 1024 * 1024;

class StageError extends Error {
  constructor(readonly stage: InitFailure["stage"], readonly errno: number, message: string) {
    super(message);
  }
}

function step<T>(stage: Stage, what: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof StageError) throw e;
    const errno = e instanceof ShimError ? e.errno : 0;
    throw new StageError(stage, errno, `${what}: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/** The job's spec; null when the pipe closed without one (a pooled init no longer wanted). */
function readSpec(shim: Shim): InitSpec | null {
  const bytes = shim.readAll(SPEC_FD, SPEC_LIMIT);
  if (bytes.length === 0) return null;
  return JSON.parse(new TextDecoder().decode(bytes)) as InitSpec;
}

/**
 * Joins the pooled init's slot cgroups through the descriptors the worker handed it: after Deno's
 * start (whose memory stays charged to the worker's cgroup, as v1 moves no charges), before
 * POOL_READY (so the kernel's cgroup move is paid while no job waits).
 */
function joinSlot(shim: Shim, slots: number): void {
  for (let fd = SLOT_FD_BASE; fd < SLOT_FD_BASE + slots; fd++) {
    step("cgroup", "joining the pool slot's cgroup", () => {
      shim.writeAll(fd, new TextEncoder().encode("0"));
      shim.close(fd);
    });
  }
}

/**
 * The shim's functions a default job's start calls once its spec is here. Deno binds each at its
 * first call (about 0.1 ms of CPU apiece): a pooled init binds them while it waits instead, so the
 * claiming job does not wait for that. (Those only some jobs need are bound when they do.)
 */
const JOB_CALLS = [
  "jw_set_hostname",
  "jw_join_cgroup",
  "jw_private_dev",
  "jw_mask",
  "jw_bind_readonly",
  "jw_make_readonly",
  "jw_limit_capabilities",
  "jw_set_user",
  "jw_chdir",
  "jw_access",
  "jw_exec",
] as const satisfies readonly SymbolName[];

/** The job's steps, run here and now through the shim. */
class LiveSteps implements JobSteps {
  #initFd = -1;
  readonly calls: StepCalls;

  constructor(private readonly shim: Shim) {
    this.calls = shim;
  }

  step<T>(stage: Stage, what: string, fn: () => T): T {
    return step(stage, what, fn);
  }

  openMinimalInit(path: string): void {
    this.#initFd = this.shim.openPath(path);
  }

  execCommand(spec: InitSpec): void {
    const shim = this.shim;
    const path = resolveCommand(spec.command, spec.env, (p, mode) => shim.access(p, mode));
    if (!path.ok) throw new StageError("lookup", path.errno, path.message);
    const argv = [spec.command, ...spec.args];
    const initFd = this.#initFd;
    step(
      "exec",
      execWhat(spec.command),
      () =>
        initFd < 0 ? shim.exec(path.path, argv, spec.env, JOB_STDOUT_FD, JOB_STDERR_FD) : shim.exec(
          "jwinit",
          ["jwinit", path.path, ...argv],
          spec.env,
          JOB_STDOUT_FD,
          JOB_STDERR_FD,
          initFd,
        ),
    );
  }
}

/** Becomes the job; returns only when pooled and dismissed before any job claimed it. */
function become(shim: Shim, pooled: boolean, slots: number): void {
  const steps = new LiveSteps(shim);
  if (pooled) {
    isolateMounts(steps);
    joinSlot(shim, slots);
    shim.bind(JOB_CALLS);
    shim.writeAll(STATUS_FD, new TextEncoder().encode(POOL_READY));
  }
  const spec = step("spec", "reading the job spec", () => readSpec(shim));
  if (spec === null) {
    if (pooled) return;
    throw new StageError("spec", 0, "reading the job spec: the worker sent none");
  }
  if (!pooled) isolateMounts(steps);
  becomeJob(steps, spec);
}

/**
 * Whether this process is where the worker's clone puts init: PID 1 of a new PID namespace, in a
 * mount namespace of its own. Until init mounts its own, /proc is the parent's, so its PID 1 is
 * the parent side's init: sharing that process's mount namespace means none was made for us (as
 * with `unshare --pid --fork jobworker init` run by hand). When /proc/1 cannot be read, only the
 * PID is checked.
 */
function inOwnNamespaces(): boolean {
  if (Deno.pid !== 1) return false;
  try {
    return Deno.readLinkSync("/proc/self/ns/mnt") !== Deno.readLinkSync("/proc/1/ns/mnt");
  } catch {
    return true;
  }
}

/**
 * Runs init; returns only when the job could not be started (exit code 127), or with 0 when a
 * pooled init was dismissed without a job.
 */
export function runInit(args: string[]): number {
  const shimAt = args.indexOf("--shim");
  const shimPath = args[shimAt + 1];
  // Outside the namespaces the worker's clone made, making mounts private and mounting /proc would
  // change the caller's (as root, by hand, `init --pooled` replaced the host's /proc).
  if (shimAt < 0 || !shimPath || !inOwnNamespaces()) {
    console.error("jobworker init is started by the worker for each job; it is not run by hand");
    return 2;
  }
  const shim = new Shim(shimPath);
  try {
    const slotsAt = args.indexOf("--slots");
    become(shim, args.includes("--pooled"), slotsAt < 0 ? 0 : Number(args[slotsAt + 1]) || 0);
    return 0;
  } catch (e) {
    const failure: InitFailure = e instanceof StageError
      ? { stage: e.stage, errno: e.errno, message: e.message }
      : { stage: "exec", errno: 0, message: e instanceof Error ? e.message : String(e) };
    try {
      shim.writeAll(STATUS_FD, new TextEncoder().encode(JSON.stringify(failure)));
    } catch {
      // The worker is gone; nobody is left to tell.
    }
  }
  return 127;
}
