/**
 * Exit codes and one-line messages for what goes wrong: usage, configuration, the server's answers.
 *
 * @module
 */
import type { ServiceError } from "@grpc/grpc-js";
import { CommanderError } from "@commander-js/extra-typings";
import { ConfigError } from "./config.ts";
import { OutputClosedError } from "./io.ts";
import { Status } from "./status.ts";

/** Success. */
export const EXIT_OK = 0;
/** The server refused or failed the request, or it could not be reached. */
export const EXIT_FAILURE = 1;
/** Bad command line or configuration: fix the invocation. */
export const EXIT_USAGE = 2;
/** Interrupted by Ctrl-C (128 + SIGINT). */
export const EXIT_INTERRUPTED = 130;

/** An error that ends the command with a given exit code; an empty message prints nothing. */
export class CliError extends Error {
  /** The error's name. */
  override name = "CliError";
  /** The process exit code to use. */
  readonly exitCode: number;

  /** Make an error that ends the command with `exitCode` after printing `message`. */
  constructor(message: string, exitCode: number) {
    super(message);
    this.exitCode = exitCode;
  }
}

/**
 * A call repeated across a lost connection (a worker reloading in place, cli/reconnect.ts) for
 * longer than the patience: the last try's error, and in the message what was being done.
 */
export class RetryAbandoned extends Error {
  /** The error's name. */
  override name = "RetryAbandoned";

  /**
   * `lastError`: the last try's error; `what`: what was given up ("deleting job X"); `advice`: how
   * to go on, if anything.
   */
  constructor(
    readonly lastError: ServiceError,
    what: string,
    readonly triedMs: number,
    advice = "",
  ) {
    super(
      `gave up ${what} after ${Math.round(triedMs / 1000)} s of retries${advice && `; ${advice}`}`,
    );
  }
}

/**
 * `stream` or `run` lost its connection and could not resume the job's output in time: the last
 * error, and where the output written so far ends (how to go on from there).
 */
export class ResumeAbandoned extends Error {
  /** The error's name. */
  override name = "ResumeAbandoned";

  /** `lastError`: the last try's error; `offset`: the byte after the last one written. */
  constructor(
    readonly lastError: ServiceError,
    readonly jobId: string,
    readonly offset: number,
    readonly triedMs: number,
  ) {
    super(
      `gave up resuming job ${jobId}'s output after ${Math.round(triedMs / 1000)} s; ` +
        `what was written ends at byte ${offset}: go on with ` +
        `"jobworker stream ${jobId} --offset ${offset}"`,
    );
  }
}

/** A bad command line found after parsing (exit code 2). */
export class UsageError extends CliError {
  /** The error's name. */
  override name = "UsageError";

  /** Make a usage error with its message. */
  constructor(message: string) {
    super(message, EXIT_USAGE);
  }
}

export { Status };

const STATUS_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(Status).map(([name, code]) => [code, name]),
);

/** What the message of a failed call may name. */
export interface CallContext {
  /** The server address that was called. */
  server: string;
  /** The job id the call was about, if any. */
  jobId?: string;
  /** The CA and client certificate files in use, for TLS failures. */
  files?: { ca: string; cert: string };
}

/**
 * Why a TLS handshake failed, in words, with the file to check; undefined when `details` is not
 * about TLS.
 */
export function describeTlsFailure(details: string, context: CallContext): string | undefined {
  const ca = context.files ? ` (CA file: ${context.files.ca})` : "";
  const cert = context.files ? ` ${context.files.cert}` : "";
  const host = context.server.replace(/:\d+$/, "").replace(/^\[(.*)\]$/, "$1");
  if (/expired|not yet valid|CertExpired|CertNotValidYet/i.test(details)) {
    return /alert/i.test(details)
      ? `the server refused the client certificate${cert}: it has expired`
      : `the server's certificate has expired or is not valid yet; make a new one ` +
        `(jobworker certs --force on the server)`;
  }
  if (/altname|does not match|NotValidForName|Hostname\/IP/i.test(details)) {
    return `the server's certificate does not name "${host}"; make one that does ` +
      `(jobworker certs --server-name ${host}), or connect by a name it holds`;
  }
  if (
    /unable to (verify|get)|self[- ]signed|UnknownIssuer|unknown ca|certificate verify/i.test(
      details,
    ) && !/alert/i.test(details)
  ) {
    return `the server's certificate is not signed by the CA the client trusts${ca}; ` +
      `use the ca-cert.pem of the server's certificates (--ca, --cert-path)`;
  }
  if (/alert|certificate required|bad certificate|unknown ca|handshake/i.test(details)) {
    return `the server refused the client certificate${cert} (issued by another CA, expired, ` +
      `or not a client certificate)`;
  }
  return undefined;
}

/**
 * What answers at the address when it is not a jobworker server, as the transport saw it in the
 * TLS handshake (RpcError.foreign), and what to do about it; undefined for any other error.
 */
export function describeForeignService(
  err: ServiceError,
): { what: string; advice: string } | undefined {
  const foreign = (err as { foreign?: unknown }).foreign;
  const check = "check the address (--server, JOB_WORKER_ADDR, the context)";
  if (foreign === "not-tls") {
    return {
      what: "it does not speak TLS",
      advice: `Another service listens there (plain HTTP, ssh, ...): ${check}`,
    };
  }
  if (foreign === "not-h2") {
    return {
      what: "it speaks TLS but not HTTP/2",
      advice:
        "Likely a TLS-terminating proxy without HTTP/2 (gRPC) pass-through at that address, " +
        `or another TLS service: ${check}, or let the proxy pass TLS through to jobworker`,
    };
  }
  return undefined;
}

/** Whether `err` is a grpc-js status error (it has a numeric `code` and `details`). */
export function isServiceError(err: unknown): err is ServiceError {
  return err instanceof Error && typeof (err as Partial<ServiceError>).code === "number" &&
    typeof (err as Partial<ServiceError>).details === "string";
}

/** The friendly message for a failed call, without a trailing newline. */
export function rpcErrorMessage(err: ServiceError, context: CallContext): string {
  const details = err.details || STATUS_NAMES[err.code] || `status ${err.code}`;
  switch (err.code) {
    case Status.UNAVAILABLE: {
      const foreign = describeForeignService(err);
      if (foreign) {
        return `What answers at ${context.server} is not a jobworker server: ${foreign.what} ` +
          `(${plainDetails(details)}). ${foreign.advice}`;
      }
      const tls = describeTlsFailure(details, context);
      if (tls) {
        return `TLS handshake with the jobworker server at ${context.server} failed: ${tls} ` +
          `(${plainDetails(details)})`;
      }
      return `Cannot reach the jobworker server at ${context.server}: ${plainDetails(details)}. ` +
        "Is the server running there (make serve, jobworker serve)?";
    }
    case Status.DEADLINE_EXCEEDED:
      return `The jobworker server at ${context.server} did not answer in time (${details})`;
    case Status.NOT_FOUND:
      return context.jobId !== undefined ? `No job with id "${context.jobId}"` : details;
    case Status.PERMISSION_DENIED:
      return `Permission denied: ${details}`;
    case Status.UNAUTHENTICATED:
      return `Not authenticated: ${details}`;
    case Status.CANCELLED:
      return "Cancelled";
    case Status.INVALID_ARGUMENT:
      return startFailure(details) ?? details;
    case Status.FAILED_PRECONDITION:
    case Status.RESOURCE_EXHAUSTED:
      return details;
    default:
      return `${STATUS_NAMES[err.code] ?? `Status ${err.code}`}: ${details}`;
  }
}

/**
 * The message for a call about one of several jobs (`rm A B`, `stop A B`) that this job refused:
 * it does not exist (any more), or it is in the wrong state; undefined for any other failure (the
 * server, the connection, a permission), which ends the command. The message names that job only.
 */
export function oneJobFailure(err: unknown, jobId: string): string | undefined {
  if (!isServiceError(err)) return undefined;
  if (err.code !== Status.NOT_FOUND && err.code !== Status.FAILED_PRECONDITION) return undefined;
  return rpcErrorMessage(err, { server: "the server", jobId });
}

const ERRNO_WORDS: Record<string, string> = {
  ENOENT: "no such directory",
  ENOTDIR: "not a directory",
  EACCES: "permission denied",
  EPERM: "permission denied",
};

/**
 * A caller's value as init quotes it in a start failure (a JSON string literal): its text is shown
 * as it came, escapes and all, so no control character reaches the terminal.
 */
const QUOTED = String.raw`"((?:[^"\\]|\\.)*)"`;
const NOT_FOUND_IN_PATH = new RegExp(
  String.raw`command not found: ${QUOTED} \(PATH=(?:${QUOTED}|([^)]*))\)`,
);
const NOT_FOUND = new RegExp(`command not found: ${QUOTED}`);
/** A command init could not look up: `"./loop" cannot be looked up: ELOOP (too many levels …)`. */
const UNRESOLVABLE = new RegExp(
  String.raw`${QUOTED} cannot be looked up: (?:E[A-Z0-9]+ \(([^)]*)\)|(.*))`,
);
const NO_WORKDIR = new RegExp(
  String.raw`entering workDir ${QUOTED}.*?\b(E[A-Z]+)\b(?: \(([^)]*)\))?`,
);

/**
 * A job that could not start, said as a shell would: `/no/such: no such file`,
 * `./loop: too many levels of symbolic links`, `--workdir /nope: no such directory`; undefined for
 * other messages.
 */
export function startFailure(details: string): string | undefined {
  const name = NOT_FOUND_IN_PATH.exec(details);
  if (name) return `${name[1]}: command not found (the job's PATH is ${name[2] ?? name[3]})`;
  const path = NOT_FOUND.exec(details);
  if (path?.[1]?.includes("/")) return `${path[1]}: no such file`;
  // The server's words for the errno, as for a workDir's (ELOOP, ENOTDIR, ENAMETOOLONG).
  const unresolvable = UNRESOLVABLE.exec(details);
  if (unresolvable) return `${unresolvable[1]}: ${unresolvable[2] ?? unresolvable[3]}`;
  const workdir = NO_WORKDIR.exec(details);
  if (workdir) {
    // An errno without a word of ours says what the server said of it ("too many levels of
    // symbolic links"), not its name lowercased ("eloop").
    const words = ERRNO_WORDS[workdir[2]!] ?? workdir[3]?.toLowerCase() ?? workdir[2]!;
    return `--workdir ${workdir[1]}: ${words}`;
  }
  return undefined;
}

/** grpc-js connection details without their boilerplate. */
function plainDetails(details: string): string {
  return details
    .replace(/^No connection established\. Last error: /, "")
    .replace(/\. Resolution note: $/, "")
    .replace(/^Error(?: \[\w+\])?: /, "")
    .replace(/\.$/, "");
}

/** The outcome of a failed command: what to print (may be empty) and the exit code. */
export interface Failure {
  /** One line for stderr, without "error: "; empty when nothing is to be printed. */
  message: string;
  /** The process exit code. */
  exitCode: number;
}

/**
 * Map anything a command threw to a message and exit code. Commander's own errors were printed by
 * commander already, so their message is empty.
 */
export function describeFailure(err: unknown): Failure {
  if (err instanceof CommanderError) {
    const usage = err.code.startsWith("commander.") && err.exitCode !== 0;
    return { message: "", exitCode: usage ? EXIT_USAGE : err.exitCode };
  }
  if (err instanceof CliError) return { message: err.message, exitCode: err.exitCode };
  if (err instanceof ConfigError) return { message: err.message, exitCode: EXIT_USAGE };
  if (err instanceof OutputClosedError) return { message: "", exitCode: EXIT_OK };
  if (isServiceError(err)) {
    return { message: rpcErrorMessage(err, { server: "the server" }), exitCode: EXIT_FAILURE };
  }
  return { message: err instanceof Error ? err.message : String(err), exitCode: EXIT_FAILURE };
}
