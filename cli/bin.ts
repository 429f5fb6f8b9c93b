/**
 * Entry of the command line: `main.ts` hands every subcommand but `serve`, `init`, `install` and
 * `uninstall` to {@linkcode runClient}, and `make build` (scripts/build.sh) bundles this file and
 * every module it reaches into build/client/ (code split: this entry is a few hundred bytes, and
 * each part loads when it is first imported), which bin/jobworker runs for the client commands
 * when no compiled binary could be made (bundled files with no npm resolution start faster than
 * the module graph; see bench/client_start.ts).
 *
 * A command that connects has two things to do before its call that do not depend on each other:
 * load and parse the command line (commander, protobufjs, the commands: about 15 ms of the main
 * thread), and connect (Deno's one-time crypto set-up, about 18 ms of CPU, then the TLS handshake,
 * mostly the server's work and the wire). So, first of all, the crypto set-up starts on another
 * thread (cli/tls_warmup.ts), then cli/early_connect.ts begins the connection when it is done, and
 * the command line loads meanwhile; the transport uses that connection if its settings turn out
 * the same.
 *
 * @module
 */
import { mayConnect, startTlsWarmUp } from "./tls_warmup.ts";

/** Run the command line; resolves to the process exit code. */
export async function runClient(argv: string[]): Promise<number> {
  let begun: Promise<void> | undefined;
  if (mayConnect(argv)) {
    const warmedUp = startTlsWarmUp();
    begun = (await import("./early_connect.ts")).connectEarly(argv, warmedUp);
  }
  const { runCli } = await import("./main.ts");
  try {
    // The TLS handshake goes out before the command line runs: the server's half of it then
    // overlaps with the parsing, instead of the other way round.
    await begun;
    return await runCli(argv);
  } finally {
    // A connection begun early for nothing (the command failed first, or used other settings).
    if (begun) (await import("./transport/http2.ts")).dropEarlyConnection();
  }
}

if (import.meta.main) Deno.exit(await runClient(Deno.args));
