/**
 * Turns requests into validated values. Every failure names the field, for INVALID_ARGUMENT.
 */
import type { jobworker } from "../../proto/service.ts";
import type { Limits } from "../cgroups/types.ts";
import type { JobSpec } from "../jobs/job.ts";

/** A request field that is not acceptable. */
export class InvalidField extends Error {
  constructor(readonly field: string, problem: string) {
    super(`${field}: ${problem}`);
    this.name = "InvalidField";
  }
}

/** Bounds well under the kernel's execve limits (128 KiB a string, 2 MiB in all). */
const MAX_STRING_BYTES = 128 * 1024;
const MAX_TOTAL_BYTES = 512 * 1024;
const MAX_ENTRIES = 4096;

const byteLength = (s: string) => new TextEncoder().encode(s).length;

function checkString(field: string, value: string): void {
  if (value.includes("\0")) throw new InvalidField(field, "must not contain NUL bytes");
  if (byteLength(value) > MAX_STRING_BYTES) {
    throw new InvalidField(field, `longer than ${MAX_STRING_BYTES} bytes`);
  }
}

function nonNegative(field: string, value: number | null | undefined): number {
  const n = value ?? 0;
  if (!Number.isInteger(n) || n < 0) throw new InvalidField(field, `must be >= 0, got ${n}`);
  return n;
}

/** Validates a CreateJobReq and resolves 0 limits to the server's defaults. */
export function jobSpecFrom(req: jobworker.ICreateJobReq, defaults: Limits): JobSpec {
  const command = req.command ?? "";
  if (command.trim() === "") throw new InvalidField("command", "must not be empty");
  checkString("command", command);
  const args = req.args ?? [];
  const env = req.env ?? [];
  if (args.length > MAX_ENTRIES) throw new InvalidField("args", `more than ${MAX_ENTRIES} entries`);
  if (env.length > MAX_ENTRIES) throw new InvalidField("env", `more than ${MAX_ENTRIES} entries`);
  args.forEach((a, i) => checkString(`args[${i}]`, a));
  env.forEach((e, i) => {
    checkString(`env[${i}]`, e);
    const eq = e.indexOf("=");
    if (eq < 0) throw new InvalidField(`env[${i}]`, `"${e.slice(0, 64)}" is not KEY=VALUE`);
    if (eq === 0) throw new InvalidField(`env[${i}]`, "the name before '=' is empty");
  });
  const total = [command, ...args, ...env].reduce((n, s) => n + byteLength(s) + 1, 0);
  if (total > MAX_TOTAL_BYTES) {
    throw new InvalidField("args", `command, args and env exceed ${MAX_TOTAL_BYTES} bytes`);
  }
  const workDir = req.workDir || "/";
  checkString("workDir", workDir);
  if (!workDir.startsWith("/")) {
    throw new InvalidField("workDir", `must be an absolute path, got "${workDir}"`);
  }
  const timeoutSeconds = nonNegative("timeoutSeconds", req.timeoutSeconds);
  const limit = (field: string, value: number | null | undefined, fallback: number) =>
    nonNegative(field, value) || fallback;
  return {
    command,
    args,
    env,
    workDir,
    timeoutSeconds,
    limits: {
      cpuPercent: limit("maxCPU", req.maxCPU, defaults.cpuPercent),
      memoryMiB: limit("maxMemory", req.maxMemory, defaults.memoryMiB),
      ioBps: limit("maxIOBPS", req.maxIOBPS, defaults.ioBps),
      pids: limit("maxPids", req.maxPids, defaults.pids),
    },
  };
}

export function graceFrom(req: jobworker.IStopJobReq): number {
  return nonNegative("graceSeconds", req.graceSeconds);
}

export function offsetFrom(req: jobworker.IGetJobsStreamReq): number {
  const offset = Number(req.offset ?? 0);
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new InvalidField("offset", `must be >= 0, got ${req.offset}`);
  }
  return offset;
}
