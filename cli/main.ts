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

/**
 * Build the program. Commander's own output (help, usage errors) goes to `output`, to be written
 * once parsing is over.
 */
export function buildProgram(
  deps: CliDeps,
  output: { out: string; err: string } = { out: "", err: "" },
): CommandUnknownOpts {
  const program = addConnectionOptions(new Command("jobworker"))
    .description("Run commands as jobs on a jobworker server, and watch and stop them.")
    .usage("[connection options] <command> [options]")
    .enablePositionalOptions()
    .addHelpText("after", HELP_AFTER);

  program.commandsGroup("Job commands:");
  for (
    const command of [
      runCommand,
      createCommand,
      listCommand,
      getCommand,
      streamCommand,
      stopCommand,
      rmCommand,
    ]
  ) {
    program.addCommand(command(deps));
  }
  program.commandsGroup("Setup commands:");
  program.addCommand(certsCommand());
  program.addCommand(contextCommand(deps));
  program.addCommand(completionCommand(deps));
  program.addCommand(versionCommand(deps));
  addWorkerStub(program, "serve", "Run the worker (the server); see: jobworker serve --help");
  addWorkerStub(program, "init", "Internal: set up a job's process", true);
  program.commandsGroup("Other commands:").helpCommand("help [command]", "show help for a command");

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
    await buildProgram(deps, output).parseAsync(argv, { from: "user" });
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
