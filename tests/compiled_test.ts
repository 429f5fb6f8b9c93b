/**
 * The compiled executable (`make build` with a denort base runtime): one file that embeds the C
 * shim, writes it to `<state>/lib/` at start, and re-execs itself as `init` for every job. Runs
 * when DENORT_BIN names a denort binary of the pinned Deno version; denort cannot be downloaded on
 * these machines, so elsewhere it is skipped, visibly (the one skip allowed on CI).
 */
import assert from "node:assert/strict";
import { jobworker } from "../proto/service.ts";
import { makePki } from "./helpers/pki.ts";
import { WorkerProcess } from "./helpers/worker.ts";
import { clientFor, collectOutput } from "./helpers/clients.ts";
import { runProgram } from "./helpers/process.ts";
import { waitFor } from "./helpers/host_procs.ts";
import { unless, withSkip } from "./helpers/skip.ts";

const root = new URL("..", import.meta.url).pathname;
const denort = Deno.env.get("DENORT_BIN") ?? "";

Deno.test(withSkip(
  {
    name: "compiled: one ELF executable serves, installs its shim, and runs jobs through init",
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => {
      const build = await runProgram("bash", [`${root}scripts/build.sh`, Deno.execPath()], {
        cwd: root,
        env: { DENORT_BIN: denort },
      });
      assert.equal(build.code, 0, build.stderr);
      assert.match(build.stdout, /one executable with the shim embedded/, build.stderr);
      const program = `${root}bin/jobworker`;
      const head = new Uint8Array(4);
      using file = await Deno.open(program);
      await file.read(head);
      assert.deepEqual([...head], [0x7f, 0x45, 0x4c, 0x46], "bin/jobworker is not an ELF file");

      const pki = await makePki();
      const worker = await WorkerProcess.start({ certDir: pki.dir, program });
      const client = clientFor(pki.dir, worker.address);
      try {
        const lib = [...Deno.readDirSync(`${worker.stateDir}/lib`)].map((e) => e.name);
        assert.ok(lib.some((n) => /^libjwshim-[0-9a-f]{16}\.so$/.test(n)), lib.join(" "));
        const created = await client.createJob({
          command: "sh",
          args: ["-c", "echo $$; hostname"],
        });
        const job = await waitFor("the job to end", async () => {
          const j = await client.getJob(created.id);
          return j.status >= jobworker.JobStatus.COMPLETED ? j : null;
        });
        assert.equal(job.status, jobworker.JobStatus.COMPLETED, job.reason);
        const out = await collectOutput(client, job.id);
        assert.equal(out.stdout, `1\n${job.id}\n`);
      } finally {
        client.close();
        assert.equal((await worker.stop()).code, 0);
        await pki.remove();
      }
    },
  },
  unless(denort !== "", "DENORT_BIN is not set (denort cannot be downloaded here)", {
    allowedOnCI: true,
  }),
));
