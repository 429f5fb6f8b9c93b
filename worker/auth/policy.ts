/** Which role may call which RPC. Pure: no gRPC, no I/O. */
import type { Identity, Role } from "./identity.ts";

export type Rpc =
  | "CreateJob"
  | "GetJob"
  | "StopJob"
  | "GetJobs"
  | "GetJobsStream"
  | "ListJobs"
  | "DeleteJob"
  | "GetServerInfo";

const READ: Rpc[] = ["GetJob", "GetJobs", "ListJobs", "GetJobsStream", "GetServerInfo"];

const ALLOWED: Record<Role, ReadonlySet<Rpc>> = {
  admin: new Set([...READ, "CreateJob", "StopJob", "DeleteJob"]),
  viewer: new Set(READ),
};

/** null when allowed, else a message for PERMISSION_DENIED that names what was seen. */
export function denial(identity: Identity, rpc: Rpc): string | null {
  if (identity.role === null) {
    const seen = identity.organizationalUnits.length === 0
      ? "no OU"
      : `OU ${identity.organizationalUnits.map((o) => `"${o}"`).join(", ")}`;
    return `the client certificate (CN "${identity.commonName}") has ${seen}; ` +
      `a role of "admin" or "viewer" is required`;
  }
  if (ALLOWED[identity.role].has(rpc)) return null;
  return `role "${identity.role}" may not call ${rpc}`;
}
