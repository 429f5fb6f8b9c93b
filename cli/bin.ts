/**
 * Entry of the command line: `main.ts` hands every subcommand but `serve`, `init`, `install` and
 * `uninstall` to {@linkcode runClient}, and `make build` (scripts/build.sh) bundles this file and
 * every module it reaches into one JavaScript file, build/jobworker-cli.js, which the bundle's
 * entry (cli/bundle_entry.ts) loads when bin/jobworker runs a client command and no compiled
 * binary could be made (one file with no npm resolution starts faster than the module graph; see
 * bench/client_start.ts).
 *
 * It starts the TLS warm-up before it loads the command line, so that the crypto set-up runs on
 * another thread while the modules load (cli/tls_warmup.ts says why).
 *
 * @module
 */
import { mayConnect, startTlsWarmUp } from "./tls_warmup.ts";

/** Run the command line; resolves to the process exit code. */
export async function runClient(argv: string[]): Promise<number> {
  if (mayConnect(argv)) startTlsWarmUp();
  const { runCli } = await import("./main.ts");
  return await runCli(argv);
}

if (import.meta.main) Deno.exit(await runClient(Deno.args));
