/**
 * Connection settings of the command line: flags, then environment, then defaults; the only module
 * of the client that reads the environment and the certificate files.
 *
 * | setting      | flag            | environment            | default                        |
 * | ------------ | --------------- | ---------------------- | ------------------------------ |
 * | server       | `--server`      | `JOB_WORKER_ADDR`      | `127.0.0.1:50051`              |
 * | cert dir     | `--cert-path`   | `JOB_WORKER_CERT_PATH` | `./certs`, else `<repo>/certs` |
 * | role         | `--role`        |                        | `admin`                        |
 * | single files | `--ca` `--cert` `--key` |                |  from the cert dir             |
 *
 * @module
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import { fileURLToPath } from "node:url";
import { parseServerAddress } from "./address.ts";
import type { ConnectionSettings } from "./client.ts";
import {
  ConfigFileError,
  configFilePath,
  type ContextEntry,
  readClientConfig,
  selectContext,
} from "./contexts.ts";

/** Roles a client certificate can carry; the role picks the certificate file names. */
export const ROLES = ["admin", "viewer"] as const;
/** A client role. */
export type Role = (typeof ROLES)[number];

/** The server used when neither `--server` nor `JOB_WORKER_ADDR` names one. */
export const DEFAULT_SERVER = "127.0.0.1:50051";
/** Environment variable naming the server. */
export const ENV_ADDR = "JOB_WORKER_ADDR";
/** Environment variable naming the certificate directory. */
export const ENV_CERT_PATH = "JOB_WORKER_CERT_PATH";
/** Environment variable naming the context (below --context, above the config's current one). */
export const ENV_CONTEXT = "JOB_WORKER_CONTEXT";

/** Connection flags as given on the command line; absent ones are undefined. */
export interface ConnectionFlags {
  /** `--server HOST:PORT` */
  server?: string;
  /** `--cert-path DIR` */
  certPath?: string;
  /** `--role admin|viewer` */
  role?: Role;
  /** `--ca FILE` */
  ca?: string;
  /** `--cert FILE` */
  cert?: string;
  /** `--key FILE` */
  key?: string;
  /** `--context NAME` */
  context?: string;
  /** `--request-timeout SECONDS` */
  requestTimeout?: number;
}

/** Settings as the client uses them, plus which files they came from. */
export interface ResolvedSettings extends ConnectionSettings {
  /** The CA and client certificate files, named in TLS error messages. */
  files: { ca: string; cert: string };
}

/** Reads one environment variable. */
export type EnvReader = (name: string) => string | undefined;

/** One certificate file to read, and how a user changes which file that is. */
export interface CertFile {
  /** What the file is, e.g. "client certificate". */
  what: string;
  /** Where it is. */
  path: string;
  /** How to point at another file, for error messages. */
  fix: string;
}

/** The three files of a mutual TLS client. */
export interface CertFiles {
  /** The CA certificate the server's certificate must chain to. */
  ca: CertFile;
  /** The client certificate. */
  cert: CertFile;
  /** The client certificate's private key. */
  key: CertFile;
}

/** A configuration the user must fix (missing file, malformed address). */
export class ConfigError extends Error {
  /** The error's name. */
  override name = "ConfigError";
}

/**
 * The server address from flags and environment, validated.
 *
 * @throws {ConfigError} When the address is malformed.
 */
export function resolveServer(
  flags: ConnectionFlags,
  env: EnvReader,
  context?: ContextEntry,
): string {
  const envServer = nonEmpty(env(ENV_ADDR));
  const server = flags.server ?? envServer ?? context?.server ?? DEFAULT_SERVER;
  try {
    parseServerAddress(server);
  } catch (err) {
    const source = flags.server !== undefined
      ? "--server"
      : envServer !== undefined
      ? ENV_ADDR
      : "the context";
    throw new ConfigError(`${(err as Error).message} (from ${source})`);
  }
  return server;
}

/**
 * Which certificate files to read. Pure: it checks no file.
 *
 * @param defaultDir The directory used when neither `--cert-path` nor `JOB_WORKER_CERT_PATH` is set.
 */
export function resolveCertFiles(
  flags: ConnectionFlags,
  env: EnvReader,
  defaultDir: string,
  context?: ContextEntry,
): CertFiles {
  const envDir = nonEmpty(env(ENV_CERT_PATH));
  // A context's files count only where neither a flag nor the environment names a directory.
  const ctx = flags.certPath === undefined && envDir === undefined ? context : undefined;
  const role = flags.role ?? ctx?.role ?? "admin";
  const dir = flags.certPath ?? envDir ?? ctx?.certPath ?? defaultDir;
  const dirSource = flags.certPath !== undefined
    ? "--cert-path"
    : envDir !== undefined
    ? ENV_CERT_PATH
    : ctx?.certPath !== undefined
    ? "the context"
    : "the default certificate directory";
  const file = (what: string, flag: string, given: string | undefined, name: string): CertFile =>
    given !== undefined ? { what, path: given, fix: `check ${flag}` } : {
      what,
      path: joinPath(dir, name),
      fix: `${dirSource} names ${dir}; set --cert-path DIR or ${ENV_CERT_PATH} to a directory ` +
        `holding ${name}, or give ${flag} FILE ("jobworker certs --out DIR" makes the files)`,
    };
  return {
    ca: file("CA certificate", "--ca", flags.ca ?? ctx?.ca, "ca-cert.pem"),
    cert: file("client certificate", "--cert", flags.cert ?? ctx?.cert, `${role}-client-cert.pem`),
    key: file("client key", "--key", flags.key ?? ctx?.key, `${role}-client-key.pem`),
  };
}

/**
 * The default certificate directory: `./certs` when it exists, else the `certs` directory of the
 * checkout this program runs from (when it runs from files), else `./certs`.
 */
export function defaultCertDir(moduleUrl: string = import.meta.url): string {
  if (isDirectory("certs")) return "certs";
  const url = new URL("../certs", moduleUrl);
  if (url.protocol === "file:") {
    const path = fileURLToPath(url);
    if (isDirectory(path)) return path;
  }
  return "certs";
}

/**
 * Everything needed to connect, with the PEM files read and checked.
 *
 * @returns A promise that rejects with a {@linkcode ConfigError} when the address is malformed, or
 *   a file cannot be read or used.
 */
export function loadConnectionSettings(
  flags: ConnectionFlags,
  env: EnvReader = (name) => Deno.env.get(name),
): Promise<ResolvedSettings> {
  try {
    return Promise.resolve(readConnectionSettings(flags, env));
  } catch (err) {
    return Promise.reject(err);
  }
}

function readConnectionSettings(flags: ConnectionFlags, env: EnvReader): ResolvedSettings {
  const context = loadContext(flags, env);
  const server = resolveServer(flags, env, context);
  const files = resolveCertFiles(flags, env, defaultCertDir(), context);
  // Read synchronously: three small files, and an asynchronous read's trip through Deno's thread
  // pool costs a short-lived command more than the reads themselves.
  const caPem = readCertFile(files.ca);
  const certPem = readCertFile(files.cert);
  const keyPem = readCertFile(files.key);
  checkTlsFiles(files, { caPem, certPem, keyPem });
  return {
    server,
    caPem,
    certPem,
    keyPem,
    files: { ca: files.ca.path, cert: files.cert.path },
    ...(flags.requestTimeout !== undefined ? { callTimeoutMs: flags.requestTimeout * 1000 } : {}),
  };
}

/**
 * The context in force (`--context`, else JOB_WORKER_CONTEXT, else the config file's current one).
 *
 * @throws {ConfigError} When the config file is broken or names no such context.
 */
export function loadContext(flags: ConnectionFlags, env: EnvReader): ContextEntry | undefined {
  const path = configFilePath(env);
  try {
    const name = flags.context ?? nonEmpty(env(ENV_CONTEXT));
    const config = readClientConfig(path);
    return selectContext(config, name, path)?.entry;
  } catch (err) {
    if (err instanceof ConfigFileError) throw new ConfigError(err.message);
    throw err;
  }
}

/**
 * Check that the PEM data is what it claims to be, that the key belongs to the certificate and
 * that the certificate has not expired: the TLS handshake would fail on these with unhelpful
 * messages.
 *
 * @throws {ConfigError} Naming the file at fault and how to point at another one.
 */
export function checkTlsFiles(
  files: CertFiles,
  pems: { caPem: string; certPem: string; keyPem: string },
  now: Date = new Date(),
): void {
  const parse = <T>(file: CertFile, kind: string, fn: () => T): T => {
    try {
      return fn();
    } catch (err) {
      throw new ConfigError(
        `${capitalize(file.what)} "${file.path}" is not a PEM ${kind} (${
          (err as Error).message
        }): ${file.fix}`,
      );
    }
  };
  parse(files.ca, "certificate", () => new X509Certificate(pems.caPem));
  const cert = parse(files.cert, "certificate", () => new X509Certificate(pems.certPem));
  const key = parse(files.key, "private key", () => createPrivateKey(pems.keyPem));
  if (!cert.checkPrivateKey(key)) {
    throw new ConfigError(
      `Client key "${files.key.path}" does not belong to client certificate "${files.cert.path}": ` +
        `give the pair made together (--cert and --key, or --role)`,
    );
  }
  const expiry = new Date(cert.validTo);
  if (expiry.getTime() < now.getTime()) {
    throw new ConfigError(
      `Client certificate "${files.cert.path}" expired on ${expiry.toISOString()}: ` +
        `make a new one ("jobworker certs --force")`,
    );
  }
}

function readCertFile(file: CertFile): string {
  try {
    return Deno.readTextFileSync(file.path);
  } catch (err) {
    const problem = err instanceof Deno.errors.NotFound
      ? "not found"
      : `cannot be read (${(err as Error).message})`;
    throw new ConfigError(`${capitalize(file.what)} "${file.path}" ${problem}: ${file.fix}`);
  }
}

function isDirectory(path: string): boolean {
  try {
    return Deno.statSync(path).isDirectory;
  } catch {
    return false;
  }
}

function joinPath(dir: string, name: string): string {
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === "" ? undefined : value;
}

function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
