/**
 * Names of the command line's options that some code must know before (or without) the command
 * line being built: kept here, small, so that the bundle's entry (cli/bundle_entry.ts) loads no
 * more than it needs. tests/cli_parse_test.ts holds them to the options commander is given.
 *
 * @module
 */

/** The options that say which server to ask and as whom; each takes a value. */
export const SERVER_OPTIONS: readonly string[] = [
  "--server",
  "--cert-path",
  "--role",
  "--ca",
  "--cert",
  "--key",
  "--context",
];

/** The program's options that take the next argument as their value (unless `--name=value`). */
export const ROOT_OPTIONS_WITH_VALUE: ReadonlySet<string> = new Set([
  ...SERVER_OPTIONS,
  "--request-timeout",
]);
