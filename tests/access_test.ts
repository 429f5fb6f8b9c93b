/**
 * Access beyond roles (issue 10), through real workers with real certificates: revoked
 * certificates (JOB_WORKER_REVOKED, reloaded when the file changes) and per-owner visibility for
 * viewers (JOB_WORKER_VIEWERS_SEE=own). A second worker with the defaults shows the same calls
 * getting through without these settings.
 *
 * Run: `deno test -A tests/access_test.ts` (as root).
 *
 * @module
 */
import assert from "node:assert/strict";
import { status } from "@grpc/grpc-js";
import { JobClient } from "../cli/client.ts";
import { loadCA, parseCertificatePem } from "../cli/pki/authority.ts";
import { issueClientCert } from "../cli/pki/issue.ts";
import { writeKeyPair } from "../cli/pki/files.ts";
import { makePki } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { clientFor, collectOutput } from "./helpers/clients.ts";

const pki = await makePki();
const read = (file: string) => Deno.readTextFileSync(`${pki.dir}/${file}`);
const ca = await loadCA({ certPem: read("ca-cert.pem"), keyPem: read("ca-key.pem") });

/** Issues a client certificate into the fixture directory; returns its serial (hex). */
async function issue(name: string, commonName: string, organizationalUnit: string) {
  const pair = await issueClientCert(ca, { commonName, organizationalUnit });
  await writeKeyPair(pki.dir, `${name}-client`, pair);
  return parseCertificatePem(read(`${name}-client-cert.pem`)).serialNumber;
}
const revokedSerial = await issue("revoked", "rita", "admin");
const laterSerial = await issue("later", "larry", "admin");
await issue("alice-viewer", "alice", "viewer");

/** `xx:yy:...` lowercase with leading zeros: the file accepts the forms openssl prints. */
const colons = (hex: string) => hex.toLowerCase().match(/../g)!.join(":");
const revokedFile = `${pki.dir}/revoked.txt`;
await Deno.writeTextFile(revokedFile, `# revoked by the test\n${colons(revokedSerial)}\n`);

const workers: WorkerProcess[] = [];
let worker: WorkerProcess;
let open: WorkerProcess;
try {
  worker = await WorkerProcess.start({
    certDir: pki.dir,
    env: { JOB_WORKER_REVOKED: revokedFile, JOB_WORKER_VIEWERS_SEE: "own" },
  });
  workers.push(worker);
  open = await WorkerProcess.start({ certDir: pki.dir });
  workers.push(open);
} catch (e) {
  await Promise.all(workers.map((w) => w.stop()));
  await pki.remove();
  throw e;
}

function connect(name: string, address: string): JobClient {
  return JobClient.connect({
    server: address,
    caPem: read("ca-cert.pem"),
    certPem: read(`${name}-client-cert.pem`),
    keyPem: read(`${name}-client-key.pem`),
  });
}

const clients: JobClient[] = [];
function client(name: string, w: WorkerProcess = worker): JobClient {
  const c = ["admin", "viewer"].includes(name)
    ? clientFor(pki.dir, w.address, name as "admin" | "viewer")
    : connect(name, w.address);
  clients.push(c);
  return c;
}

async function expectCode(promise: Promise<unknown>, code: status, pattern: RegExp) {
  await assert.rejects(promise, (e: { code?: number; details?: string }) => {
    assert.equal(e.code, code, `status ${e.code}: ${e.details}`);
    assert.match(e.details ?? "", pattern);
    return true;
  });
}

const opts = { sanitizeResources: false, sanitizeOps: false };

Deno.test("a revoked certificate gets UNAUTHENTICATED naming its serial", opts, async () => {
  const serial = revokedSerial.toUpperCase().replace(/^0+/, "");
  await expectCode(
    client("revoked").listJobs(),
    status.UNAUTHENTICATED,
    new RegExp(`serial ${serial}.*revoked`),
  );
  await expectCode(
    client("revoked").createJob({ command: "true" }),
    status.UNAUTHENTICATED,
    /revoked/,
  );
  // The same certificate on a worker without the list.
  await client("revoked", open).listJobs();
});

Deno.test("the revocation file is read again when it changes", opts, async () => {
  const later = client("later");
  await later.listJobs();
  await Deno.writeTextFile(revokedFile, `${laterSerial}\n`, { append: true });
  await expectCode(later.listJobs(), status.UNAUTHENTICATED, /revoked/);
  // Taken off the list again: accepted again, and the first one is still refused.
  await Deno.writeTextFile(revokedFile, `${colons(revokedSerial)}\n`);
  await later.listJobs();
  await expectCode(client("revoked").listJobs(), status.UNAUTHENTICATED, /revoked/);
  // A broken file does not un-revoke anything.
  await Deno.writeTextFile(revokedFile, `${colons(revokedSerial)}\nnot a serial\n`);
  await expectCode(client("revoked").listJobs(), status.UNAUTHENTICATED, /revoked/);
  await Deno.writeTextFile(revokedFile, `${colons(revokedSerial)}\n`);
});

Deno.test(
  "VIEWERS_SEE=own: a viewer sees only its CN's jobs, without env values",
  opts,
  async () => {
    const admin = client("admin"); // CN alice
    const job = await admin.createJob({ command: "echo", args: ["out"], env: ["SECRET=s3cr3t"] });
    await collectOutput(admin, job.id);
    const victor = client("viewer"); // CN victor: not the owner
    await expectCode(victor.getJob(job.id), status.NOT_FOUND, new RegExp(job.id));
    await expectCode(collectOutput(victor, job.id), status.NOT_FOUND, new RegExp(job.id));
    assert.ok(!(await victor.listJobs()).jobs.some((j) => j.id === job.id));
    // An admin lists the ended job first: the worker keeps its list entry (list_jobs.ts), which
    // must not be what a viewer who may not see env values gets.
    assert.ok(
      (await admin.listJobs()).jobs.some((j) => j.id === job.id && j.env?.[0] === "SECRET=s3cr3t"),
    );
    const alice = client("alice-viewer"); // viewer with the owner's CN
    const seen = await alice.getJob(job.id);
    assert.deepEqual(seen.env, ["SECRET=<hidden>"]);
    assert.ok(
      (await alice.listJobs()).jobs.some((j) =>
        j.id === job.id && j.env?.[0] === "SECRET=<hidden>"
      ),
    );
    assert.equal((await collectOutput(alice, job.id)).stdout, "out\n");
    assert.deepEqual((await admin.getJob(job.id)).env, ["SECRET=s3cr3t"], "admins see values");
    assert.ok(
      (await admin.listJobs()).jobs.some((j) => j.id === job.id && j.env?.[0] === "SECRET=s3cr3t"),
      "and list them, after a viewer's list",
    );
    // The same calls on a worker with the default (all): victor sees the job and its env.
    const openAdmin = client("admin", open);
    const other = await openAdmin.createJob({ command: "true", env: ["SECRET=s3cr3t"] });
    assert.deepEqual((await client("viewer", open).getJob(other.id)).env, ["SECRET=s3cr3t"]);
  },
);

Deno.test("stop the workers", opts, async () => {
  for (const c of clients) c.close();
  for (const w of workers) assert.equal((await w.stop()).code, 0);
  await pki.remove();
});
