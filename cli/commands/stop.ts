/**
 * `jobworker stop <id> [--grace S] [--force]`: stop a job and print how it ended.
 *
 * @module
 */
import { Command, type CommandUnknownOpts } from "@commander-js/extra-typings";
import { type CliDeps, withClient } from "../context.ts";
import { writeText } from "../io.ts";
import { addConnectionOptions, INT32_MAX, nonNegativeInteger } from "../options.ts";
import { statusSummary } from "../render.ts";

/** The `stop` command. */
export function stopCommand(deps: CliDeps): CommandUnknownOpts {
  const command = new Command("stop")
    .description(
      "Stop a job (SIGTERM, SIGKILL after a grace period)",
    )
    .argument("<id>", "the job's id")
    .option(
      "--grace <seconds>",
      "time between SIGTERM and SIGKILL (default: server's)",
      nonNegativeInteger(INT32_MAX),
    )
    .option("--force", "SIGKILL every process at once")
    .action(async (id, flags, cmd) => {
      const options = { graceSeconds: flags.grace ?? 0, force: flags.force ?? false };
      const job = await withClient(
        deps,
        cmd,
        { jobId: id },
        (client) => client.stopJob(id, options),
      );
      await writeText(deps.stdout, `${job.id} ${statusSummary(job)}\n`);
    });
  return addConnectionOptions(command);
}
