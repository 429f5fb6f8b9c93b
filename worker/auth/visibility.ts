/**
 * Which jobs a caller sees. With JOB_WORKER_VIEWERS_SEE=own a viewer sees only the jobs whose
 * owner is its certificate's CN (any other answers NOT_FOUND, as a job that does not exist) and
 * never the values of a job's environment. Admins always see everything. Pure: no gRPC, no I/O.
 */
import type { Identity } from "./identity.ts";

export type ViewersSee = "all" | "own";

/** Whether `identity` may see a job owned by `owner`. */
export function canSee(identity: Identity, owner: string, mode: ViewersSee): boolean {
  return mode === "all" || identity.role !== "viewer" || owner === identity.commonName;
}

/** Whether env values are hidden from `identity`. */
export function hidesEnv(identity: Identity, mode: ViewersSee): boolean {
  return mode === "own" && identity.role === "viewer";
}

/** KEY=VALUE entries with the values replaced, the keys kept. */
export function withoutValues(env: readonly string[]): string[] {
  return env.map((e) => `${e.slice(0, e.indexOf("="))}=<hidden>`);
}
