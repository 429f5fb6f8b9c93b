/**
 * `jobworker list [--json]`: every job, newest first, then a count per status.
 *
 * @module
 */
import { Command, type CommandUnknownOpts } from "@commander-js/extra-typings";
import { type CliDeps, withClient } from "../context.ts";
import { writeText } from "../io.ts";
import { addConnectionOptions } from "../options.ts";
import { jobsToJson, renderJobList } from "../render.ts";

/** The `list` command. */
export function listCommand(deps: CliDeps): CommandUnknownOpts {
  const command = new Command("list")
    .description("List the jobs, newest first, and a count per status")
    .option("--json", "print JSON: { jobs: [...], countByStatus: {...} }")
    .action(async (flags, cmd) => {
      const jobs = await withClient(deps, cmd, {}, (client) => client.listJobs());
      const text = flags.json
        ? JSON.stringify(jobsToJson(jobs), null, 2) + "\n"
        : renderJobList(jobs, { now: deps.now(), width: deps.columns() });
      await writeText(deps.stdout, text);
    });
  return addConnectionOptions(command);
}
