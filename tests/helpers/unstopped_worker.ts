/**
 * A test file for worker_helper_test.ts to run with `deno test`: it makes certificates, starts a
 * worker, creates a `sleep` job on it and never stops the worker nor removes the certificates,
 * like a filtered run that skips the test doing so. It prints one line, `UNSTOPPED {json}` with
 * the worker's pid, state directory, instance name, job id and certificate directory. With HANG=1
 * it then waits until it is killed.
 */
import { makePki } from "./pki.ts";
import { WorkerProcess } from "./worker.ts";
import { clientFor } from "./clients.ts";
import { instanceName } from "../../worker/cgroups/paths.ts";

Deno.test(
  { name: "a worker no test stops", sanitizeResources: false, sanitizeOps: false },
  async () => {
    const certDir = (await makePki()).dir;
    const worker = await WorkerProcess.start({ certDir });
    const client = clientFor(certDir, worker.address);
    const job = await client.createJob({ command: "sleep", args: ["1000"] });
    client.close();
    const facts = {
      pid: worker.process.pid,
      stateDir: worker.stateDir,
      instance: await instanceName(worker.stateDir),
      jobId: job.id,
      certDir,
    };
    console.log(`UNSTOPPED ${JSON.stringify(facts)}`);
    if (Deno.env.get("HANG") === "1") await new Promise(() => {});
  },
);
