/**
 * `jobworker get <id> [--json]`: one job in detail.
 *
 * @module
 */
import { Command, type CommandUnknownOpts } from "@commander-js/extra-typings";
import { colorEnabled } from "../color.ts";
import { type CliDeps, withClient } from "../context.ts";
import { jsonText } from "../format.ts";
import { writeText } from "../io.ts";
import { resolveJobId } from "../jobs.ts";
import { addConnectionOptions } from "../options.ts";
import { jobToJson, renderJob } from "../render.ts";

/** The `get` command. */
export function getCommand(deps: CliDeps): CommandUnknownOpts {
  const command = new Command("get")
    .description("Show a job: status, how it ended, times, limits, resource usage")
    .argument("<id>", "the job's id or a unique prefix of it")
    .option("--json", 'print the job as JSON (shape in the README, "Output for scripts")')
    .addHelpText(
      "after",
      `
Examples:
  jobworker get 9b1c
  jobworker get 9b1c --json | jq .usage.memoryPeakBytes`,
    )
    .action(async (idArg, flags, cmd) => {
      const job = await withClient(
        deps,
        cmd,
        { jobId: idArg },
        async (client) => client.getJob(await resolveJobId(client, idArg)),
      );
      const text = flags.json
        ? jsonText(jobToJson(job))
        : renderJob(job, deps.now(), colorEnabled(deps.stdoutIsTerminal, deps.env));
      await writeText(deps.stdout, text);
    });
  return addConnectionOptions(command);
}
