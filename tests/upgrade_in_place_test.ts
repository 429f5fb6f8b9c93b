/**
 * An upgrade in place replaces the worker's program file while it runs (make install, a package
 * upgrade). Until the reload, jobs must still start: init is the running program itself
 * (/proc/self/exe), not the path it was started from, which now names a deleted file.
 *
 * @module
 */
import assert from "node:assert/strict";
import { makePki } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { clientFor, collectOutput } from "./helpers/clients.ts";

for (const pool of ["0", "2"]) {
  Deno.test({
    name: `jobs start after the worker's program file was deleted (JOB_WORKER_INIT_POOL=${pool})`,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const pki = await makePki();
      const dir = await Deno.makeTempDir({ prefix: "jobworker-upgrade-" });
      const deno = `${dir}/deno`;
      await Deno.copyFile(Deno.execPath(), deno);
      await Deno.chmod(deno, 0o755);
      const worker = await WorkerProcess.start({
        certDir: pki.dir,
        deno,
        env: { JOB_WORKER_INIT_POOL: pool },
      });
      const client = clientFor(pki.dir, worker.address);
      try {
        await Deno.remove(deno);
        // More jobs than the pool holds, so some inits are cloned after the deletion.
        for (let i = 0; i < 4; i++) {
          const job = await client.createJob({ command: "echo", args: [`job ${i}`] });
          const { stdout } = await collectOutput(client, job.id);
          assert.equal(stdout, `job ${i}\n`);
        }
      } finally {
        client.close();
        await worker.stop();
        await pki.remove();
        await Deno.remove(dir, { recursive: true });
      }
    },
  });
}
