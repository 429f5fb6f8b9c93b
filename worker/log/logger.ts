/**
 * A small leveled logger writing one line per event to stderr, in one of three formats (LOG_FORMAT):
 * - `logfmt` (default): `time=... level=info msg=... key=value...`, read by people, journald, and
 *   log tools (Loki, Vector, `grep key=value`) alike;
 * - `json`: one JSON object per line (`time`, `level`, `msg`, then the fields), for log shippers;
 * - `text`: `time LEVEL message key=value...`, a little easier on the eye at a terminal.
 */
import { CONTROL, escapedControls, quoted } from "./quoted.ts";

export type LogLevel = "debug" | "info" | "warn" | "error";
export type LogFormat = "text" | "logfmt" | "json";
const ORDER: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };
const FORMATS: readonly LogFormat[] = ["text", "logfmt", "json"];

export function isLogLevel(value: string): value is LogLevel {
  return value in ORDER;
}

export function isLogFormat(value: string): value is LogFormat {
  return (FORMATS as readonly string[]).includes(value);
}

let threshold = ORDER.info;
let lineFormat: LogFormat = "logfmt";

export function setLogLevel(level: LogLevel): void {
  threshold = ORDER[level];
}

export function setLogFormat(format: LogFormat): void {
  lineFormat = format;
}

export function isLogged(level: LogLevel): boolean {
  return ORDER[level] >= threshold;
}

function value(v: unknown): string {
  const text = typeof v === "string" ? v : JSON.stringify(v) ?? String(v);
  return text === "" || /[\s"=\\]/.test(text) || CONTROL.test(text) ? quoted(text) : text;
}

const pairs = (fields: Record<string, unknown>) =>
  Object.entries(fields).map(([k, v]) => ` ${k}=${value(v)}`).join("");

/** One log line (with its newline) in the given format; exported for tests. */
export function formatLine(
  format: LogFormat,
  time: Date,
  level: LogLevel,
  message: string,
  fields: Record<string, unknown>,
): string {
  const iso = time.toISOString();
  switch (format) {
    case "json":
      // A control character can only be inside a string of the object: escaping it keeps JSON.
      return escapedControls(JSON.stringify({ time: iso, level, msg: message, ...fields })) + "\n";
    case "logfmt":
      return `time=${iso} level=${level} msg=${value(message)}${pairs(fields)}\n`;
    case "text":
      return `${iso} ${level.toUpperCase().padEnd(5)} ${
        CONTROL.test(message) ? quoted(message) : message
      }${pairs(fields)}\n`;
  }
}

function write(level: LogLevel, message: string, fields: Record<string, unknown>): void {
  if (ORDER[level] < threshold) return;
  const line = formatLine(lineFormat, new Date(), level, message, fields);
  try {
    Deno.stderr.writeSync(new TextEncoder().encode(line));
  } catch {
    // stderr closed: nothing sensible to do
  }
}

export const log = {
  debug: (message: string, fields: Record<string, unknown> = {}) => write("debug", message, fields),
  info: (message: string, fields: Record<string, unknown> = {}) => write("info", message, fields),
  warn: (message: string, fields: Record<string, unknown> = {}) => write("warn", message, fields),
  error: (message: string, fields: Record<string, unknown> = {}) => write("error", message, fields),
};
