/**
 * `jobworker stream <id> [--offset N] [--no-follow]`: the job's output, byte for byte, its stdout
 * to stdout and its stderr to stderr, until the job has ended and all was sent.
 *
 * @module
 */
import { Command, type CommandUnknownOpts } from "@commander-js/extra-typings";
import { jobworker } from "../../proto/service.ts";
import { type CliDeps, withClient } from "../context.ts";
import { CliError, EXIT_INTERRUPTED } from "../errors.ts";
import { addConnectionOptions, nonNegativeInteger } from "../options.ts";

/** The `stream` command. */
export function streamCommand(deps: CliDeps): CommandUnknownOpts {
  const command = new Command("stream")
    .description("Write a job's output (its stdout and stderr apart)")
    .argument("<id>", "the job's id")
    .option(
      "--offset <bytes>",
      "start at this byte of the output (stdout and stderr counted together)",
      nonNegativeInteger(Number.MAX_SAFE_INTEGER),
    )
    .option("--no-follow", "end after the output written so far instead of waiting for more")
    .addHelpText(
      "after",
      "\nIt returns when the job has ended and all its output was written (exit code 0).",
    )
    .action(async (id, flags, cmd) => {
      const controller = new AbortController();
      const stopListening = deps.onInterrupt(() => controller.abort());
      try {
        await withClient(deps, cmd, { jobId: id }, async (client) => {
          const chunks = client.stream(id, {
            offset: flags.offset ?? 0,
            noFollow: !flags.follow,
            signal: controller.signal,
          });
          for await (const chunk of chunks) {
            const sink = chunk.stream === jobworker.OutputStream.STDERR ? deps.stderr : deps.stdout;
            await sink.write(chunk.payload);
          }
        });
      } catch (err) {
        if (!controller.signal.aborted) throw err;
      } finally {
        stopListening();
      }
      if (controller.signal.aborted) throw new CliError("", EXIT_INTERRUPTED);
    });
  return addConnectionOptions(command);
}
