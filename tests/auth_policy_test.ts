/** The pure role policy and identity parsing (the end-to-end matrix is in auth_test.ts). */
import assert from "node:assert/strict";
import { identityOf } from "../worker/auth/identity.ts";
import { denial, type Rpc } from "../worker/auth/policy.ts";

type Subject = Record<string, string | string[]>;
const identity = (subject: Subject | undefined) =>
  identityOf({ sslPeerCertificate: subject && ({ subject } as never) });

const ALL: Rpc[] = ["CreateJob", "GetJob", "StopJob", "GetJobs", "GetJobsStream"];

Deno.test("admin may call everything, viewer only reads", () => {
  for (const rpc of ALL) assert.equal(denial(identity({ OU: "admin", CN: "a" }), rpc), null);
  const viewer = identity({ OU: "viewer", CN: "v" });
  assert.deepEqual(ALL.filter((rpc) => denial(viewer, rpc) === null), [
    "GetJob",
    "GetJobs",
    "GetJobsStream",
  ]);
  assert.match(denial(viewer, "CreateJob")!, /role "viewer" may not call CreateJob/);
});

Deno.test("unknown, missing or ambiguous OUs get no role; the CN is kept", () => {
  const intruder = identity({ OU: "intruder", CN: "m" });
  assert.equal(intruder.role, null);
  assert.match(denial(intruder, "GetJobs")!, /OU "intruder"/);
  assert.match(denial(identity({ CN: "n" }), "GetJob")!, /no OU/);
  assert.equal(identity({ OU: ["admin", "viewer"], CN: "x" }).role, null);
  assert.equal(identity({ OU: ["admin", "ops"], CN: "x" }).role, "admin");
  assert.equal(identity({ OU: "admin", CN: "alice" }).commonName, "alice");
  assert.equal(identity(undefined).role, null);
});
