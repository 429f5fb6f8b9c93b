/**
 * Human formatting primitives: sizes, rates, durations, times, signal names, shell quoting and
 * plain-text tables. Pure functions, nothing about jobs or gRPC.
 *
 * @module
 */
import { CONTROL, escapedControls } from "../worker/log/quoted.ts";

const BYTE_UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"] as const;

/**
 * A number with three significant digits: `1.23`, `12.3`, `123`, `1234`.
 *
 * @example
 * ```ts
 * threeDigits(9.999); // "10.0"
 * ```
 */
export function threeDigits(value: number): string {
  for (const decimals of [2, 1]) {
    const text = value.toFixed(decimals);
    if (Math.abs(Number(text)) < 10 ** (3 - decimals)) return text;
  }
  return value.toFixed(0);
}

/**
 * Bytes in binary units.
 *
 * @example
 * ```ts
 * formatBytes(512); // "512 B"
 * formatBytes(12.3 * 1024 * 1024); // "12.3 MiB"
 * ```
 */
export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  let value = bytes;
  let unit = 0;
  while (value >= 1023.5 && unit < BYTE_UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${threeDigits(value)} ${BYTE_UNITS[unit]}`;
}

/** Bytes per second in binary units: `"1.00 MiB/s"`. */
export function formatRate(bytesPerSecond: number): string {
  return `${formatBytes(bytesPerSecond)}/s`;
}

/**
 * A span of time given in milliseconds, to the precision that matters at its size:
 * `"850 ms"`, `"12.3 s"`, `"5m 03s"`, `"2h 05m"`, `"3d 04h"`.
 */
export function formatDuration(ms: number): string {
  if (ms < 0) ms = 0;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const seconds = ms / 1000;
  if (seconds < 59.95) {
    return Number.isInteger(seconds) ? `${seconds} s` : `${threeDigits(seconds)} s`;
  }
  const total = Math.round(seconds);
  const pad = (n: number) => String(n).padStart(2, "0");
  const d = Math.floor(total / 86400);
  const h = Math.floor((total % 86400) / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  if (total < 3600) return `${m}m ${pad(s)}s`;
  if (total < 86400) return `${h}h ${pad(m)}m`;
  return `${d}d ${pad(h)}h`;
}

/** CPU time given in microseconds: `"0 s"`, `"850 µs"`, `"12.3 ms"`, `"1.23 s"`, `"1h 02m"`. */
export function formatCpuTime(usec: number): string {
  if (usec <= 0) return "0 s";
  if (usec < 1000) return `${Math.round(usec)} µs`;
  if (usec < 999_500) return `${threeDigits(usec / 1000)} ms`;
  return formatDuration(usec / 1000);
}

/** How long ago `then` was, seen at `now`: `"just now"`, `"12s ago"`, `"5m ago"`, `"3h ago"`. */
export function formatRelative(then: Date, now: Date): string {
  const seconds = Math.floor((now.getTime() - then.getTime()) / 1000);
  if (seconds < 1) return "just now";
  if (seconds < 60) return `${seconds}s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ago`;
  return `${Math.floor(seconds / 86400)}d ago`;
}

/** Local date and time: `"2026-11-28 14:03:07"`. */
export function formatLocalTime(date: Date): string {
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

const SHELL_SAFE = /^[A-Za-z0-9_@%+=:,./-]+$/;
// deno-lint-ignore no-control-regex
const ANSI_C_SPECIAL = /[\u0000-\u001f\u007f-\u009f\\']/g;
const ANSI_C_NAMED: Record<string, string> = {
  "\n": "\\n",
  "\t": "\\t",
  "\r": "\\r",
  "\\": "\\\\",
  "'": "\\'",
};

/**
 * One word as a POSIX shell would need it: unchanged when safe, else single-quoted, or `$'...'`
 * when it holds control characters, C0, DEL or C1 (so it stays on one line and cannot act on the
 * terminal).
 *
 * @example
 * ```ts
 * shellQuote("echo hi"); // "'echo hi'"
 * shellQuote("a\nb"); // "$'a\\nb'"
 * ```
 */
export function shellQuote(word: string): string {
  if (SHELL_SAFE.test(word)) return word;
  if (!CONTROL.test(word)) return `'${word.replaceAll("'", `'\\''`)}'`;
  const escaped = word.replace(
    ANSI_C_SPECIAL,
    // A C1 control as \u: \x9b would be the byte 0x9b, not the character U+009B.
    (c) =>
      ANSI_C_NAMED[c] ??
        (c.charCodeAt(0) < 0x80
          ? `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`
          : `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`),
  );
  return `$'${escaped}'`;
}

/**
 * Text from a job (an env entry, a working directory, an owner, a reason) for a terminal: as it
 * is, unless it holds control characters, which are shown escaped as {@link shellQuote} does, so
 * that what a job's creator wrote cannot move the cursor, recolour or retitle the reader's
 * terminal, or break the layout with a newline.
 */
export function printable(text: string): string {
  return CONTROL.test(text) ? shellQuote(text) : text;
}

/**
 * `value` as indented JSON with a final newline, DEL and the C1 controls escaped as well
 * (JSON.stringify escapes only C0): `--json` output may reach a terminal too.
 */
export function jsonText(value: unknown): string {
  return escapedControls(JSON.stringify(value, null, 2)) + "\n";
}

/** `value` as one line of JSON (JSON Lines), escaped as {@link jsonText}. */
export function jsonLine(value: unknown): string {
  return escapedControls(JSON.stringify(value)) + "\n";
}

/** A command line for display: `bash -c 'echo hi'`. */
export function formatCommandLine(command: string, args: readonly string[]): string {
  return [command, ...args].map(shellQuote).join(" ");
}

/** `text` cut to at most `width` characters, ending in "…" when cut. */
export function truncate(text: string, width: number): string {
  const chars = Array.from(text);
  if (chars.length <= width) return text;
  if (width <= 1) return chars.slice(0, width).join("");
  return chars.slice(0, width - 1).join("") + "…";
}

/**
 * A plain-text table: columns separated by two spaces, every column but the last padded, one
 * trailing newline per row.
 */
export function renderTable(
  headers: readonly string[],
  rows: readonly (readonly string[])[],
): string {
  const all = [headers, ...rows];
  const widths = headers.map((_, col) => Math.max(...all.map((row) => width(row[col] ?? ""))));
  return all.map((row) =>
    headers.map((_, col) => {
      const cell = row[col] ?? "";
      return col === headers.length - 1
        ? cell
        : cell + " ".repeat((widths[col] ?? 0) - width(cell));
    }).join("  ").trimEnd() + "\n"
  ).join("");
}

// deno-lint-ignore no-control-regex
const ANSI = /\x1b\[[0-9;]*m/g;

function width(text: string): number {
  return Array.from(text.replace(ANSI, "")).length;
}
