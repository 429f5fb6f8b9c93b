/**
 * The direct start: a job's first process made ready by jwstart (init/shim/jwdirect.c), a small
 * static program the shim's clone execs in the job's new namespaces, from a plan of init's own steps
 * (init/direct_plan.ts): no `jobworker init`, and so no Deno start, on the job's start path. What
 * the job gets is the same either way; only which program takes the steps differs.
 */
import { type Shim, ShimError } from "../../init/shim/ffi.ts";
import type { InitFailure, InitSpec } from "../../init/spec.ts";
import { directFailure, directPlan } from "../../init/direct_plan.ts";
import {
  closeQuietly,
  MAX_SPEC_BYTES,
  MAX_STATUS_BYTES,
  OUTPUT_PIPE_SIZE,
  pipeMaker,
  PipeText,
  statusOverflow,
} from "./init_process.ts";

export interface DirectProcess {
  pid: number;
  pidfd: number;
  outR: number;
  errR: number;
  /** Settles at the exec of the command (null) or with why a step failed. */
  started: Promise<InitFailure | null>;
  /** Whether the clone placed it in the job's cgroup (its plan joins none). */
  intoCgroup: boolean;
  /** Why the kernel refused the clone into the job's cgroup (errno), when it did. */
  refused?: number;
}

/**
 * Clones the job's first process into new namespaces, running `starter` (jwstart) with the plan
 * for `spec`. Throws ShimError when the process cannot be created at all, RangeError when the plan
 * does not fit its pipe (nothing is left open or running then).
 *
 * With `cgroupFd` (the job's cgroup v2 directory, open; the caller closes it) the process is born
 * in the job's cgroup and its plan has no join step: on v2 a write to cgroup.procs always takes
 * the kernel's global migration lock, whose first writer after a quiet moment waits for an RCU
 * grace period (see jwdirect.c's join_cgroup). If the kernel refuses that clone (older than 5.7, or
 * a cgroup that takes no process: removed, "domain invalid"), the start is made again as
 * without it, jwstart joining `spec.cgroupProcsFiles`: a job the join fails for fails as it always
 * did ("joining the job's cgroup"), and one it works for starts.
 *
 * What the job is charged for changes a little: jwstart's exec and its first steps (reading the
 * plan, the mounts made private, a fresh /proc, hostname, loopback) now run in the job's cgroup,
 * under its CPU, memory and pids limits, where a join charged only the steps after it. That is a
 * small static program's work for the job alone (about 0.5 MiB at its peak, freed at the command's
 * exec; no process beyond the job's own first one; its whole run about 1 ms on the host here),
 * unlike a `jobworker init`'s Deno start, which is why init still joins only right before its exec
 * (init/spec.ts). A job limited to a sliver of a CPU may wait for its next CPU period during these
 * steps, as it already could during the later ones: the limit holds from the job's first
 * instruction, its start included.
 */
export function spawnDirect(
  shim: Shim,
  starter: string,
  spec: InitSpec,
  cgroupFd = -1,
): DirectProcess {
  let refused: number | undefined;
  if (cgroupFd >= 0) {
    try {
      const placed = { ...spec, cgroupProcsFiles: [] };
      return { ...spawnStarter(shim, starter, placed, cgroupFd), intoCgroup: true };
    } catch (e) {
      // Nothing was started and every descriptor of that attempt is closed: start as without.
      if (!(e instanceof ShimError) || e.call !== "clone3") throw e;
      refused = e.errno;
    }
  }
  return { ...spawnStarter(shim, starter, spec, -1), intoCgroup: false, refused };
}

function spawnStarter(
  shim: Shim,
  starter: string,
  spec: InitSpec,
  cgroupFd: number,
): Omit<DirectProcess, "intoCgroup" | "refused"> {
  const plan = directPlan(spec);
  const { open, pipe } = pipeMaker(shim);
  try {
    const [outR, outW] = pipe(OUTPUT_PIPE_SIZE);
    const [errR, errW] = pipe(OUTPUT_PIPE_SIZE);
    const [planR, planW, planCapacity] = pipe(MAX_SPEC_BYTES);
    // Written before the clone, whole: jwstart reads it to EOF.
    if (plan.bytes.length > planCapacity) {
      throw new RangeError(
        `job plan of ${plan.bytes.length} bytes exceeds the pipe's ${planCapacity}`,
      );
    }
    shim.writeAll(planW, plan.bytes);
    open.splice(open.indexOf(planW), 1);
    shim.close(planW);
    const [statusR, statusW] = pipe();
    // Read from now on (before the clone, so nothing can fail between it and the return).
    const status = new PipeText(statusR, MAX_STATUS_BYTES);
    open.splice(open.indexOf(statusR), 1);
    let child: { pid: number; pidfd: number };
    try {
      // Layout: see init/shim/jwdirect.c (negative = /dev/null).
      child = shim.spawn(
        starter,
        ["jwstart"],
        [],
        [-1, outW, errW, planR, statusW],
        spec.network === "none",
        cgroupFd,
      );
    } catch (e) {
      status.destroy();
      throw e;
    }
    closeQuietly(shim, [outW, errW, planR, statusW]);
    return {
      ...child,
      outR,
      errR,
      started: status.closed.then((text) => {
        if (status.overflowed) return statusOverflow();
        return text === "" ? null : directFailure(plan, text);
      }),
    };
  } catch (e) {
    closeQuietly(shim, open);
    throw e;
  }
}
