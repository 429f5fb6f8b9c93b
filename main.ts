/**
 * jobworker: one program, several roles. The subcommand picks the role and loads only the modules
 * that role needs, so `init` (run between clone and exec for a job that does not start through
 * jwstart, see worker/runtime/launcher.ts) stays small and fast.
 */
const [subcommand, ...rest] = Deno.args;

async function dispatch(): Promise<number> {
  switch (subcommand) {
    case "init":
      return (await import("./init/main.ts")).runInit(rest);
    case "install":
    case "uninstall":
      return await (await import("./worker/install/install.ts")).runInstall(subcommand, rest);
    case "serve":
      return await (await import("./worker/serve.ts")).runServe(rest);
    default:
      return await (await import("./cli/bin.ts")).runClient(Deno.args);
  }
}

Deno.exit(await dispatch());
