/**
 * Entry of the bundled command line. `make build` (scripts/build.sh) bundles this module alone
 * into build/jobworker-client.js, which bin/jobworker runs, and cli/bin.ts with every module it
 * reaches into build/jobworker-cli.js, which this module loads.
 *
 * Why two files: a module's first line runs only once its whole file is loaded and compiled,
 * about 10 ms for the command line's half a megabyte. This file's first line starts the TLS
 * warm-up (cli/tls_warmup.ts), so the crypto set-up, the longest step of a call, begins that
 * much earlier: `jobworker list` about 11 ms sooner (bench/client_start.ts; bench/README.md,
 * "Client start-up").
 *
 * @module
 */
import { mayConnect, startTlsWarmUp } from "./tls_warmup.ts";

if (mayConnect(Deno.args)) startTlsWarmUp();

// A specifier made at run time: the bundler leaves the import as it is (the file is a build output).
const cliUrl = new URL("./jobworker-cli.js", import.meta.url).href;
const cli: typeof import("./bin.ts") = await import(cliUrl);
Deno.exit(await cli.runClient(Deno.args));
