/**
 * `jobworker context add|use|list|rm`: named servers in the client's config file
 * (`$XDG_CONFIG_HOME/jobworker/config.json`). Precedence: flags > environment
 * (JOB_WORKER_ADDR, JOB_WORKER_CERT_PATH) > the context > built-in defaults.
 *
 * @module
 */
import { Command, type CommandUnknownOpts, Option } from "@commander-js/extra-typings";
import { ConfigError } from "../config.ts";
import { parseServerAddress } from "../address.ts";
import type { CliDeps } from "../context.ts";
import {
  type ClientConfig,
  ConfigFileError,
  configFilePath,
  type ContextEntry,
  readClientConfig,
  writeClientConfig,
} from "../contexts.ts";
import { UsageError } from "../errors.ts";
import { writeText } from "../io.ts";
import { jsonText, renderTable } from "../format.ts";

function load(deps: CliDeps): { path: string; config: ClientConfig } {
  const path = configFilePath(deps.env);
  try {
    return { path, config: readClientConfig(path) };
  } catch (err) {
    if (err instanceof ConfigFileError) throw new ConfigError(err.message);
    throw err;
  }
}

function absolute(path: string): string {
  return path.startsWith("/") ? path : `${Deno.cwd()}/${path}`;
}

/** The `context` command and its subcommands. */
export function contextCommand(deps: CliDeps): CommandUnknownOpts {
  const command = new Command("context")
    .description("Named servers: add, use, list, rm")
    .addHelpText(
      "after",
      `
The config file is $XDG_CONFIG_HOME/jobworker/config.json (~/.config/jobworker/config.json).
--context NAME (or JOB_WORKER_CONTEXT) picks a context for one command; otherwise the one
"context use" chose. Flags, then JOB_WORKER_ADDR / JOB_WORKER_CERT_PATH, override it.
Examples:
  jobworker context add prod --server worker1.example.com:50051 --cert-path ~/.jobworker --use
  jobworker context list
  jobworker --context prod list`,
    );
  command.command("add")
    .description("Add (or replace) a context")
    .argument("<name>", "its name")
    .requiredOption("--server <host:port>", "the server's address")
    .option("--cert-path <dir>", "directory of ca-cert.pem and <role>-client-{cert,key}.pem")
    .addOption(
      new Option("--role <role>", "which client certificate of the directory").choices(
        ["admin", "viewer"] as const,
      ),
    )
    .option("--ca <file>", "CA certificate file")
    .option("--cert <file>", "client certificate file")
    .option("--key <file>", "client key file")
    .option("--use", "make it the current context")
    .action(async (name, flags) => {
      try {
        parseServerAddress(flags.server);
      } catch (err) {
        throw new UsageError((err as Error).message);
      }
      const { path, config } = load(deps);
      const entry: ContextEntry = { server: flags.server };
      if (flags.certPath) entry.certPath = absolute(flags.certPath);
      if (flags.role) entry.role = flags.role;
      if (flags.ca) entry.ca = absolute(flags.ca);
      if (flags.cert) entry.cert = absolute(flags.cert);
      if (flags.key) entry.key = absolute(flags.key);
      config.contexts[name] = entry;
      if (flags.use || config.current === undefined) config.current = name;
      writeClientConfig(path, config);
      await writeText(deps.stdout, `context "${name}" saved in ${path}\n`);
    });
  command.command("use")
    .description("Make a context the current one")
    .argument("<name>", "its name")
    .action(async (name) => {
      const { path, config } = load(deps);
      if (!config.contexts[name]) throw new UsageError(`No context "${name}" in ${path}`);
      config.current = name;
      writeClientConfig(path, config);
      await writeText(deps.stdout, `current context: ${name}\n`);
    });
  command.command("list")
    .alias("ls")
    .description("List the contexts (* marks the current one)")
    .option("--json", "print the config file's content: { current, contexts: { name: {...} } }")
    .action(async (flags) => {
      const { config } = load(deps);
      if (flags.json) {
        return await writeText(deps.stdout, jsonText(config));
      }
      const rows = Object.entries(config.contexts).map(([name, c]) => [
        name === config.current ? "*" : "",
        name,
        c.server,
        c.certPath ?? c.cert ?? "",
      ]);
      await writeText(
        deps.stdout,
        rows.length > 0
          ? renderTable(["", "NAME", "SERVER", "CERTIFICATES"], rows)
          : "no contexts (jobworker context add NAME --server HOST:PORT ...)\n",
      );
    });
  command.command("rm")
    .description("Remove a context")
    .argument("<name>", "its name")
    .action(async (name) => {
      const { path, config } = load(deps);
      if (!config.contexts[name]) throw new UsageError(`No context "${name}" in ${path}`);
      delete config.contexts[name];
      if (config.current === name) delete config.current;
      writeClientConfig(path, config);
      await writeText(deps.stdout, `context "${name}" removed\n`);
    });
  return command as unknown as CommandUnknownOpts;
}
