/**
 * `jobworker get <id> [--json]`: one job in detail.
 *
 * @module
 */
import { Command, type CommandUnknownOpts } from "@commander-js/extra-typings";
import { type CliDeps, withClient } from "../context.ts";
import { writeText } from "../io.ts";
import { addConnectionOptions } from "../options.ts";
import { jobToJson, renderJob } from "../render.ts";

/** The `get` command. */
export function getCommand(deps: CliDeps): CommandUnknownOpts {
  const command = new Command("get")
    .description("Show a job: status, times, limits, resource usage")
    .argument("<id>", "the job's id")
    .option("--json", "print the job as JSON")
    .action(async (id, flags, cmd) => {
      const job = await withClient(deps, cmd, { jobId: id }, (client) => client.getJob(id));
      const text = flags.json
        ? JSON.stringify(jobToJson(job), null, 2) + "\n"
        : renderJob(job, deps.now());
      await writeText(deps.stdout, text);
    });
  return addConnectionOptions(command);
}
