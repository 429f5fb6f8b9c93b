/**
 * What the commands need from the outside world, as one injectable object, so that parsing and
 * output can be tested without a server, files or a terminal.
 *
 * @module
 */
import type { CommandUnknownOpts } from "@commander-js/extra-typings";
import type { ConnectionSettings, JobClient } from "./client.ts";
import {
  ConfigError,
  type ConnectionFlags,
  type EnvReader,
  loadConnectionSettings,
  type ResolvedSettings,
} from "./config.ts";
import {
  type CallContext,
  CliError,
  EXIT_FAILURE,
  EXIT_INTERRUPTED,
  isServiceError,
  ResumeAbandoned,
  RetryAbandoned,
  rpcErrorMessage,
} from "./errors.ts";
import { fileSink, type Sink } from "./io.ts";
import { connectionFlags } from "./options.ts";
import { startTlsWarmUp } from "./tls_warmup.ts";

/** The calls of {@linkcode JobClient} the commands use. */
export type JobApi = Pick<
  JobClient,
  | "createJob"
  | "getJob"
  | "stopJob"
  | "listJobs"
  | "listJobsPage"
  | "deleteJob"
  | "serverInfo"
  | "stream"
  | "close"
>;

/** The command line's view of the world. */
export interface CliDeps {
  /** Standard output. */
  stdout: Sink;
  /** Standard error. */
  stderr: Sink;
  /** The environment. */
  env: EnvReader;
  /** The current time. */
  now(): Date;
  /** Width of the terminal when standard output is one. */
  columns(): number | undefined;
  /** Whether standard output is a terminal. */
  stdoutIsTerminal: boolean;
  /** Whether standard error is a terminal. */
  stderrIsTerminal: boolean;
  /** Connection settings (certificate files read) from the flags. */
  loadSettings(flags: ConnectionFlags): Promise<ConnectionSettings | ResolvedSettings>;
  /** A client for the settings (the gRPC library is loaded only here). */
  connect(settings: ConnectionSettings): JobApi | Promise<JobApi>;
  /** Wait. */
  sleep(ms: number): Promise<void>;
  /**
   * Call `handler` on Ctrl-C (instead of dying) until the returned function is called. A second
   * Ctrl-C exits at once (130), unless `repeats` is set: then every Ctrl-C calls the handler with
   * how many there were so far. With `termination`, SIGTERM and SIGHUP count as Ctrl-C too (a
   * `timeout`, a supervisor stopping the client, a closed terminal).
   */
  onInterrupt(
    handler: (count: number) => void,
    options?: { repeats?: boolean; termination?: boolean },
  ): () => void;
}

/** The real world: Deno's stdio, environment, clock, terminal, files and network. */
export function defaultDeps(): CliDeps {
  const env: EnvReader = (name) => Deno.env.get(name);
  return {
    stdout: fileSink(Deno.stdout),
    stderr: fileSink(Deno.stderr),
    env,
    now: () => new Date(),
    columns: () => Deno.stdout.isTerminal() ? Deno.consoleSize().columns : undefined,
    stdoutIsTerminal: Deno.stdout.isTerminal(),
    stderrIsTerminal: Deno.stderr.isTerminal(),
    loadSettings: (flags) => loadConnectionSettings(flags, env),
    connect: async (settings) =>
      (await import("./client.ts")).JobClient.connect({
        ...settings,
        retry: settings.retry ?? true,
        transport: "http2",
      }),
    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    onInterrupt(handler, options = {}) {
      let interrupts = 0;
      // The first Ctrl-C asks for a clean stop; a second one does not wait for it.
      const listener = () =>
        ++interrupts > 1 && !options.repeats ? Deno.exit(EXIT_INTERRUPTED) : handler(interrupts);
      const signals: Deno.Signal[] = options.termination
        ? ["SIGINT", "SIGTERM", "SIGHUP"]
        : ["SIGINT"];
      for (const signal of signals) Deno.addSignalListener(signal, listener);
      return () => {
        for (const signal of signals) Deno.removeSignalListener(signal, listener);
      };
    },
  };
}

/**
 * Connect with the connection flags `command` was given (and `connection`: `retry: false` for a
 * caller that retries itself), run `fn`, close. A failed call becomes a
 * {@linkcode CliError} with a friendly message naming the server (and `jobId` for NOT_FOUND).
 *
 * @throws {ConfigError} When the settings are wrong or the TLS files cannot be used.
 * @throws {CliError} When a call fails.
 */
export async function withClient<T>(
  deps: CliDeps,
  command: CommandUnknownOpts,
  call: Omit<CallContext, "server">,
  fn: (client: JobApi) => Promise<T>,
  connection: Pick<ConnectionSettings, "retry"> = {},
): Promise<T> {
  startTlsWarmUp();
  const settings = await deps.loadSettings(connectionFlags(command));
  let client: JobApi;
  try {
    client = await deps.connect({ ...settings, ...connection });
  } catch (err) {
    throw new ConfigError(`Cannot use the TLS certificate files: ${(err as Error).message}`);
  }
  const files = "files" in settings ? { files: settings.files } : {};
  try {
    return await fn(client);
  } catch (err) {
    const context = { ...call, ...files, server: settings.server };
    if (err instanceof ResumeAbandoned || err instanceof RetryAbandoned) {
      throw new CliError(
        `${rpcErrorMessage(err.lastError, context)} (${err.message})`,
        EXIT_FAILURE,
      );
    }
    if (!isServiceError(err)) throw err;
    throw new CliError(rpcErrorMessage(err, context), EXIT_FAILURE);
  } finally {
    client.close();
  }
}
