/**
 * `jobworker list`: the jobs, newest first, as a table with a count per status.
 *
 * @module
 */
import { Command, type CommandUnknownOpts, Option } from "@commander-js/extra-typings";
import { jobworker } from "../../proto/service.ts";
import { colorEnabled } from "../color.ts";
import { type CliDeps, withClient } from "../context.ts";
import { UsageError } from "../errors.ts";
import { jsonLine, jsonText } from "../format.ts";
import { writeText } from "../io.ts";
import { listAllJobs } from "../jobs.ts";
import { isConnectionLoss, millisecondsOf, Reconnection } from "../reconnect.ts";
import { addConnectionOptions, positiveInteger } from "../options.ts";
import { jobsToJson, renderJobList } from "../render.ts";

const STATUSES = ["INITIALIZING", "RUNNING", "COMPLETED", "FAILED", "STOPPED"];

function collectStatuses(value: string, previous: string[] | undefined): string[] {
  const names = value.split(",").map((s) => s.trim().toUpperCase()).filter((s) => s !== "");
  for (const name of names) {
    if (!STATUSES.includes(name)) {
      throw new UsageError(`Unknown status "${name}": one of ${STATUSES.join(", ")}`);
    }
  }
  return [...(previous ?? []), ...names];
}

/** The `list` command. */
export function listCommand(deps: CliDeps): CommandUnknownOpts {
  const command = new Command("list")
    .alias("ls")
    .description("List the jobs, newest first, and a count per status")
    .option(
      "--status <status>",
      "only jobs in this status (repeatable, or comma-separated)",
      collectStatuses,
    )
    .option("--owner <name>", "only jobs of this owner (certificate CN)")
    .option("-q, --quiet", "only the full ids, one a line")
    .option(
      "-w, --watch",
      "refresh in place until Ctrl-C (on a terminal; otherwise with --json one document a line, " +
        "with -q a blank line between refreshes)",
    )
    .addOption(
      // At least 1: with 0 --watch polled the server in a loop without a pause.
      new Option("--interval <seconds>", "refresh interval of --watch").argParser(
        positiveInteger(3600),
      ).default(2),
    )
    .option("--json", "print JSON: { jobs: [...], countByStatus: {...} }")
    .addHelpText(
      "after",
      `
Columns: ID (the shortest unique prefix, at least 8 characters; any unique prefix works
wherever an id is asked for), STATUS, COMMAND, OWNER, AGE (since created), DURATION (run
time so far), EXIT (exit code, or the signal that ended the job).
Examples:
  jobworker list
  jobworker list --status running,failed --owner alice
  jobworker list -q --status completed | xargs jobworker rm
  jobworker list --watch`,
    )
    .action(async (flags, cmd) => {
      const req: jobworker.IListJobsReq = {
        statuses: (flags.status ?? []).map((s) =>
          jobworker.JobStatus[s as keyof typeof jobworker.JobStatus]
        ),
        ...(flags.owner ? { owner: flags.owner } : {}),
      };
      const color = colorEnabled(deps.stdoutIsTerminal, deps.env);
      const render = async (client: Parameters<typeof listAllJobs>[0]) => {
        const jobs = await listAllJobs(client, req);
        // Under --watch, JSON Lines: one compact document a refresh, a line each.
        if (flags.json) {
          return flags.watch ? jsonLine(jobsToJson(jobs)) : jsonText(jobsToJson(jobs));
        }
        if (flags.quiet) return jobs.jobs.map((job) => `${job.id}\n`).join("");
        return renderJobList(jobs, { now: deps.now(), width: deps.columns(), color });
      };
      // A watch retries a lost connection itself (cli/reconnect.ts), so its client does not:
      // one backoff, not the call's own retries inside each of the watch's.
      const connect = flags.watch ? { retry: false } : {};
      await withClient(deps, cmd, {}, async (client) => {
        if (!flags.watch) return await writeText(deps.stdout, await render(client));
        let stop = false;
        const stopListening = deps.onInterrupt(() => (stop = true), { repeats: true });
        const pause = async (ms: number) => {
          for (let waited = 0; waited < ms && !stop; waited += 100) await deps.sleep(100);
        };
        let rendered = false;
        const reconnection = new Reconnection(millisecondsOf(deps));
        try {
          while (!stop) {
            let text: string;
            try {
              text = await render(client);
            } catch (err) {
              // The worker reloading or recycling in place cuts the call and does not listen for
              // a moment, longer than a call's own retries wait on a loaded host: keep watching.
              // A server never reached (a wrong --server, a stopped worker) fails at once.
              if (!rendered || !isConnectionLoss(err)) throw err;
              const delay = reconnection.lost();
              if (delay === undefined) throw err;
              if (reconnection.attempt === 1 && deps.stderrIsTerminal) {
                await writeText(deps.stderr, "jobworker: connection lost; retrying\n");
              }
              await pause(delay);
              continue;
            }
            const first = !rendered;
            rendered = true;
            reconnection.reset();
            const clear = deps.stdoutIsTerminal ? "\x1b[H\x1b[2J" : "";
            // With --json or -q each refresh is data only (a JSON line, or ids), so that a script
            // can read the watch: the heading made it neither. The ids of one refresh end at a
            // blank line, else nothing told where the next began (a terminal is cleared instead).
            const stamp = flags.json
              ? ""
              : flags.quiet
              ? (first || clear ? "" : "\n")
              : `Every ${flags.interval}s: jobworker list (Ctrl-C to quit)\n\n`;
            await writeText(deps.stdout, clear + stamp + text);
            await pause(flags.interval * 1000);
          }
        } finally {
          stopListening();
        }
      }, connect);
    });
  return addConnectionOptions(command);
}
