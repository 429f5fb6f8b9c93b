/**
 * `jobworker completion bash|zsh|fish`: a shell completion script made from the program's own
 * commands and options (so it never falls behind them); job ids come from `jobworker list -q`
 * at completion time, with the connection flags already typed.
 *
 * @module
 */
import { Argument, Command, type CommandUnknownOpts } from "@commander-js/extra-typings";
import type { CliDeps } from "../context.ts";
import { writeText } from "../io.ts";
import { SERVER_OPTIONS } from "../option_names.ts";

/** Commands whose arguments are job ids. */
const ID_COMMANDS = ["get", "stop", "stream", "rm"];
interface CommandInfo {
  name: string;
  description: string;
  flags: { long: string; short?: string; takesValue: boolean; description: string }[];
  subcommands: string[];
}

function describe(command: CommandUnknownOpts): CommandInfo {
  return {
    name: command.name(),
    description: command.description(),
    flags: command.options.filter((o) => o.long !== undefined && !o.hidden).map((o) => ({
      long: o.long!,
      ...(o.short ? { short: o.short } : {}),
      takesValue: o.required || o.optional,
      description: o.description,
    })),
    subcommands: command.commands.map((c) => c.name()),
  };
}

function visibleCommands(root: CommandUnknownOpts): CommandUnknownOpts[] {
  return root.commands.filter((c) => !(c as unknown as { _hidden: boolean })._hidden);
}

/** The bash script (zsh loads it through bashcompinit). */
export function bashScript(root: CommandUnknownOpts): string {
  const commands = visibleCommands(root).map(describe);
  const global = describe(root);
  const valueFlags = new Set<string>();
  for (const c of [global, ...commands]) {
    for (const f of c.flags) if (f.takesValue) valueFlags.add(f.long);
  }
  const cases = commands.map((c) => {
    const words = [...c.flags.map((f) => f.long), ...c.subcommands].join(" ");
    return `    ${c.name}) opts="${words}" ;;`;
  }).join("\n");
  return `# jobworker completion for bash: source <(jobworker completion bash)
_jobworker() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" prev="\${COMP_WORDS[COMP_CWORD-1]}"
  local cmd="" conn=() i w
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="\${COMP_WORDS[i]}"
    case "$w" in
      ${SERVER_OPTIONS.join("|")})
        conn+=("$w" "\${COMP_WORDS[i+1]}"); i=$((i + 1)) ;;
      ${[...valueFlags].join("|")}) i=$((i + 1)) ;;
      -*) ;;
      *) [[ -z "$cmd" ]] && cmd="$w" ;;
    esac
  done
  case "$prev" in
    --role) COMPREPLY=($(compgen -W "admin viewer" -- "$cur")); return ;;
    --network) COMPREPLY=($(compgen -W "host none" -- "$cur")); return ;;
    --status) COMPREPLY=($(compgen -W "INITIALIZING RUNNING COMPLETED FAILED STOPPED" -- "$cur")); return ;;
    --cert-path|--ca|--cert|--key|--workdir) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    ${[...valueFlags].join("|")}) return ;;
  esac
  if [[ -z "$cmd" ]]; then
    COMPREPLY=($(compgen -W "${commands.map((c) => c.name).join(" ")} ${
    global.flags.map((f) => f.long).join(" ")
  }" -- "$cur"))
    return
  fi
  local opts=""
  case "$cmd" in
${cases}
  esac
  if [[ "$cur" != -* ]]; then
    case "$cmd" in
      ${ID_COMMANDS.join("|")})
        COMPREPLY=($(compgen -W "$("\${COMP_WORDS[0]}" "\${conn[@]}" list -q 2>/dev/null)" -- "$cur"))
        return ;;
      completion) COMPREPLY=($(compgen -W "bash zsh fish" -- "$cur")); return ;;
      context) [[ -n "$opts" ]] && COMPREPLY=($(compgen -W "add use list rm" -- "$cur")); return ;;
    esac
  fi
  COMPREPLY=($(compgen -W "$opts" -- "$cur"))
}
complete -o default -F _jobworker jobworker
`;
}

/** The zsh script: zsh's bash completion layer running the bash function. */
export function zshScript(root: CommandUnknownOpts): string {
  return `# jobworker completion for zsh: source <(jobworker completion zsh)
autoload -U +X compinit && compinit
autoload -U +X bashcompinit && bashcompinit
${bashScript(root).split("\n").slice(1).join("\n")}`;
}

function fishQuote(text: string): string {
  return `'${text.replaceAll("\\", "\\\\").replaceAll("'", "\\'")}'`;
}

/** The fish script. */
export function fishScript(root: CommandUnknownOpts): string {
  const commands = visibleCommands(root).map(describe);
  const global = describe(root);
  const lines = [
    "# jobworker completion for fish: jobworker completion fish | source",
    "complete -c jobworker -f",
    // Job ids from the server, asked with the connection flags already on the line.
    "function __jobworker_ids",
    "    set -l words (commandline -opc)",
    "    set -l conn",
    "    set -l i 2",
    "    while test $i -lt (count $words)",
    "        switch $words[$i]",
    `            case ${SERVER_OPTIONS.join(" ")}`,
    "                set -a conn $words[$i] $words[(math $i + 1)]",
    "                set i (math $i + 1)",
    "        end",
    "        set i (math $i + 1)",
    "    end",
    "    $words[1] $conn list -q 2>/dev/null",
    "end",
  ];
  const names = commands.map((c) => c.name).join(" ");
  for (const c of commands) {
    lines.push(
      `complete -c jobworker -n "not __fish_seen_subcommand_from ${names}" -a ${c.name} -d ${
        fishQuote(c.description)
      }`,
    );
  }
  const flagLine = (condition: string, f: CommandInfo["flags"][number]) =>
    `complete -c jobworker ${condition} -l ${f.long.replace(/^--/, "")}${
      f.short ? ` -s ${f.short.replace(/^-/, "")}` : ""
    }${f.takesValue ? " -r" : ""} -d ${fishQuote(f.description)}`;
  for (const f of global.flags) lines.push(flagLine("", f));
  for (const c of commands) {
    for (const f of c.flags) {
      if (global.flags.some((g) => g.long === f.long)) continue;
      lines.push(flagLine(`-n "__fish_seen_subcommand_from ${c.name}"`, f));
    }
  }
  lines.push(
    `complete -c jobworker -n "__fish_seen_subcommand_from ${
      ID_COMMANDS.join(" ")
    }" -a "(__jobworker_ids)" -d job`,
    `complete -c jobworker -n "__fish_seen_subcommand_from completion" -a "bash zsh fish"`,
    `complete -c jobworker -n "__fish_seen_subcommand_from context" -a "add use list rm"`,
  );
  return lines.join("\n") + "\n";
}

/** The `completion` command. */
export function completionCommand(deps: CliDeps): CommandUnknownOpts {
  const command = new Command("completion")
    .description("Print a shell completion script (bash, zsh, fish)")
    .addArgument(new Argument("<shell>", "the shell").choices(["bash", "zsh", "fish"] as const))
    .addHelpText(
      "after",
      `
It completes commands, options and, for get/stop/stream/rm, job ids from the server.
Examples:
  source <(jobworker completion bash)          # in ~/.bashrc
  source <(jobworker completion zsh)           # in ~/.zshrc
  jobworker completion fish | source           # in ~/.config/fish/config.fish`,
    )
    .action(async (shell, _flags, cmd) => {
      const root = (cmd.parent ?? cmd) as CommandUnknownOpts;
      const script = shell === "bash"
        ? bashScript(root)
        : shell === "zsh"
        ? zshScript(root)
        : fishScript(root);
      await writeText(deps.stdout, script);
    });
  return command as unknown as CommandUnknownOpts;
}
