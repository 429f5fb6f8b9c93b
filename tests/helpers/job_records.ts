/** Job records written straight into a store or a job table, for the tests that need no worker. */
import type { JobSpec } from "../../worker/jobs/job.ts";

/** The spec of a small job run as root (`echo`), with `over` changed. */
export function jobSpec(over: Partial<JobSpec> = {}): JobSpec {
  return {
    command: "echo",
    args: [],
    env: [],
    workDir: "/",
    timeoutSeconds: 0,
    limits: { cpuPercent: 100, memoryMiB: 64, ioBps: 0, pids: 10 },
    requestId: "",
    user: { uid: 0, gid: 0, groups: [], name: "root", home: "/root" },
    network: "host",
    privileged: false,
    init: false,
    ...over,
  };
}
