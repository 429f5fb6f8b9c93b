/**
 * Option building blocks shared by the commands: the connection options (accepted by the program
 * and by every job command) and validating parsers for numbers and `KEY=VALUE` pairs.
 *
 * @module
 */
import { type CommandUnknownOpts, InvalidArgumentError, Option } from "@commander-js/extra-typings";
import {
  type ConnectionFlags,
  DEFAULT_SERVER,
  ENV_ADDR,
  ENV_CERT_PATH,
  type Role,
  ROLES,
} from "./config.ts";

/** Largest value of a protobuf int32 field. */
export const INT32_MAX = 2 ** 31 - 1;

/**
 * Most seconds a timeout or grace period may be: the server refuses more (its timers hold at most
 * 2^31 - 1 ms, about 24.8 days), so the client says so as a usage error before calling it.
 */
export const MAX_SECONDS = 2_147_483;

const CONNECTION_GROUP = "Connection options:";

/**
 * Add the connection options (`--server`, `--cert-path`, `--role`, `--ca`, `--cert`, `--key`,
 * `--context`) to a command. They have no commander defaults, so an absent option reads as undefined and the
 * environment and built-in defaults apply (see `config.ts`).
 */
export function addConnectionOptions<C extends CommandUnknownOpts>(command: C): C {
  const options = [
    new Option(
      "--server <host:port>",
      `server address (env ${ENV_ADDR}, default ${DEFAULT_SERVER})`,
    ),
    new Option(
      "--cert-path <dir>",
      `directory of ca-cert.pem and <role>-client-{cert,key}.pem (env ${ENV_CERT_PATH})`,
    ),
    new Option("--role <role>", "which client certificate of the directory to use (default admin)")
      .choices(ROLES),
    new Option("--ca <file>", "CA certificate file (overrides the directory's)"),
    new Option("--cert <file>", "client certificate file (overrides the directory's)"),
    new Option("--key <file>", "client key file (overrides the directory's)"),
    new Option("--context <name>", "use a named server from the config file (jobworker context)"),
    new Option(
      "--request-timeout <seconds>",
      "how long to wait for each answer of the server (default 30; stop adds the grace period)",
    ).argParser(positiveInteger(24 * 3600)),
  ];
  for (const option of options) command.addOption(option.helpGroup(CONNECTION_GROUP));
  return command;
}

const FLAG_KEYS = ["server", "certPath", "ca", "cert", "key", "context"] as const;

/**
 * The connection flags seen by `command` and its ancestors; a flag given after the subcommand name
 * wins over the same flag given before it.
 */
export function connectionFlags(command: CommandUnknownOpts): ConnectionFlags {
  const flags: ConnectionFlags = {};
  for (let cmd: CommandUnknownOpts | null = command; cmd; cmd = cmd.parent) {
    const values: Record<string, unknown> = cmd.opts();
    for (const key of FLAG_KEYS) {
      const value = values[key];
      if (flags[key] === undefined && typeof value === "string") flags[key] = value;
    }
    const role = values.role;
    if (flags.role === undefined && isRole(role)) flags.role = role;
    const timeout = values.requestTimeout;
    if (flags.requestTimeout === undefined && typeof timeout === "number") {
      flags.requestTimeout = timeout;
    }
  }
  return flags;
}

function isRole(value: unknown): value is Role {
  return (ROLES as readonly unknown[]).includes(value);
}

/** A commander argument parser for whole numbers from `min` to `max`. */
function integerIn(min: number, max: number): (value: string) => number {
  return (value) => {
    const n = /^\d+$/.test(value) ? Number(value) : NaN;
    if (!(n >= min && n <= max)) {
      throw new InvalidArgumentError(`Expected a whole number from ${min} to ${max}.`);
    }
    return n;
  };
}

/**
 * A commander argument parser for whole numbers from 0 to `max`.
 *
 * @example
 * ```ts
 * new Option("--timeout <seconds>").argParser(nonNegativeInteger(INT32_MAX));
 * ```
 */
export function nonNegativeInteger(max: number): (value: string) => number {
  return integerIn(0, max);
}

/** A commander argument parser for whole numbers from 1 to `max`. */
export function positiveInteger(max: number): (value: string) => number {
  return integerIn(1, max);
}

/** A commander collector of repeated `KEY=VALUE` options, checking the form. */
export function collectKeyValue(value: string, previous: string[] | undefined): string[] {
  const eq = value.indexOf("=");
  if (eq <= 0) throw new InvalidArgumentError(`Expected KEY=VALUE with a non-empty KEY.`);
  return [...(previous ?? []), value];
}
