/**
 * The direct start's plan: a job's steps (init/job_steps.ts) recorded, not run, for jwstart to take
 * in the job's new namespaces (init/shim/jwdirect.c, which documents the encoding).
 * With each step the plan keeps how init would have labelled it, so a failure jwstart reports
 * ({"step", "errno"}, with "kind" and the PATH "entry" for the command's lookup) reads exactly as
 * init's; so does the minimal init's report of its command's exec (job_steps.ts).
 */
import {
  becomeJob,
  execWhat,
  isErrno,
  isMinimalInitReport,
  isolateMounts,
  type JobSteps,
  minimalInitFailure,
  type Stage,
  type StepCalls,
  unreadableReport,
} from "./job_steps.ts";
import type { InitFailure, InitSpec } from "./spec.ts";
import {
  LOOKUP_KINDS,
  type LookupKind,
  lookupMessage,
  notInPathMessage,
  searchPath,
} from "./resolve_command.ts";
import { ShimError } from "./shim/ffi.ts";

/** The ops, numbered as jwdirect.c numbers them. */
const Op = {
  privateMounts: 1,
  mountProc: 2,
  hostname: 3,
  loopbackUp: 4,
  joinCgroup: 5,
  openMinimalInit: 6,
  privateDev: 7,
  mask: 8,
  bindReadonly: 9,
  makeReadonly: 10,
  limitCapabilities: 11,
  setUser: 12,
  noNewPrivs: 13,
  chdir: 14,
  exec: 15,
} as const;

interface Label {
  stage: Stage;
  what: string;
  /** The shim call's name in init's messages (ShimError's). */
  call: string;
}

export interface DirectPlan {
  bytes: Uint8Array<ArrayBuffer>;
  /** Per step, how init labels it. */
  labels: readonly Label[];
  /** The command's lookup: what a "not in PATH" failure names. */
  command: string;
  pathVar: string;
}

const encoder = new TextEncoder();

class PlanRecorder implements JobSteps, StepCalls {
  /** The calls are recorded by the recorder itself. */
  readonly calls: StepCalls = this;
  /** The plan so far: #buffer's first #length bytes (grown by doubling). */
  #buffer = new Uint8Array(1024);
  #length = 0;
  readonly labels: Label[] = [];
  #stage: { stage: Stage; what: string } = { stage: "exec", what: "starting the job" };

  bytes(): Uint8Array<ArrayBuffer> {
    return this.#buffer.slice(0, this.#length);
  }

  /** Room for `bytes` more bytes. */
  #room(bytes: number): void {
    if (this.#length + bytes <= this.#buffer.length) return;
    let size = this.#buffer.length * 2;
    while (size < this.#length + bytes) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.#buffer.subarray(0, this.#length));
    this.#buffer = grown;
  }

  #op(op: number, call: string): void {
    this.#room(1);
    this.#buffer[this.#length++] = op;
    this.labels.push({ ...this.#stage, call });
  }

  #text(value: string): void {
    // The API refuses NUL in what a job names; a NUL here would end the text early and shift
    // every field after it.
    if (value.includes("\0")) throw new RangeError("a job's text may not contain NUL");
    // UTF-8 takes at most 3 bytes per UTF-16 unit (a surrogate pair's 4 bytes are 2 units' 6).
    this.#room(value.length * 3 + 1);
    const { written } = encoder.encodeInto(value, this.#buffer.subarray(this.#length));
    this.#length += written;
    this.#buffer[this.#length++] = 0;
  }

  #u32(value: number): void {
    this.#room(4);
    const b = this.#buffer;
    b[this.#length++] = value & 0xff;
    b[this.#length++] = (value >>> 8) & 0xff;
    b[this.#length++] = (value >>> 16) & 0xff;
    b[this.#length++] = value >>> 24;
  }

  step<T>(stage: Stage, what: string, fn: () => T): T {
    const outer = this.#stage;
    this.#stage = { stage, what };
    try {
      return fn();
    } finally {
      this.#stage = outer;
    }
  }

  makeMountsPrivate(): void {
    this.#op(Op.privateMounts, "mount / private");
  }
  mountProc(): void {
    this.#op(Op.mountProc, "mount /proc");
  }
  setHostname(name: string): void {
    this.#op(Op.hostname, "sethostname");
    this.#text(name);
  }
  unshareNetwork(): void {
    // The direct start's clone3 makes the network namespace itself.
    throw new Error("a direct start's network namespace comes with its clone");
  }
  loopbackUp(): void {
    this.#op(Op.loopbackUp, "loopback up");
  }
  joinCgroup(procsFile: string): void {
    this.#op(Op.joinCgroup, `write ${procsFile}`);
    this.#text(procsFile);
  }
  openMinimalInit(path: string): void {
    this.#op(Op.openMinimalInit, `open ${path}`);
    this.#text(path);
  }
  privateDev(): void {
    this.#op(Op.privateDev, "private /dev");
  }
  mask(path: string): void {
    this.#op(Op.mask, `mask ${path}`);
    this.#text(path);
  }
  bindReadonly(path: string): void {
    this.#op(Op.bindReadonly, `bind read-only ${path}`);
    this.#text(path);
  }
  makeReadonly(path: string, recursive: boolean): void {
    this.#op(Op.makeReadonly, `read-only ${path}`);
    this.#text(path);
    this.#u32(recursive ? 1 : 0);
  }
  limitCapabilities(keep: bigint, inheritable: boolean): void {
    this.#op(Op.limitCapabilities, "capabilities");
    this.#u32(Number(keep & 0xffffffffn));
    this.#u32(Number(keep >> 32n));
    this.#u32(inheritable ? 1 : 0);
  }
  setUser(uid: number, gid: number, groups: readonly number[]): void {
    this.#op(Op.setUser, "setuid");
    this.#u32(uid);
    this.#u32(gid);
    this.#u32(groups.length);
    for (const group of groups) this.#u32(group);
  }
  noNewPrivs(): void {
    this.#op(Op.noNewPrivs, "no_new_privs");
  }
  chdir(dir: string): void {
    this.#op(Op.chdir, "chdir");
    this.#text(dir);
  }
  execCommand(spec: InitSpec): void {
    this.step("exec", execWhat(spec.command), () => {
      this.#op(Op.exec, "execve");
      this.#text(spec.command);
      this.#text(searchPath(spec.env));
      const argv = [spec.command, ...spec.args];
      this.#u32(argv.length);
      for (const arg of argv) this.#text(arg);
      this.#u32(spec.env.length);
      for (const entry of spec.env) this.#text(entry);
    });
  }
}

/**
 * The plan for `spec`, whose namespaces (network too, for `network: "none"`) come with the
 * clone; throws if the spec asks for a step jwstart does not take (creating a network namespace).
 */
export function directPlan(spec: InitSpec): DirectPlan {
  const recorder = new PlanRecorder();
  isolateMounts(recorder);
  becomeJob(recorder, { ...spec, unshareNetwork: false });
  return {
    bytes: recorder.bytes(),
    labels: recorder.labels,
    command: spec.command,
    pathVar: searchPath(spec.env),
  };
}

interface ChildReport {
  /** Only from the shim's clone, when jwstart itself could not be exec'd. */
  stage?: "spawn";
  /** The failed step's index in the plan; -1: the plan could not be read. */
  step?: number;
  errno: number;
  kind?: LookupKind | "not-in-path";
  /** With `kind`: the index of the PATH entry the file was found under; absent: the command. */
  entry?: number;
}

/** Whether `value` is an integer of at least `min`. */
const isIndex = (value: unknown, min: number): value is number =>
  Number.isSafeInteger(value) && (value as number) >= min;

/**
 * Whether parsed status text is a {@link ChildReport} this plan can explain: an object (not an
 * array) with an errno, a known kind, and an entry or step that exists in the plan.
 */
function isChildReport(plan: DirectPlan, r: unknown): r is ChildReport {
  if (typeof r !== "object" || r === null || Array.isArray(r)) return false;
  const report = r as Record<string, unknown>;
  if (!isErrno(report.errno)) return false;
  if (report.kind !== undefined) {
    if (report.kind === "not-in-path") return report.entry === undefined;
    if (!(LOOKUP_KINDS as readonly unknown[]).includes(report.kind)) return false;
    if (report.entry === undefined) return true;
    return isIndex(report.entry, 0) && lookedUp(plan, report.entry) !== undefined;
  }
  if (report.entry !== undefined) return false;
  if (report.stage !== undefined) return report.stage === "spawn" && report.step === undefined;
  return isIndex(report.step, -1) && report.step < plan.labels.length;
}

/**
 * The file a lookup failure names: the command as given, or the command under the PATH entry
 * jwstart names (split as jwstart splits it, an empty entry being the working directory).
 */
function lookedUp(plan: DirectPlan, entry: number | undefined): string | undefined {
  if (entry === undefined) return plan.command;
  const dir = plan.pathVar.split(":")[entry];
  return dir === undefined ? undefined : `${dir || "."}/${plan.command}`;
}

/** jwstart's failure report (the status pipe's text) as init would have told it. */
export function directFailure(plan: DirectPlan, text: string): InitFailure {
  let report: unknown;
  try {
    report = JSON.parse(text);
  } catch {
    return unreadableReport(text);
  }
  if (isMinimalInitReport(report)) return minimalInitFailure(plan.command, report);
  if (!isChildReport(plan, report)) return unreadableReport(text);
  const { errno } = report;
  if (report.kind === "not-in-path") {
    return { stage: "lookup", errno, message: notInPathMessage(plan.command, plan.pathVar) };
  }
  if (report.kind !== undefined) {
    const path = lookedUp(plan, report.entry)!;
    return { stage: "lookup", errno, message: lookupMessage(report.kind, path, errno) };
  }
  if (report.stage !== undefined) {
    const why = new ShimError("execve", errno).message;
    return {
      stage: "spawn",
      errno,
      message: `cannot run the job's start program (jwstart): ${why}`,
    };
  }
  const label = plan.labels[report.step!];
  if (label === undefined) {
    const why = new ShimError("reading the plan", errno).message;
    return { stage: "spawn", errno, message: `the job's start program refused its plan: ${why}` };
  }
  return {
    stage: label.stage,
    errno,
    message: `${label.what}: ${new ShimError(label.call, errno).message}`,
  };
}
