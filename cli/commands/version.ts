/**
 * `jobworker version` (and `jobworker --version`): the client's version and, when a server is
 * reachable, what it is (GetServerInfo): version, cgroup version, limits, isolation, and who the
 * caller is to it.
 *
 * @module
 */
import { Command, type CommandUnknownOpts } from "@commander-js/extra-typings";
import { ConfigError } from "../config.ts";
import { type CliDeps, withClient } from "../context.ts";
import { CliError, EXIT_FAILURE } from "../errors.ts";
import { writeText } from "../io.ts";
import { addConnectionOptions } from "../options.ts";
import { toDate } from "../render.ts";
import { formatLocalTime, jsonText } from "../format.ts";
import { CLIENT_VERSION } from "../version.ts";

/** The `version` command. */
export function versionCommand(deps: CliDeps): CommandUnknownOpts {
  const command = new Command("version")
    .description("Show the client's version and the server's (what it can do, who you are to it)")
    .option("--client", "only the client's version (no server call)")
    .option("--json", "print JSON: { client: {version}, server: {...} | null, error?: string }")
    .addHelpText(
      "after",
      `
Exit code 1 when the server cannot be asked (the client's version is printed anyway).
Examples:
  jobworker version
  jobworker --version
  jobworker version --context prod --json`,
    )
    .action(async (flags, cmd) => {
      const client = { version: CLIENT_VERSION };
      if (flags.client) {
        const text = flags.json
          ? jsonText({ client, server: null })
          : `Client: jobworker ${CLIENT_VERSION}\n`;
        return await writeText(deps.stdout, text);
      }
      let error: string | undefined;
      let failure: unknown;
      const info = await withClient(deps, cmd, {}, (c) => c.serverInfo()).catch((err) => {
        failure = err;
        error = err instanceof Error ? err.message : String(err);
        return undefined;
      });
      if (flags.json) {
        const server = info
          ? {
            version: info.version,
            startTime: toDate(info.startTime)?.toISOString() ?? null,
            reloadTime: toDate(info.reloadTime)?.toISOString() ?? null,
            cgroupVersion: info.cgroupVersion,
            limits: [...info.limits],
            isolation: [...info.isolation],
            runningJobs: info.runningJobs,
            maxRunningJobs: info.maxRunningJobs,
            callerName: info.callerName,
            callerRole: info.callerRole,
          }
          : null;
        await writeText(
          deps.stdout,
          jsonText({ client, server, ...(error ? { error } : {}) }),
        );
      } else {
        const lines = [`Client: jobworker ${CLIENT_VERSION}`];
        if (info) {
          const started = toDate(info.startTime);
          lines.push(
            `Server: jobworker ${info.version || "?"}`,
            `  Started:    ${started ? formatLocalTime(started) : "-"}`,
            `  cgroups:    ${info.cgroupVersion || "?"}`,
            `  Limits:     ${info.limits.join(", ") || "none"}`,
            `  Isolation:  ${info.isolation.join(", ") || "none"}`,
            `  Jobs:       ${info.runningJobs} running (at most ${info.maxRunningJobs})`,
            `  You:        ${info.callerName} (${info.callerRole})`,
          );
        }
        await writeText(deps.stdout, lines.join("\n") + "\n");
      }
      if (failure instanceof ConfigError) throw failure;
      if (failure instanceof CliError) throw failure;
      if (failure !== undefined) throw new CliError(error ?? "", EXIT_FAILURE);
    });
  return addConnectionOptions(command);
}
