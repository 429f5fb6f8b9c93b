/**
 * `jobworker run [create's options] <command> [args...]`: start a job, write its output live and
 * exit with its exit code (128 + the signal when a signal ended it), as a local command would.
 *
 * Ctrl-C stops the job (the output keeps coming until it has ended); a second Ctrl-C detaches:
 * the client exits (130) and prints the job's id, the job goes on being stopped.
 *
 * @module
 */
import { Command, type CommandUnknownOpts } from "@commander-js/extra-typings";
import type { jobworker } from "../../proto/service.ts";
import { type CliDeps, withClient } from "../context.ts";
import {
  CliError,
  EXIT_INTERRUPTED,
  isServiceError,
  RetryAbandoned,
  Status,
  UsageError,
} from "../errors.ts";
import { writeText } from "../io.ts";
import { addConnectionOptions } from "../options.ts";
import { writeOutput } from "../output.ts";
import { retryAcrossReload, retryOptions } from "../reconnect.ts";
import { truncationNote } from "../render.ts";
import { addJobOptions, buildCreateRequest } from "./create.ts";

/** The exit code `run` ends with for an ended job: its own, or 128 + the signal that ended it. */
export function jobExitCode(job: jobworker.IJob): number {
  if (job.signal) return 128 + job.signal;
  const code = job.exitCode ?? 0;
  return code >= 0 && code <= 255 ? code : 1;
}

/** The `run` command. */
export function runCommand(deps: CliDeps): CommandUnknownOpts {
  const command = addJobOptions(
    new Command("run").description(
      "Start a job, write its output live, exit with its exit code",
    ),
  )
    .option("-d, --detach", "only print the job's id (as create)")
    .option("--rm", "delete the job and its output once it has ended")
    .addHelpText(
      "after",
      `
Options go before the job's command; everything after it belongs to the job.
Its stdout goes to stdout and its stderr to stderr as they are written. The exit code is
the job's, or 128 + the signal number when a signal ended it (137 for SIGKILL or an OOM
kill, 143 for SIGTERM). Ctrl-C (or SIGTERM or SIGHUP to this client) stops the job and waits
for its end; a second one detaches (exit code 130) and prints the job's id on stderr.
Output the server cut at its limit (JOB_WORKER_MAX_OUTPUT_BYTES) ends with a note on stderr.
Examples:
  jobworker run bash -c 'echo building; make -j4'
  jobworker run --rm --max-memory 64 python3 -c 'print(1)'
  jobworker run --detach sleep 600`,
    )
    .action(async (commandName, args, flags, cmd) => {
      // --rm is done by this client once it has followed the job to its end; a detached job is
      // not followed, so it would stay (the create went ahead and --rm was silently dropped).
      if (flags.rm && flags.detach) {
        throw new UsageError(
          "--rm and --detach exclude each other: run deletes the job once it has followed it to " +
            "its end, and a detached job is not followed (delete it later with jobworker rm)",
        );
      }
      const req = {
        ...buildCreateRequest(commandName, args, flags),
        requestId: crypto.randomUUID(),
      };
      const exitCode = await withClient(deps, cmd, {}, async (client) => {
        const job = await client.createJob(req);
        const id = job.id;
        if (flags.detach) {
          await writeText(deps.stdout, `${id}\n`);
          return 0;
        }
        const controller = new AbortController();
        // The calls after the create may each meet the worker reloading in place (it does not
        // listen for a while): they are all safe to repeat, so they ride it out as the output does.
        const retrying = retryOptions(deps);
        let stopping: Promise<unknown> | undefined;
        // Whether the stop may not have reached the worker: its call was lost (and is being
        // retried), or given up.
        let stopInDoubt = false;
        const stopListening = deps.onInterrupt((count) => {
          if (count === 1) {
            stopping = retryAcrossReload(
              `stopping job ${id}`,
              () => client.stopJob(id, {}),
              { ...retrying, signal: controller.signal, onRetry: () => (stopInDoubt = true) },
            ).then(() => (stopInDoubt = false), async (err) => {
              stopInDoubt = true;
              // The output goes on (a second Ctrl-C detaches); say why the job may not end.
              if (controller.signal.aborted) return;
              const why = err instanceof RetryAbandoned
                ? `${err.lastError.details} (${err.message})`
                : isServiceError(err)
                ? err.details
                : String(err);
              await writeText(deps.stderr, `jobworker: could not stop job ${id}: ${why}\n`)
                .catch(() => {});
            });
            if (deps.stderrIsTerminal) {
              void writeText(
                deps.stderr,
                `\njobworker: stopping job ${id} (Ctrl-C again to detach)\n`,
              )
                .catch(() => {});
            }
          } else {
            controller.abort();
          }
        }, { repeats: true, termination: true });
        try {
          await writeOutput(deps, client, id, { signal: controller.signal });
        } catch (err) {
          if (!controller.signal.aborted) throw err;
        } finally {
          stopListening();
        }
        if (controller.signal.aborted) {
          const unconfirmed = stopInDoubt
            ? ` (its stop may not have reached the worker: jobworker stop ${id})`
            : "";
          await writeText(deps.stderr, `jobworker: detached from job ${id}${unconfirmed}\n`);
          throw new CliError("", EXIT_INTERRUPTED);
        }
        await stopping;
        const ended = await retryAcrossReload(
          `learning how job ${id} ended`,
          () => client.getJob(id),
          { ...retrying, advice: `see jobworker get ${id}` },
        );
        const truncated = truncationNote(ended);
        if (truncated) await writeText(deps.stderr, truncated);
        if (flags.rm) {
          await retryAcrossReload(`deleting job ${id}`, async () => {
            try {
              await client.deleteJob(id);
            } catch (err) {
              // Gone already: a try cut by the reload had deleted it (or someone else did).
              if (!isServiceError(err) || err.code !== Status.NOT_FOUND) throw err;
            }
          }, { ...retrying, advice: `delete it with jobworker rm ${id}` });
        }
        return jobExitCode(ended);
      });
      if (exitCode !== 0) throw new CliError("", exitCode);
    });
  return addConnectionOptions(command as unknown as CommandUnknownOpts);
}
