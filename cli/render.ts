/**
 * How jobs look on a terminal (`list`, `get`, `stop`) and in `--json` output. Pure functions of the
 * protobuf messages and the current time.
 *
 * @module
 */
import type { google } from "../proto/service.ts";
import { jobworker } from "../proto/service.ts";
import {
  formatBytes,
  formatCommandLine,
  formatCpuTime,
  formatDuration,
  formatLocalTime,
  formatRate,
  formatRelative,
  printable,
  renderTable,
  truncate,
} from "./format.ts";
import { signalName } from "../proto/signals.ts";
import { paintStatus } from "./color.ts";
import { shortIdLength } from "./jobs.ts";

/** A JSON-compatible value. */
export type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

/** The status name of a job status value, e.g. `"RUNNING"`. */
export function statusName(status: number | null | undefined): string {
  return jobworker.JobStatus[status ?? 0] ?? `UNKNOWN(${status})`;
}

/** Whether a job has ended. */
export function hasEnded(job: jobworker.IJob): boolean {
  return job.status === jobworker.JobStatus.COMPLETED ||
    job.status === jobworker.JobStatus.FAILED || job.status === jobworker.JobStatus.STOPPED;
}

/** A Timestamp as a Date; undefined when unset. */
export function toDate(ts: google.protobuf.ITimestamp | null | undefined): Date | undefined {
  if (!ts) return undefined;
  const ms = Number(ts.seconds ?? 0) * 1000 + Math.floor((ts.nanos ?? 0) / 1e6);
  return ms === 0 ? undefined : new Date(ms);
}

/**
 * The status and how the job ended, on one line.
 *
 * @example
 * ```ts
 * statusSummary({ status: 4, exitCode: -1, signal: 9, oomKilled: true }); // "FAILED (OOM killed, SIGKILL)"
 * ```
 */
export function statusSummary(job: jobworker.IJob): string {
  const status = statusName(job.status);
  if (!hasEnded(job)) return status;
  const how: string[] = [];
  if (job.oomKilled) how.push("OOM killed");
  if (job.signal) how.push(signalName(job.signal));
  else how.push(`exit code ${job.exitCode ?? 0}`);
  return `${status} (${how.join(", ")})`;
}

/**
 * The note for a job whose output the server stopped keeping at its limit
 * (`JOB_WORKER_MAX_OUTPUT_BYTES`), or "": `run` and `stream` end where the kept output ends, which
 * without it reads like the job's own end.
 */
export function truncationNote(job: jobworker.IJob): string {
  if (!job.outputTruncated) return "";
  const kept = Number(job.outputBytes ?? 0);
  return `jobworker: job ${job.id}'s output was cut at ${kept} bytes, the server's limit; ` +
    `the rest was discarded\n`;
}

/** The statuses in the order the counts line lists them. */
const STATUS_ORDER = ["INITIALIZING", "RUNNING", "COMPLETED", "FAILED", "STOPPED"];

/**
 * The count per status on one line, e.g. `"2 RUNNING, 5 COMPLETED"`; `"no jobs"` when all are 0.
 */
export function formatCounts(
  countByStatus: Readonly<Record<string, number>>,
  color = false,
): string {
  const names = [
    ...STATUS_ORDER,
    ...Object.keys(countByStatus).filter((k) => !STATUS_ORDER.includes(k)).sort(),
  ];
  const parts = names.filter((n) => (countByStatus[n] ?? 0) > 0).map((n) =>
    `${countByStatus[n]} ${paintStatus(n, color)}`
  );
  return parts.length > 0 ? parts.join(", ") : "no jobs";
}

/** Options of {@linkcode renderJobList}. */
export interface ListOptions {
  /** The current time, for ages and running durations. */
  now: Date;
  /** Width of the terminal, if any: the COMMAND column is cut to fit it. */
  width?: number | undefined;
  /** Colour the status words. */
  color?: boolean;
}

/** Width of the COMMAND column when there is no terminal, and the least it gets in one. */
const COMMAND_WIDTH = { noTerminal: 60, least: 20 };

/** The EXIT column: the exit code, or the signal's name; empty while running. */
export function exitColumn(job: jobworker.IJob): string {
  if (!hasEnded(job)) return "";
  if (job.signal) return signalName(job.signal) + (job.oomKilled ? " (OOM)" : "");
  return String(job.exitCode ?? 0);
}

/** How long the job has run (so far), or "" before it started. */
function runTime(job: jobworker.IJob, now: Date): string {
  const started = toDate(job.startTime);
  if (!started) return "";
  return formatDuration((toDate(job.endTime) ?? now).getTime() - started.getTime());
}

/**
 * The `list` view: a table of the jobs in the given order (ids at their shortest unique length,
 * at least 8), then the counts line.
 */
export function renderJobList(jobs: jobworker.IJobs, options: ListOptions): string {
  const list = jobs.jobs ?? [];
  const idLength = shortIdLength(list.map((job) => job.id ?? ""));
  const headers = ["ID", "STATUS", "COMMAND", "OWNER", "AGE", "DURATION", "EXIT"];
  const rest = list.map((job) => {
    const created = toDate(job.createTime);
    return [
      printable(job.owner ?? ""),
      created ? formatRelative(created, options.now) : "-",
      runTime(job, options.now),
      exitColumn(job),
    ];
  });
  const lead = list.map((job) => [
    (job.id ?? "").slice(0, idLength),
    paintStatus(statusName(job.status), options.color ?? false),
  ]);
  let commandWidth = COMMAND_WIDTH.noTerminal;
  if (options.width !== undefined) {
    const columnWidth = (rows: string[][], col: number, header: string) =>
      2 + Math.max(header.length, ...rows.map((row) => visible(row[col] ?? "")));
    const used = columnWidth(lead, 0, "ID") + columnWidth(lead, 1, "STATUS") +
      [0, 1, 2, 3].reduce((sum, c) => sum + columnWidth(rest, c, headers[c + 3]!), 0);
    commandWidth = Math.max(COMMAND_WIDTH.least, options.width - used);
  }
  const rows = list.map((job, i) => [
    ...lead[i]!,
    truncate(formatCommandLine(job.command ?? "", job.args ?? []), commandWidth),
    ...rest[i]!,
  ]);
  const table = rows.length > 0 ? renderTable(headers, rows) : "";
  return table + formatCounts(jobs.countByStatus ?? {}, options.color) + "\n";
}

// deno-lint-ignore no-control-regex
const visible = (text: string) => text.replace(/\x1b\[[0-9;]*m/g, "").length;

/** A limit for display: 0 means no limit. */
function limit(value: number | null | undefined, show: (v: number) => string): string {
  return value ? show(value) : "unlimited";
}

/** The `get` view: one labelled line per fact, grouped. */
export function renderJob(job: jobworker.IJob, now: Date, color = false): string {
  const lines: [string, string][] = [];
  const add = (label: string, value: string) => lines.push([label, value]);
  const created = toDate(job.createTime);
  const started = toDate(job.startTime);
  const ended = toDate(job.endTime);
  const usage = job.usage ?? {};

  add("ID", job.id ?? "");
  add("Command", formatCommandLine(job.command ?? "", job.args ?? []));
  add("Status", paintStatus(statusName(job.status), color));
  add("Owner", printable(job.owner ?? ""));
  if (hasEnded(job)) {
    if (job.signal) add("Signal", `${signalName(job.signal)} (${job.signal})`);
    else add("Exit code", String(job.exitCode ?? 0));
    add("OOM killed", job.oomKilled ? "yes" : "no");
  }
  if (job.reason) add("Reason", printable(job.reason));
  add("Created", created ? `${formatLocalTime(created)} (${formatRelative(created, now)})` : "-");
  add("Started", started ? `${formatLocalTime(started)} (${formatRelative(started, now)})` : "-");
  if (ended) add("Ended", `${formatLocalTime(ended)} (${formatRelative(ended, now)})`);
  if (started) {
    const running = ended ? "" : " (running)";
    add("Duration", formatDuration((ended ?? now).getTime() - started.getTime()) + running);
  }
  add("Workdir", printable(job.workDir || "/"));
  if (job.user) add("User", printable(job.user));
  if (job.network) add("Network", job.network);
  if (job.privileged) add("Privileged", "yes");
  if (job.init) add("Init", "yes (a minimal init is PID 1)");
  add("Timeout", job.timeoutSeconds ? formatDuration(job.timeoutSeconds * 1000) : "none");
  const env = job.env ?? [];
  add("Env", env.length > 0 ? env.map(printable).join("\n") : "-");
  add(
    "Output",
    `${formatBytes(Number(job.outputBytes ?? 0))} (${Number(job.outputBytes ?? 0)} bytes)` +
      (job.outputTruncated ? ", truncated at the server's limit" : ""),
  );
  add("Limits", "");
  add("  CPU", limit(job.maxCPU, (v) => `${v}% of one core`));
  add("  Memory", limit(job.maxMemory, (v) => formatBytes(v * 1024 * 1024)));
  add("  IO", limit(job.maxIOBPS, (v) => `${formatRate(v)} read, ${formatRate(v)} write`));
  add("  Processes", limit(job.maxPids, String));
  add("Usage", "");
  const throttled = Number(usage.cpuThrottledCount ?? 0);
  add(
    "  CPU time",
    formatCpuTime(Number(usage.cpuUsec ?? 0)) +
      (throttled > 0
        ? ` (throttled ${throttled} times, ${
          formatCpuTime(Number(usage.cpuThrottledUsec ?? 0))
        } in all)`
        : ""),
  );
  add(
    "  Memory",
    `${formatBytes(Number(usage.memoryBytes ?? 0))} (peak ${
      formatBytes(Number(usage.memoryPeakBytes ?? 0))
    })`,
  );
  add("  IO read", formatBytes(Number(usage.ioReadBytes ?? 0)));
  add("  IO written", formatBytes(Number(usage.ioWriteBytes ?? 0)));
  add("  Processes", String(usage.pids ?? 0));

  const width = Math.max(...lines.map(([label]) => label.length)) + 2;
  return lines.map(([label, value]) => {
    const head = value === "" ? label : `${label}:`.padEnd(width);
    return head + value.replaceAll("\n", "\n" + " ".repeat(width)) + "\n";
  }).join("");
}

/**
 * A job as JSON: the proto3 JSON names, enums as names, timestamps as RFC 3339 strings (null when
 * unset), plus `signalName`.
 */
export function jobToJson(job: jobworker.IJob): { [key: string]: Json } {
  const object = jobworker.Job.toObject(jobworker.Job.fromObject(job), {
    enums: String,
    longs: Number,
    defaults: true,
    arrays: true,
  }) as { [key: string]: Json };
  for (const key of ["createTime", "startTime", "endTime"] as const) {
    object[key] = toDate(job[key])?.toISOString() ?? null;
  }
  object.signalName = job.signal ? signalName(job.signal) : null;
  // Field order as in the proto (toObject puts repeated fields first), unknown keys last.
  const keys = [
    ...JSON_KEY_ORDER,
    ...Object.keys(object).filter((k) => !JSON_KEY_ORDER.includes(k)),
  ];
  return Object.fromEntries(keys.filter((k) => k in object).map((k) => [k, object[k] ?? null]));
}

const JSON_KEY_ORDER = [
  "id",
  "command",
  "args",
  "status",
  "exitCode",
  "signal",
  "signalName",
  "oomKilled",
  "reason",
  "owner",
  "createTime",
  "startTime",
  "endTime",
  "maxCPU",
  "maxMemory",
  "maxIOBPS",
  "maxPids",
  "usage",
  "outputBytes",
  "outputTruncated",
  "env",
  "workDir",
  "timeoutSeconds",
];

/** The job list as JSON: `{ jobs: [...], countByStatus: {...} }`. */
export function jobsToJson(jobs: jobworker.IJobs): { [key: string]: Json } {
  return {
    jobs: (jobs.jobs ?? []).map(jobToJson),
    countByStatus: { ...jobs.countByStatus },
  };
}
