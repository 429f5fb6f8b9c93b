/**
 * The connection of a command line begun before the command line has loaded: cli/bin.ts calls
 * {@linkcode connectEarly} first, and the TCP connection, the TLS handshake (the server's half on
 * the other core) and the HTTP/2 preface proceed while commander, protobufjs and the commands
 * load and parse. The transport (transport/http2.ts) uses that connection when its own settings,
 * resolved as always from the parsed flags, are the same; otherwise it is closed unused.
 *
 * So nothing here decides anything the user sees: a wrong guess costs a connection opened and
 * closed, never a different server, file or message. Guesses are made only where the arguments
 * say plainly what commander will read ({@linkcode connectionFlagsIn}), so that the one server a
 * command may be sent to unasked is the one it names (or the environment, context or default do).
 *
 * @module
 */
import { type ConnectionFlags, type EnvReader, readConnectionFiles, ROLES } from "./config.ts";
import { parseServerAddress } from "./address.ts";
import { connectEarly as connectTransportEarly } from "./transport/http2.ts";

/** The connection options (all take a value) and the flag each sets. */
const CONNECTION_OPTIONS: Record<string, keyof ConnectionFlags | undefined> = {
  "--server": "server",
  "--cert-path": "certPath",
  "--role": "role",
  "--ca": "ca",
  "--cert": "cert",
  "--key": "key",
  "--context": "context",
  "--request-timeout": undefined, // not a connection setting; its value is skipped
};

/** The commands that connect, and whether the job's command ends their options (create, run). */
const CONNECTING: Record<string, { jobCommand: boolean }> = {
  list: { jobCommand: false },
  ls: { jobCommand: false },
  get: { jobCommand: false },
  stream: { jobCommand: false },
  stop: { jobCommand: false },
  rm: { jobCommand: false },
  create: { jobCommand: true },
  run: { jobCommand: true },
};

function optionName(arg: string): string {
  return arg.startsWith("--") ? arg.split("=", 1)[0]! : arg;
}

/**
 * The connection flags commander will read from `argv` (as cli/options.ts `connectionFlags`
 * combines them: the command's own over the program's, the last of each), when the arguments
 * say so plainly; undefined when they may not (no connecting command, help asked for, an option
 * this module does not know where a connection option follows it, a missing value).
 */
export function connectionFlagsIn(argv: readonly string[]): ConnectionFlags | undefined {
  const program: ConnectionFlags = {};
  const own: ConnectionFlags = {};
  let flags = program;
  let command: { jobCommand: boolean } | undefined;
  let unknownOption = false;
  // Where the options end: `--`, or the job's command (create, run). An option we do not know
  // may have taken it as its value, and then commander reads on: give up when a connection
  // option follows.
  const end = (at: number) =>
    unknownOption && argv.slice(at).some((a) => optionName(a) in CONNECTION_OPTIONS);
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--") {
      if (end(i)) return undefined;
      break;
    }
    if (!arg.startsWith("-") || arg === "-") {
      if (command === undefined) {
        command = CONNECTING[arg];
        if (!command) return undefined;
        flags = own;
        continue;
      }
      if (command.jobCommand) {
        if (end(i)) return undefined;
        break;
      }
      continue;
    }
    const name = optionName(arg);
    if (name === "-h" || name === "--help") return undefined;
    if (!(name in CONNECTION_OPTIONS)) {
      // Before the command: commander refuses it. After it: it may take the next argument.
      if (command === undefined) return undefined;
      unknownOption = true;
      continue;
    }
    // A value read after an option we do not know might be that option's value instead.
    if (unknownOption) return undefined;
    let value: string | undefined;
    if (name !== arg) value = arg.slice(name.length + 1);
    else value = argv[++i];
    if (value === undefined) return undefined;
    const key = CONNECTION_OPTIONS[name];
    if (key === "role") {
      if (!(ROLES as readonly string[]).includes(value)) return undefined;
      flags.role = value as ConnectionFlags["role"];
    } else if (key !== undefined && key !== "requestTimeout") {
      flags[key] = value;
    }
  }
  if (command === undefined) return undefined;
  return { ...program, ...own };
}

/**
 * Begin the connection `argv` will make, once `ready` (the TLS warm-up, cli/tls_warmup.ts) has
 * settled: a TLS handshake begun before it would wait for it on the main thread. Does nothing
 * when the settings cannot be told plainly or cannot be used; the command line then meets and
 * reports whatever is wrong, as always.
 *
 * @returns A promise that resolves once the connection has begun (or was not).
 */
export function connectEarly(
  argv: readonly string[],
  ready: Promise<unknown>,
  env: EnvReader = (name) => Deno.env.get(name),
): Promise<void> {
  const flags = connectionFlagsIn(argv);
  if (!flags) return Promise.resolve();
  let settings;
  try {
    const { server, pems } = readConnectionFiles(flags, env);
    const address = parseServerAddress(server);
    settings = {
      target: address.target,
      host: address.host,
      port: address.port,
      family: address.family,
      ...pems,
    };
  } catch {
    return Promise.resolve();
  }
  return connectTransportEarly(settings, ready);
}
