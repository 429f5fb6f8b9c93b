/**
 * The direct start: a job's first process made ready by jwstart (init/shim/jwdirect.c), a small
 * static program the shim's clone execs in the job's new namespaces, from a plan of init's own steps
 * (init/direct_plan.ts): no `jobworker init`, and so no Deno start, on the job's start path. What
 * the job gets is the same either way; only which program takes the steps differs.
 */
import type { Shim } from "../../init/shim/ffi.ts";
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
}

/**
 * Clones the job's first process into new namespaces, running `starter` (jwstart) with the plan
 * for `spec`. Throws ShimError when the process cannot be created at all, RangeError when the plan
 * does not fit its pipe (nothing is left open or running then).
 */
export function spawnDirect(shim: Shim, starter: string, spec: InitSpec): DirectProcess {
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
