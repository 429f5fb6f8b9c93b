/** GetServerInfo: what this server is and can do, and who the caller is to it. */
import { jobworker } from "../../proto/service.ts";
import type { Identity } from "../auth/identity.ts";
import type { JobManager } from "../jobs/manager.ts";
import { timestamp } from "./convert.ts";

/** The facts that do not change while a server process runs. */
export interface ServerFacts {
  version: string;
  startTime: Date;
  /** The last reload (re-exec in place); undefined if none. */
  reloadTime: Date | undefined;
  cgroupVersion: 1 | 2;
  limits: readonly string[];
  isolation: readonly string[];
  maxRunningJobs: number;
}

export function serverInfo(
  facts: ServerFacts,
  manager: JobManager,
  caller: Identity,
): jobworker.ServerInfo {
  return jobworker.ServerInfo.create({
    version: facts.version,
    startTime: timestamp(facts.startTime),
    reloadTime: timestamp(facts.reloadTime),
    cgroupVersion: `v${facts.cgroupVersion}`,
    limits: [...facts.limits],
    isolation: [...facts.isolation],
    runningJobs: manager.runningJobs,
    maxRunningJobs: facts.maxRunningJobs,
    callerName: caller.commonName,
    callerRole: caller.role ?? "",
  });
}
