/**
 * The direct start: a job's first process made ready by the shim's child between clone3 and
 * execve (init/shim/jwdirect.c), from a plan of init's own steps (init/direct_plan.ts), without a
 * `jobworker init` and so without a Deno start on the job's start path. What the job gets is the
 * same either way; only who takes the steps differs.
 */
import type { Shim } from "../../init/shim/ffi.ts";
import type { InitFailure, InitSpec } from "../../init/spec.ts";
import { directFailure, directPlan } from "../../init/direct_plan.ts";
import { closeQuietly, OUTPUT_PIPE_SIZE, PipeText } from "./init_process.ts";

export interface DirectProcess {
  pid: number;
  pidfd: number;
  outR: number;
  errR: number;
  /** Settles at the exec (null) or with why a step failed. */
  started: Promise<InitFailure | null>;
  /** Stops listening for the child's report (the job was abandoned). */
  abandon(): void;
}

/**
 * Clones the job's first process and has it take `spec`'s steps and exec the command. Throws
 * ShimError when the process cannot be created at all (nothing is left open then).
 */
export function spawnDirect(shim: Shim, spec: InitSpec): DirectProcess {
  const plan = directPlan(spec);
  const open: number[] = [];
  const pipe = (size = 0) => {
    const [r, w] = shim.pipe(size);
    open.push(r, w);
    return [r, w] as const;
  };
  try {
    const [outR, outW] = pipe(OUTPUT_PIPE_SIZE);
    const [errR, errW] = pipe(OUTPUT_PIPE_SIZE);
    const [statusR, statusW] = pipe();
    const { pid, pidfd } = shim.spawnDirect(
      plan.bytes,
      outW,
      errW,
      statusW,
      spec.network === "none",
    );
    closeQuietly(shim, [outW, errW, statusW]);
    const status = new PipeText(statusR);
    return {
      pid,
      pidfd,
      outR,
      errR,
      started: status.closed.then((text) => text === "" ? null : directFailure(plan, text)),
      abandon: () => status.destroy(),
    };
  } catch (e) {
    closeQuietly(shim, open);
    throw e;
  }
}
