/**
 * `jobworker certs`: makes the certificates of a deployment (CA, server, one client per role).
 *
 * This module stays light: the certificate library (`cli/pki`, which loads `@peculiar/x509`) is
 * imported only when the command runs.
 *
 * @module
 */
import { Command, InvalidArgumentError } from "@commander-js/extra-typings";
import type { PairReport } from "../pki/provision.ts";

/** The roles a client certificate made by this command may carry (its OU). */
export const CLIENT_ROLES = ["admin", "viewer"] as const;

/** A role of {@link CLIENT_ROLES}. */
export type ClientRole = typeof CLIENT_ROLES[number];

/** One `--client ROLE:NAME` value. */
export interface ClientOption {
  /** The role, written as the OU. */
  role: ClientRole;
  /** The owner, written as the CN. */
  commonName: string;
}

const DEFAULT_SERVER_NAMES = ["localhost", "127.0.0.1"];
const DEFAULT_CLIENTS: ClientOption[] = [
  { role: "admin", commonName: "admin" },
  { role: "viewer", commonName: "viewer" },
];
const DEFAULT_DIR = "./certs";
const DEFAULT_DAYS = 365;
const MAX_DAYS = 36_500;
const MAX_NAME_LENGTH = 64;
/** Exit code of failures (files, directory). */
const EXIT_FAILURE = 1;
/** Exit code of an invalid request found after parsing (the jobworker CLI's usage code). */
const EXIT_USAGE = 2;

/**
 * Parses a `--client` value, `ROLE:NAME` (the name may itself contain colons).
 *
 * @param value The option argument.
 * @returns The role and owner.
 * @throws {InvalidArgumentError} If the form is wrong, the role is unknown or the name is empty
 * or longer than 64 characters.
 *
 * @example
 * ```ts
 * parseClientOption("admin:alice"); // { role: "admin", commonName: "alice" }
 * ```
 */
export function parseClientOption(value: string): ClientOption {
  const colon = value.indexOf(":");
  if (colon < 0) {
    throw new InvalidArgumentError(`Expected ROLE:NAME, for example "admin:alice"`);
  }
  const role = value.slice(0, colon);
  const commonName = value.slice(colon + 1);
  if (!isClientRole(role)) {
    throw new InvalidArgumentError(
      `Unknown role "${role}": the role must be one of ${CLIENT_ROLES.join(", ")}`,
    );
  }
  if (commonName.trim() === "") {
    throw new InvalidArgumentError(`The name after "${role}:" is empty`);
  }
  if ([...commonName].length > MAX_NAME_LENGTH) {
    throw new InvalidArgumentError(`The name is longer than ${MAX_NAME_LENGTH} characters`);
  }
  return { role, commonName };
}

function isClientRole(role: string): role is ClientRole {
  return (CLIENT_ROLES as readonly string[]).includes(role);
}

function collectClients(value: string, previous: ClientOption[] | undefined): ClientOption[] {
  const client = parseClientOption(value);
  if (previous?.some((other) => other.role === client.role)) {
    throw new InvalidArgumentError(
      `The role "${client.role}" is given twice: there is one client certificate per role`,
    );
  }
  return [...(previous ?? []), client];
}

function collectNames(value: string, previous: string[] | undefined): string[] {
  if (value.trim() === "") {
    throw new InvalidArgumentError("The server name is empty");
  }
  return [...(previous ?? []), value];
}

function parseDays(value: string): number {
  const days = /^\d+$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isInteger(days) || days < 1 || days > MAX_DAYS) {
    throw new InvalidArgumentError(`Expected a whole number of days from 1 to ${MAX_DAYS}`);
  }
  return days;
}

/** `$JOB_WORKER_CERT_PATH` if set (and readable without a permission prompt), else `./certs`. */
function defaultDirectory(): string {
  try {
    const fromEnvironment = Deno.env.get("JOB_WORKER_CERT_PATH");
    if (fromEnvironment !== undefined && fromEnvironment !== "") {
      return fromEnvironment;
    }
  } catch {
    // No permission to read the environment: use the built-in default.
  }
  return DEFAULT_DIR;
}

/**
 * Builds the `certs` command (registered into the CLI program as `jobworker certs`).
 *
 * It creates `ca-cert.pem`/`ca-key.pem` when missing and reuses them otherwise, then
 * `server-cert.pem`/`server-key.pem` and `<role>-client-cert.pem`/`<role>-client-key.pem` per
 * client. Existing server and client files are kept unless `--force`. Errors are reported through
 * `Command.error` (a one-line message on stderr, then exit, or a `CommanderError` under
 * `exitOverride`): exit code 2 for an invalid name or role found after parsing (the jobworker CLI
 * maps commander's own parse errors to 2 as well), 1 when files cannot be used or written.
 *
 * @returns The command.
 *
 * @example
 * ```ts
 * program.addCommand(certsCommand());
 * ```
 */
export function certsCommand(): Command {
  const command = new Command("certs")
    .description("Create the CA, server and client certificates for mutual TLS")
    .option(
      "--out <dir>",
      `directory of the files (default: $JOB_WORKER_CERT_PATH, else ${DEFAULT_DIR})`,
    )
    .option(
      "--server-name <name>",
      `DNS name or IP address of the server, repeatable (default: ${
        DEFAULT_SERVER_NAMES.join(" and ")
      })`,
      collectNames,
    )
    .option(
      "--client <role:name>",
      `client certificate with OU=role (${CLIENT_ROLES.join(" or ")}) and CN=name, repeatable ` +
        `(default: ${DEFAULT_CLIENTS.map((c) => `${c.role}:${c.commonName}`).join(" and ")})`,
      collectClients,
    )
    .option("--days <n>", "validity of the server and client certificates", parseDays, DEFAULT_DAYS)
    .option("--force", "replace existing server and client certificates (the CA is always reused)")
    .addHelpText(
      "after",
      `
Files: ca-cert.pem, ca-key.pem, server-cert.pem, server-key.pem and, per client,
<role>-client-cert.pem, <role>-client-key.pem. Keys are PKCS#8 PEM with mode 0600.
The CA is created when missing and reused otherwise; to start over with a new CA,
remove the directory.

Examples:
  jobworker certs
  jobworker certs --out /etc/jobworker --server-name worker1.example.com --server-name 10.0.0.5
  jobworker certs --client admin:alice --client viewer:bob --force`,
    )
    .action(async (options) => {
      const { InvalidRequestError, provisionCertificates } = await import("../pki/provision.ts");
      const dir = options.out ?? defaultDirectory();
      let failure: { message: string; usage: boolean } | undefined;
      try {
        const report = await provisionCertificates({
          dir,
          serverNames: options.serverName ?? DEFAULT_SERVER_NAMES,
          clients: options.client ?? DEFAULT_CLIENTS,
          validDays: options.days,
          force: options.force === true,
        });
        for (const pair of [report.ca, ...report.pairs]) {
          console.log(describePair(pair));
        }
        for (const warning of report.warnings) {
          console.error(`warning: ${warning}`);
        }
      } catch (error) {
        failure = {
          message: error instanceof Error ? error.message : String(error),
          usage: error instanceof InvalidRequestError,
        };
      }
      if (failure?.usage) {
        command.error(`error: ${failure.message}`, {
          exitCode: EXIT_USAGE,
          code: "jobworker.certs.usage",
        });
      } else if (failure !== undefined) {
        // Not a usage problem: no "see --help" hint after it.
        command.showHelpAfterError(false);
        command.error(`error: ${failure.message}`, {
          exitCode: EXIT_FAILURE,
          code: "jobworker.certs.failed",
        });
      }
    });
  return command;
}

function describePair(pair: PairReport): string {
  const what = pair.name === "ca" ? "CA" : pair.name.replace(/-client$/, " client");
  const names = pair.altNames.length > 0 ? ` ${pair.altNames.join(", ")},` : "";
  const details = `${what} "${pair.subject}",${names} expires ${
    pair.notAfter.toISOString().slice(0, 10)
  }`;
  const files = `${pair.certPath}, ${pair.keyPath}`;
  switch (pair.status) {
    case "created":
    case "replaced":
      return `${pair.status.padEnd(8)} ${files}: ${details}`;
    case "reused":
      return `reused   ${files}: ${details}`;
    case "kept":
      return `kept     ${files}: ${details} (exist; --force replaces them)`;
  }
}
