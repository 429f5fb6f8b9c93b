/**
 * What the manager holds for a job whose processes exist: its first process, its cgroup, its stop
 * escalation and timeout. Shared by the start (job_start.ts), the end (job_end.ts) and the manager.
 */
import type { JobCgroup, Usage } from "../cgroups/types.ts";
import type { WaitStatus } from "../../init/shim/ffi.ts";
import type { LaunchedProcess } from "../runtime/launcher.ts";
import type { Stopper } from "./stopper.ts";
import type { DefaultTerm } from "./pid1_term.ts";

export interface Running {
  process: LaunchedProcess;
  cgroup: JobCgroup;
  /** Resolves when the job's PID 1 has been reaped. */
  exited: Promise<WaitStatus>;
  timeout: ReturnType<typeof setTimeout> | undefined;
  /** Epoch ms when the timeout fires; undefined: none. */
  timeoutAt: number | undefined;
  stopper: Stopper;
  /** PID 1 has been reaped: the job is being cleaned up. */
  reaped: boolean;
  /** SIGTERM's default action for a PID 1 without a handler (see pid1_term.ts). */
  defaultTerm?: DefaultTerm | null;
}

export const ZERO_USAGE: Usage = {
  cpuUsec: 0,
  memoryBytes: 0,
  memoryPeakBytes: 0,
  ioReadBytes: 0,
  ioWriteBytes: 0,
  pids: 0,
};

export const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
