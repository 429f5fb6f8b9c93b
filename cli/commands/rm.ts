/**
 * `jobworker rm <id>...`: forget ended jobs and delete their output (DeleteJob).
 *
 * @module
 */
import { Command, type CommandUnknownOpts } from "@commander-js/extra-typings";
import { type CliDeps, withClient } from "../context.ts";
import { writeText } from "../io.ts";
import { resolveJobIds } from "../jobs.ts";
import { addConnectionOptions } from "../options.ts";

/** The `rm` command. */
export function rmCommand(deps: CliDeps): CommandUnknownOpts {
  const command = new Command("rm")
    .description("Delete ended jobs and their output")
    .argument("<ids...>", "job ids or unique prefixes")
    .addHelpText(
      "after",
      `
A job that has not ended cannot be deleted: stop it first. Prints each deleted id.
Examples:
  jobworker rm 9b1c
  jobworker list -q --status completed,failed,stopped | xargs jobworker rm`,
    )
    .action(async (idArgs, _flags, cmd) => {
      await withClient(deps, cmd, { jobId: idArgs.join(" ") }, async (client) => {
        for (const id of await resolveJobIds(client, idArgs)) {
          await client.deleteJob(id);
          await writeText(deps.stdout, `${id}\n`);
        }
      });
    });
  return addConnectionOptions(command);
}
