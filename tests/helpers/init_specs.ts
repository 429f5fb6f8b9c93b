/** Job specs as `jobworker init` and jwstart take them (init/spec.ts), for tests that start one. */
import type { InitSpec } from "../../init/spec.ts";

/** A job run as root, privileged, on the host's network, with no profile; `fields` override. */
export function rootInitSpec(
  fields: Partial<InitSpec> & Pick<InitSpec, "jobId" | "command">,
): InitSpec {
  return {
    args: [],
    env: ["PATH=/usr/bin:/bin"],
    workDir: "/",
    cgroupProcsFiles: [],
    user: { uid: 0, gid: 0, groups: [] },
    network: "host",
    unshareNetwork: false,
    privileged: true,
    maskPaths: [],
    readonlyPaths: [],
    minimalInit: null,
    ...fields,
  };
}
