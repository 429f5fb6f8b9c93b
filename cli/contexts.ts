/**
 * Named servers ("contexts") in the client's config file, `$XDG_CONFIG_HOME/jobworker/config.json`
 * (`~/.config/jobworker/config.json` when XDG_CONFIG_HOME is unset):
 *
 * ```json
 * { "current": "prod",
 *   "contexts": { "prod": { "server": "worker1:50051", "certPath": "/home/me/.jobworker" } } }
 * ```
 *
 * A context holds an address and certificate paths (`certPath`, or `ca`/`cert`/`key`, and `role`).
 *
 * @module
 */
import type { EnvReader } from "./config.ts";

/** One named server. */
export interface ContextEntry {
  /** `HOST:PORT`. */
  server: string;
  /** Directory of ca-cert.pem and <role>-client-{cert,key}.pem. */
  certPath?: string;
  /** Role whose certificate files to use from certPath. */
  role?: "admin" | "viewer";
  /** Single files, overriding certPath's. */
  ca?: string;
  /** Client certificate file. */
  cert?: string;
  /** Client key file. */
  key?: string;
}

/** The config file's content. */
export interface ClientConfig {
  /** The context used when none is named. */
  current?: string;
  /** Contexts by name. */
  contexts: Record<string, ContextEntry>;
}

/** A broken config file (the caller turns it into a configuration error). */
export class ConfigFileError extends Error {
  /** The error's name. */
  override name = "ConfigFileError";
}

/** Where the config file is. */
export function configFilePath(env: EnvReader): string {
  const xdg = env("XDG_CONFIG_HOME");
  const base = xdg ? xdg : `${env("HOME") ?? "."}/.config`;
  return `${base}/jobworker/config.json`;
}

/**
 * Read the config file; a missing file is an empty config.
 *
 * @throws {ConfigFileError} When it is not valid JSON of the expected shape.
 */
export function readClientConfig(path: string): ClientConfig {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return { contexts: {} };
    throw new ConfigFileError(`Cannot read ${path}: ${(err as Error).message}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new ConfigFileError(`${path} is not valid JSON: ${(err as Error).message}`);
  }
  const config = value as Partial<ClientConfig>;
  if (
    typeof config !== "object" || config === null ||
    (config.contexts !== undefined && (typeof config.contexts !== "object" || !config.contexts))
  ) {
    throw new ConfigFileError(`${path}: expected { "current": ..., "contexts": { ... } }`);
  }
  const contexts: Record<string, ContextEntry> = {};
  for (const [name, entry] of Object.entries(config.contexts ?? {})) {
    if (typeof entry !== "object" || entry === null || typeof entry.server !== "string") {
      throw new ConfigFileError(`${path}: context "${name}" has no "server"`);
    }
    contexts[name] = entry;
  }
  return {
    ...(typeof config.current === "string" ? { current: config.current } : {}),
    contexts,
  };
}

/** Write the config file (creating its directory), readable by its owner only. */
export function writeClientConfig(path: string, config: ClientConfig): void {
  Deno.mkdirSync(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  Deno.writeTextFileSync(path, JSON.stringify(config, null, 2) + "\n", { mode: 0o600 });
}

/**
 * The context in force: `name` (from --context or JOB_WORKER_CONTEXT), else the config's current
 * one; undefined when neither names one.
 *
 * @throws {ConfigFileError} When the named context does not exist.
 */
export function selectContext(
  config: ClientConfig,
  name: string | undefined,
  path: string,
): { name: string; entry: ContextEntry } | undefined {
  const chosen = name ?? config.current;
  if (chosen === undefined) return undefined;
  const entry = config.contexts[chosen];
  if (!entry) {
    const known = Object.keys(config.contexts);
    throw new ConfigFileError(
      `No context "${chosen}" in ${path}` +
        (known.length > 0 ? ` (known: ${known.join(", ")})` : " (jobworker context add NAME ...)"),
    );
  }
  return { name: chosen, entry };
}
