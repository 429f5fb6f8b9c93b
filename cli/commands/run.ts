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
import { CliError, EXIT_INTERRUPTED } from "../errors.ts";
import { writeText } from "../io.ts";
import { addConnectionOptions } from "../options.ts";
import { writeOutput } from "../output.ts";
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
kill, 143 for SIGTERM). Ctrl-C stops the job and waits for its end; a second Ctrl-C
detaches (exit code 130) and prints the job's id on stderr.
Examples:
  jobworker run bash -c 'echo building; make -j4'
  jobworker run --rm --max-memory 64 python3 -c 'print(1)'
  jobworker run --detach sleep 600`,
    )
    .action(async (commandName, args, flags, cmd) => {
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
        let stopping: Promise<unknown> | undefined;
        const stopListening = deps.onInterrupt((count) => {
          if (count === 1) {
            stopping = client.stopJob(id, {}).catch(() => {});
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
        }, { repeats: true });
        try {
          await writeOutput(deps, client, id, { signal: controller.signal });
        } catch (err) {
          if (!controller.signal.aborted) throw err;
        } finally {
          stopListening();
        }
        if (controller.signal.aborted) {
          await writeText(deps.stderr, `jobworker: detached from job ${id}\n`);
          throw new CliError("", EXIT_INTERRUPTED);
        }
        await stopping;
        const ended = await client.getJob(id);
        if (flags.rm) await client.deleteJob(id);
        return jobExitCode(ended);
      });
      if (exitCode !== 0) throw new CliError("", exitCode);
    });
  return addConnectionOptions(command as unknown as CommandUnknownOpts);
}
