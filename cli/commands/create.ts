/**
 * `jobworker create [options] <command> [args...]`: start a job, print its id.
 *
 * Options are read only before the job's command name; everything from the command name on is the
 * job's (`create bash -c "echo hi"`). `--` ends the options early (`create -- ls -l`).
 *
 * @module
 */
import { Command, type CommandUnknownOpts, Option } from "@commander-js/extra-typings";
import type { jobworker } from "../../proto/service.ts";
import { type CliDeps, withClient } from "../context.ts";
import { jsonText } from "../format.ts";
import { writeText } from "../io.ts";
import {
  addConnectionOptions,
  collectKeyValue,
  INT32_MAX,
  MAX_SECONDS,
  nonNegativeInteger,
} from "../options.ts";
import { jobToJson } from "../render.ts";

/** The job options of `create` and `run`, as parsed. */
export interface CreateFlags {
  /** `--env`: `KEY=VALUE` entries. */
  env?: string[];
  /** `--workdir`: the job's working directory. */
  workdir?: string;
  /** `--timeout`: seconds. */
  timeout?: number;
  /** `--max-cpu`: percent of one core. */
  maxCpu?: number;
  /** `--max-memory`: MiB. */
  maxMemory?: number;
  /** `--max-iobps`: bytes per second. */
  maxIobps?: number;
  /** `--max-pids`: processes and threads. */
  maxPids?: number;
  /** `--user NAME|UID[:GID]`. */
  user?: string;
  /** `--network host|none`. */
  network?: string;
  /** `--privileged`. */
  privileged?: boolean;
  /** `--init`. */
  init?: boolean;
}

/**
 * The CreateJob request for a parsed command line. Absent options are left out, so the server's
 * defaults apply.
 *
 * @example
 * ```ts
 * buildCreateRequest("bash", ["-c", "echo hi"], { env: ["A=B"] });
 * // { command: "bash", args: ["-c", "echo hi"], env: ["A=B"] }
 * ```
 */
export function buildCreateRequest(
  command: string,
  args: readonly string[],
  flags: CreateFlags,
): jobworker.ICreateJobReq {
  const req: jobworker.ICreateJobReq = { command, args: [...args], env: [...(flags.env ?? [])] };
  if (flags.workdir !== undefined) req.workDir = flags.workdir;
  if (flags.timeout !== undefined) req.timeoutSeconds = flags.timeout;
  if (flags.maxCpu !== undefined) req.maxCPU = flags.maxCpu;
  if (flags.maxMemory !== undefined) req.maxMemory = flags.maxMemory;
  if (flags.maxIobps !== undefined) req.maxIOBPS = flags.maxIobps;
  if (flags.maxPids !== undefined) req.maxPids = flags.maxPids;
  if (flags.user !== undefined) req.user = flags.user;
  if (flags.network !== undefined) req.network = flags.network;
  if (flags.privileged) req.privileged = true;
  if (flags.init) req.init = true;
  return req;
}

/** Parsed job options as commander types them. */
export type JobFlags = CreateFlags & Record<string, unknown>;

/** The job options shared by `create` and `run`, and the job's command arguments. */
export function addJobOptions(command: Command): Command<[string, string[]], JobFlags> {
  const int32 = nonNegativeInteger(INT32_MAX);
  return command
    .passThroughOptions()
    .option("--env <KEY=VALUE>", "add to the job's environment (repeatable)", collectKeyValue)
    .option("--workdir <dir>", "working directory of the job (default /)")
    .option(
      "--timeout <seconds>",
      "stop the job after this long (default: no timeout)",
      nonNegativeInteger(MAX_SECONDS),
    )
    .option("--max-cpu <percent>", "CPU limit in percent of one core (default: server's)", int32)
    .option("--max-memory <MiB>", "memory limit in MiB (default: server's)", int32)
    .option(
      "--max-iobps <bytes>",
      "read and write limit, each, in bytes/s (default: server's)",
      int32,
    )
    .option("--max-pids <n>", "most processes and threads at once (default: server's)", int32)
    .option("--user <user>", "run as NAME, UID or UID:GID (default: server's)")
    .addOption(
      new Option("--network <mode>", "host (default) or none (loopback only)").choices([
        "host",
        "none",
      ]),
    )
    .option("--privileged", "every capability, no masks (if the server allows it)")
    .option("--init", "a minimal init as PID 1 that forwards signals and reaps orphans")
    .argument("<command>", "program to run: a path, or a name looked up in the job's PATH")
    .argument("[args...]", "its arguments, passed as they are (options included)") as Command<
      [string, string[]],
      JobFlags
    >;
}

/** The `create` command. */
export function createCommand(deps: CliDeps): CommandUnknownOpts {
  const command = addJobOptions(
    new Command("create").description("Start a job and print its id"),
  )
    .option("--json", "print the created job as JSON (the shape of get --json)")
    .addHelpText(
      "after",
      `
Options go before the job's command; everything after it belongs to the job.
Examples:
  jobworker create bash -c "echo hi; sleep 5"
  jobworker create --max-memory 256 --env MODE=test -- ./run.sh --verbose
  jobworker create --network none --user nobody --init python3 -m http.server`,
    )
    .action(async (command, args, flags, cmd) => {
      const req = {
        ...buildCreateRequest(command, args, flags),
        requestId: crypto.randomUUID(),
      };
      const job = await withClient(deps, cmd, {}, (client) => client.createJob(req));
      const json = flags.json === true;
      await writeText(
        deps.stdout,
        json ? jsonText(jobToJson(job)) : `${job.id}\n`,
      );
    });
  return addConnectionOptions(command as unknown as CommandUnknownOpts);
}
