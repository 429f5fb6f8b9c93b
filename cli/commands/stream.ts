/**
 * `jobworker stream <id>`: the job's output, byte for byte, its stdout to stdout and its stderr to
 * stderr, until the job has ended and all was sent; resumes after a lost connection.
 *
 * @module
 */
import { Command, type CommandUnknownOpts } from "@commander-js/extra-typings";
import { type CliDeps, withClient } from "../context.ts";
import { CliError, EXIT_INTERRUPTED, RetryAbandoned, UsageError } from "../errors.ts";
import { printable } from "../format.ts";
import { writeText } from "../io.ts";
import { resolveJobId } from "../jobs.ts";
import { addConnectionOptions, nonNegativeInteger } from "../options.ts";
import { writeOutput } from "../output.ts";
import { retryAcrossReload, retryOptions } from "../reconnect.ts";
import { hasEnded, statusSummary, truncationNote } from "../render.ts";
import { jobworker } from "../../proto/service.ts";

/** The `stream` command. */
export function streamCommand(deps: CliDeps): CommandUnknownOpts {
  const command = new Command("stream")
    .description("Write a job's output (its stdout and stderr apart), following it live")
    .argument("<id>", "the job's id or a unique prefix of it")
    .option(
      "--offset <bytes>",
      "start at this byte of the output (stdout and stderr counted together)",
      nonNegativeInteger(Number.MAX_SAFE_INTEGER),
    )
    .option(
      "--tail <lines>",
      "start with the last N lines, then follow",
      nonNegativeInteger(Number.MAX_SAFE_INTEGER),
    )
    .option("--stdout", "only the job's stdout")
    .option("--stderr", "only the job's stderr")
    .option("--no-follow", "end after the output written so far instead of waiting for more")
    .option("-v, --verbose", "say how the job ended (on stderr) even when not on a terminal")
    .addHelpText(
      "after",
      `
It returns when the job has ended and all its output was written (exit code 0). A lost
connection or a restarting server is retried (for up to a minute) from the last byte
written, so each byte is written once. On a terminal (or with --verbose) a job that did not
complete successfully gets a one-line note on stderr at the end, and so does output the
server cut at its limit (JOB_WORKER_MAX_OUTPUT_BYTES).
Examples:
  jobworker stream 9b1c
  jobworker stream 9b1c --tail 20
  jobworker stream 9b1c --stderr --no-follow`,
    )
    .action(async (idArg, flags, cmd) => {
      if (flags.stdout && flags.stderr) {
        throw new UsageError("--stdout and --stderr exclude each other (give neither for both)");
      }
      if (flags.tail !== undefined && flags.offset !== undefined) {
        throw new UsageError("--tail and --offset exclude each other");
      }
      const controller = new AbortController();
      const stopListening = deps.onInterrupt(() => controller.abort());
      const verbose = flags.verbose === true || deps.stderrIsTerminal;
      let note = "";
      try {
        await withClient(deps, cmd, { jobId: idArg }, async (client) => {
          const id = await resolveJobId(client, idArg);
          await writeOutput(deps, client, id, {
            offset: flags.offset ?? 0,
            ...(flags.tail !== undefined ? { tail: flags.tail } : {}),
            noFollow: !flags.follow,
            ...(flags.stdout ? { only: "stdout" as const } : {}),
            ...(flags.stderr ? { only: "stderr" as const } : {}),
            signal: controller.signal,
            onReconnect: (attempt, error) => {
              if (verbose && attempt === 1) {
                void writeText(deps.stderr, `jobworker: connection lost (${error}); resuming\n`)
                  .catch(() => {});
              }
            },
          });
          if (verbose && flags.follow) {
            // The output ended with the job; a reload may still cut this one call. The note is
            // cosmetic: the output was all written, so giving up says so and still exits 0.
            let job: jobworker.IJob;
            try {
              job = await retryAcrossReload(
                `learning how job ${id} ended`,
                () => client.getJob(id),
                {
                  ...retryOptions(deps),
                  signal: controller.signal,
                  advice: `see jobworker get ${id}`,
                  onRetry: (attempt, error) => {
                    if (attempt === 1) {
                      void writeText(
                        deps.stderr,
                        `jobworker: connection lost (${error.details}); retrying\n`,
                      ).catch(() => {});
                    }
                  },
                },
              );
            } catch (err) {
              if (!(err instanceof RetryAbandoned)) throw err;
              const tried = Math.round(err.triedMs / 1000);
              note = `jobworker: could not learn how job ${id} ended (${err.lastError.details}; ` +
                `gave up after ${tried} s of retries; see jobworker get ${id})\n`;
              return;
            }
            if (hasEnded(job) && job.status !== jobworker.JobStatus.COMPLETED) {
              note = `jobworker: job ${id} ${statusSummary(job)}${
                job.reason ? `: ${printable(job.reason)}` : ""
              }\n`;
            }
            note += truncationNote(job);
          }
        });
      } catch (err) {
        if (!controller.signal.aborted) throw err;
      } finally {
        stopListening();
      }
      if (controller.signal.aborted) throw new CliError("", EXIT_INTERRUPTED);
      if (note) await writeText(deps.stderr, note);
    });
  return addConnectionOptions(command);
}
