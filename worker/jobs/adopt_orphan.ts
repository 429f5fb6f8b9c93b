/**
 * A job the previous process of this worker handed over at a reload that has no record here (it
 * was deleted behind the worker's back, or never written): the new process cannot keep it, so
 * nothing of it may be left. It is killed (SIGKILL to its init, its PID namespace's PID 1, takes
 * every process of the job), its output pipes are closed unread (their output has nowhere to go;
 * no socket is opened on them), its pidfd is closed once it has been reaped, and its cgroup removed.
 *
 * @module
 */
import type { CgroupManager } from "../cgroups/types.ts";
import type { HandedJob } from "../runtime/reexec.ts";
import type { Launcher } from "../runtime/launcher.ts";
import { log } from "../log/logger.ts";
import { message } from "./running.ts";

/** Stops handed-over job `handed`; settles (never rejects) once it is reaped and its cgroup gone. */
export function stopOrphan(
  handed: HandedJob,
  launcher: Pick<Launcher, "kill">,
  cgroups: CgroupManager,
): Promise<void> {
  log.error("a handed-over job has no record; stopping it", { id: handed.id });
  return launcher.kill(
    handed.pid,
    handed.pidfd,
    [handed.stdoutFd, handed.stderrFd].filter((fd) => fd >= 0),
  )
    .then(() => cgroups.open(handed.id).remove())
    .catch((e: unknown) =>
      log.warn("cannot remove the cgroup of a handed-over job without a record", {
        id: handed.id,
        error: message(e),
      })
    );
}
