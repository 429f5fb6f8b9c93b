/**
 * `jobworker rm <id>...`: forget ended jobs and delete their output (DeleteJob).
 *
 * @module
 */
import { Command, type CommandUnknownOpts } from "@commander-js/extra-typings";
import { type CliDeps, withClient } from "../context.ts";
import { CliError, EXIT_FAILURE, oneJobFailure } from "../errors.ts";
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
A job that has not ended cannot be deleted: stop it first. Prints each deleted id; a job that
cannot be deleted is said on stderr, the others are deleted all the same (exit code 1).
Examples:
  jobworker rm 9b1c
  jobworker list -q --status completed,failed,stopped | xargs jobworker rm`,
    )
    .action(async (idArgs, _flags, cmd) => {
      const failures = await withClient(deps, cmd, {}, async (client) => {
        let failed = 0;
        // Each job on its own, as rm(1) and docker rm do: one that is gone or still running is
        // said (naming it alone) and the others are deleted all the same; exit 1 at the end.
        for (const id of await resolveJobIds(client, idArgs)) {
          try {
            await client.deleteJob(id);
          } catch (err) {
            const message = oneJobFailure(err, id);
            if (message === undefined) throw err;
            failed++;
            await writeText(deps.stderr, `error: ${message}\n`);
            continue;
          }
          await writeText(deps.stdout, `${id}\n`);
        }
        return failed;
      });
      if (failures > 0) throw new CliError("", EXIT_FAILURE);
    });
  return addConnectionOptions(command);
}
