/**
 * Entry of the pre-bundled client: `make build` (scripts/build.sh) bundles this file and every
 * module it reaches into one JavaScript file, build/jobworker-client.js, which bin/jobworker runs
 * for the client commands when no compiled binary could be made. One file with no npm resolution
 * starts faster than the module graph (see bench/client_start.ts). `main.ts` stays the entry of
 * everything else.
 *
 * @module
 */
import { runCli } from "./main.ts";

Deno.exit(await runCli(Deno.args));
