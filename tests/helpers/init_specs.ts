/** Job specs as `jobworker init` and jwstart take them (init/spec.ts), for tests that start one. */
import type { InitSpec } from "../../init/spec.ts";
import type { JobLaunch } from "../../worker/runtime/launcher.ts";

/** What a job run as root, privileged, on the host's network, with no profile, is given. */
function rootJob() {
  return {
    args: [],
    env: ["PATH=/usr/bin:/bin"],
    workDir: "/",
    cgroupProcsFiles: [],
    user: { uid: 0, gid: 0, groups: [] },
    network: "host" as const,
    privileged: true,
  };
}

/** A root job's spec as init and jwstart read it; `fields` override. */
export function rootInitSpec(
  fields: Partial<InitSpec> & Pick<InitSpec, "jobId" | "command">,
): InitSpec {
  return {
    ...rootJob(),
    unshareNetwork: false,
    maskPaths: [],
    readonlyPaths: [],
    minimalInit: null,
    ...fields,
  };
}

/** A root job as the worker's Launcher takes it (no minimal init); `fields` override. */
export function rootJobLaunch(
  fields: Partial<JobLaunch> & Pick<JobLaunch, "jobId" | "command">,
): JobLaunch {
  return { ...rootJob(), init: false, ...fields };
}
