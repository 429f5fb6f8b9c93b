/**
 * The `jobworker` command line (every subcommand but `serve` and `init`, which `main.ts` hands to
 * the worker before this module loads).
 *
 * Connection options may go before the subcommand (`jobworker --server h:1 list`) or after it
 * (`jobworker list --server h:1`); for `create`, after it only up to the job's command name.
 *
 * @module
 */
import { Command, type CommandUnknownOpts } from "@commander-js/extra-typings";
import { certsCommand } from "./commands/certs.ts";
import { completionCommand } from "./commands/completion.ts";
import { contextCommand } from "./commands/context.ts";
import { createCommand } from "./commands/create.ts";
import { getCommand } from "./commands/get.ts";
import { listCommand } from "./commands/list.ts";
import { rmCommand } from "./commands/rm.ts";
import { runCommand } from "./commands/run.ts";
import { stopCommand } from "./commands/stop.ts";
import { streamCommand } from "./commands/stream.ts";
import { versionCommand } from "./commands/version.ts";
import { DEFAULT_SERVER, ENV_ADDR, ENV_CERT_PATH } from "./config.ts";
import { type CliDeps, defaultDeps } from "./context.ts";
import { describeFailure, EXIT_OK, UsageError } from "./errors.ts";
import { writeText } from "./io.ts";
import { addConnectionOptions } from "./options.ts";

const HELP_AFTER = `
Connection options go before or after the command name (for create: before the job's command).
Environment:
  ${ENV_ADDR}       server address (default ${DEFAULT_SERVER})
  ${ENV_CERT_PATH}  directory holding ca-cert.pem, <role>-client-cert.pem and
                        <role>-client-key.pem (default ./certs if it exists, else the certs/
                        directory of this jobworker checkout)
  JOB_WORKER_CONTEXT    context to use (below --context, above "context use")
  NO_COLOR              no colour (colour is used only on a terminal anyway)
Precedence: flags > environment > context > defaults.
Exit codes: 0 ok, 1 server or RPC error, 2 usage or configuration error, 130 interrupted;
run exits with the job's code (128 + signal when a signal ended it).
Examples:
  jobworker run bash -c 'echo hi; exit 3'; echo $?     # hi, then 3
  jobworker create sleep 600 && jobworker list
  jobworker stream 9b1c --tail 20
  jobworker --context prod get 9b1c --json`;

/** The commands, in the order of the help, each with the names that run it. */
const COMMANDS: {
  names: string[];
  group: "Job commands:" | "Setup commands:";
  make: (deps: CliDeps) => CommandUnknownOpts;
  /** It reads the whole program (completion scripts are made from it): never built alone. */
  needsAll?: true;
}[] = [
  { names: ["run"], group: "Job commands:", make: runCommand },
  { names: ["create"], group: "Job commands:", make: createCommand },
  { names: ["list", "ls"], group: "Job commands:", make: listCommand },
  { names: ["get"], group: "Job commands:", make: getCommand },
  { names: ["stream"], group: "Job commands:", make: streamCommand },
  { names: ["stop"], group: "Job commands:", make: stopCommand },
  { names: ["rm"], group: "Job commands:", make: rmCommand },
  { names: ["certs"], group: "Setup commands:", make: () => certsCommand() },
  { names: ["context"], group: "Setup commands:", make: contextCommand },
  { names: ["completion"], group: "Setup commands:", make: completionCommand, needsAll: true },
  { names: ["version"], group: "Setup commands:", make: versionCommand },
];

/** Every name and alias of the commands {@linkcode buildProgram} adds (not `help`, `serve`, `init`). */
export const COMMAND_NAMES: readonly string[] = COMMANDS.flatMap((c) => c.names);

/**
 * Build the program. Commander's own output (help, usage errors) goes to `output`, to be written
 * once parsing is over.
 *
 * @param only The name (or alias) of the one command to build besides the program itself, for a
 *   command line known to run it (see {@linkcode commandNameIn}): building all of them takes longer
 *   than parsing. Absent: all of them (help, unknown names, `help <command>`).
 */
export function buildProgram(
  deps: CliDeps,
  output: { out: string; err: string } = { out: "", err: "" },
  only?: string,
): CommandUnknownOpts {
  const program = rootCommand();
  const wanted = only === undefined ? COMMANDS : COMMANDS.filter((c) => c.names.includes(only));
  for (const group of ["Job commands:", "Setup commands:"] as const) {
    const commands = wanted.filter((c) => c.group === group);
    if (commands.length === 0) continue;
    program.commandsGroup(group);
    for (const command of commands) program.addCommand(command.make(deps));
  }
  if (only === undefined) {
    addWorkerStub(program, "serve", "Run the worker (the server); see: jobworker serve --help");
    addWorkerStub(program, "init", "Internal: set up a job's process", true);
    program.commandsGroup("Other commands:").helpCommand(
      "help [command]",
      "show help for a command",
    );
  }

  forEachCommand(program, (command) =>
    command
      .exitOverride()
      .showHelpAfterError("(add --help for usage)")
      .configureOutput({
        writeOut: (text) => void (output.out += text),
        writeErr: (text) => void (output.err += text),
      }));
  return program;
}

/** The program without its commands. */
function rootCommand(): CommandUnknownOpts {
  return addConnectionOptions(new Command("jobworker"))
    .description("Run commands as jobs on a jobworker server, and watch and stop them.")
    .usage("[connection options] <command> [options]")
    .enablePositionalOptions()
    .addHelpText("after", HELP_AFTER);
}

let rootOptions: CommandUnknownOpts["options"] | undefined;

/**
 * The command `argv` runs, when that is plain from the program's own options before it (as
 * commander reads them: an option that takes a value takes the next argument unless written
 * `--name=value`); undefined when it is not (help asked for, an unknown option, no command, a
 * name that is not one of {@linkcode COMMAND_NAMES}) or when the command reads the whole program
 * (`completion`), and then the whole program is built.
 */
export function commandNameIn(argv: string[]): string | undefined {
  const options = rootOptions ??= rootCommand().options;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith("-") || arg === "-") {
      const command = COMMANDS.find((c) => c.names.includes(arg));
      return command && !command.needsAll ? arg : undefined;
    }
    const flag = arg.startsWith("--") ? arg.split("=", 1)[0] : arg;
    const option = options.find((o) => o.long === flag || o.short === flag);
    if (!option) return undefined; // --help, --version, --, or a mistake: commander says which
    if ((option.required || option.optional) && flag === arg) i++;
  }
  return undefined;
}

/**
 * Run the command line; resolves to the process exit code (0 ok, 1 server or RPC error, 2 usage or
 * configuration error, 130 interrupted).
 *
 * @param argv The arguments after the program name, e.g. `["list", "--json"]`.
 * @param deps The outside world (tests pass fakes).
 */
export async function runCli(argv: string[], deps: CliDeps = defaultDeps()): Promise<number> {
  const output = { out: "", err: "" };
  let exitCode = EXIT_OK;
  let message = "";
  // `--version` before any command is the `version` command.
  const versionAt = argv.indexOf("--version");
  if (versionAt >= 0) {
    const commandNames = buildProgram(deps).commands.flatMap((c) => [c.name(), ...c.aliases()]);
    if (!argv.slice(0, versionAt).some((a) => commandNames.includes(a))) {
      argv = [...argv.slice(0, versionAt), "version", ...argv.slice(versionAt + 1)];
    }
  }
  try {
    await buildProgram(deps, output, commandNameIn(argv)).parseAsync(argv, { from: "user" });
  } catch (err) {
    ({ message, exitCode } = describeFailure(err));
  }
  try {
    if (output.out) await writeText(deps.stdout, output.out);
    if (output.err) await writeText(deps.stderr, output.err);
    if (message) await writeText(deps.stderr, `error: ${message}\n`);
  } catch {
    // stdout or stderr is closed: nothing more can be said.
  }
  return exitCode;
}

/**
 * A command `main.ts` runs itself before this module loads; it is here to be listed in the help.
 * Reaching it means the name was not the first argument.
 */
function addWorkerStub(
  program: CommandUnknownOpts,
  name: string,
  description: string,
  hidden = false,
) {
  program
    .command(name, { hidden })
    .description(description)
    .helpOption(false)
    .allowUnknownOption()
    .allowExcessArguments()
    .action(() => {
      throw new UsageError(
        `"${name}" must be the first argument: jobworker ${name} [options] (see jobworker ${name} --help)`,
      );
    });
}

function forEachCommand(command: CommandUnknownOpts, fn: (command: CommandUnknownOpts) => void) {
  fn(command);
  for (const sub of command.commands) forEachCommand(sub, fn);
}
