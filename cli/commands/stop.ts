/**
 * `jobworker stop <id>... [--grace S] [--force]`: stop jobs and print how each ended; on a
 * terminal, a line on stderr says what it waits for while the grace period runs.
 *
 * @module
 */
import { Command, type CommandUnknownOpts } from "@commander-js/extra-typings";
import { colorEnabled, paintStatus } from "../color.ts";
import { type CliDeps, withClient } from "../context.ts";
import { CliError, EXIT_FAILURE, oneJobFailure } from "../errors.ts";
import { jsonText } from "../format.ts";
import { writeText } from "../io.ts";
import { resolveJobIds } from "../jobs.ts";
import { addConnectionOptions, MAX_SECONDS, nonNegativeInteger } from "../options.ts";
import { jobToJson, statusName, statusSummary } from "../render.ts";

const SPINNER = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/** The `stop` command. */
export function stopCommand(deps: CliDeps): CommandUnknownOpts {
  const command = new Command("stop")
    .description("Stop jobs (SIGTERM, SIGKILL after a grace period)")
    .argument("<ids...>", "job ids or unique prefixes")
    .option(
      "--grace <seconds>",
      "time between SIGTERM and SIGKILL (default: server's, 10 s)",
      nonNegativeInteger(MAX_SECONDS),
    )
    .option("--force", "SIGKILL every process at once")
    .option("--json", "print the stopped jobs as JSON: [ {job}, ... ]")
    .addHelpText(
      "after",
      `
It returns once every process of the jobs is gone. A job whose PID 1 ignores SIGTERM is
SIGKILLed when the grace period ends. Stopping an ended job is not an error; an unknown one
is said on stderr, the others are stopped all the same (exit code 1).
Examples:
  jobworker stop 9b1c
  jobworker stop 9b1c 4f2e --grace 2
  jobworker list -q --status running | xargs jobworker stop --force`,
    )
    .action(async (idArgs, flags, cmd) => {
      const options = { graceSeconds: flags.grace ?? 0, force: flags.force ?? false };
      const color = colorEnabled(deps.stdoutIsTerminal, deps.env);
      let failures = 0;
      const jobs = await withClient(deps, cmd, {}, async (client) => {
        const ids = await resolveJobIds(client, idArgs);
        let pending = ids.length;
        const t0 = Date.now();
        let frame = 0;
        const progress = deps.stderrIsTerminal && !options.force
          ? setInterval(() => {
            const what = options.graceSeconds
              ? `SIGKILL after ${options.graceSeconds}s`
              : "SIGKILL after the server's grace period";
            const line = `${SPINNER[frame++ % SPINNER.length]} stopping ${pending} job${
              pending === 1 ? "" : "s"
            }: SIGTERM sent, waiting for them to end (${what}) ${
              Math.floor((Date.now() - t0) / 1000)
            }s`;
            void writeText(deps.stderr, `\r\x1b[K${line}`).catch(() => {});
          }, 100)
          : undefined;
        try {
          // Each job on its own, as docker stop does: one that is not there is said (naming it
          // alone) and the others are stopped all the same; exit 1 at the end.
          const stopped = await Promise.all(ids.map(async (id) => {
            let job;
            try {
              job = await client.stopJob(id, options);
            } catch (err) {
              const message = oneJobFailure(err, id);
              if (message === undefined) throw err;
              pending--;
              failures++;
              const clear = progress ? "\r\x1b[K" : "";
              await writeText(deps.stderr, `${clear}error: ${message}\n`);
              return undefined;
            }
            pending--;
            if (!flags.json) {
              const summary = statusSummary(job).replace(
                statusName(job.status),
                paintStatus(statusName(job.status), color),
              );
              const clear = progress ? "\r\x1b[K" : "";
              if (clear) await writeText(deps.stderr, clear);
              await writeText(deps.stdout, `${job.id} ${summary}\n`);
            }
            return job;
          }));
          return stopped.filter((job) => job !== undefined);
        } finally {
          if (progress) {
            clearInterval(progress);
            await writeText(deps.stderr, "\r\x1b[K");
          }
        }
      });
      if (flags.json) {
        await writeText(deps.stdout, jsonText(jobs.map(jobToJson)));
      }
      if (failures > 0) throw new CliError("", EXIT_FAILURE);
    });
  return addConnectionOptions(command);
}
