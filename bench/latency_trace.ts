/**
 * Where a line's write-to-client latency goes (issue 8), traced in the kernel: the bench's ticker
 * job prints its clock every 10 ms and our client (the command line's transport) stamps arrival, as
 * in the bench's latency rows, while bpftrace records, for every line, when the ticker wrote it
 * (its text, so each line is told apart), when the worker read it from the job's pipe (likewise),
 * the worker's next write to a socket and the client's next read from one. Each line's delay splits
 * into five parts:
 *
 * - ticker: its stamp until its write (the ticker preempted in between);
 * - pipe: the ticker's write until the worker's read (the output pump noticing the pipe);
 * - worker: that read until the worker's next socket write (storing, the stream, HTTP/2, TLS);
 * - to client: that write until the client's next socket read (loopback, the client waking);
 * - client: that read until the client stamps the line (TLS, HTTP/2, gRPC, JavaScript).
 *
 * Only the ticker's stream flows to the client while it runs, so "next write" and "next read" are
 * that line's. First on the idle worker, then with N other jobs writing 33-byte lines as fast as
 * they can (the bench's storm writers). Needs root and bpftrace (Debian's package; tracefs is
 * mounted if it is not). Prints one JSON object per phase: how many lines arrived, were replayed
 * (stored before the stream was open), could not be matched (a read that took two lines shows only
 * the first) and were split, and p50, p90, p99 and max of the whole delay and each part (ms).
 *
 * Usage: deno run -A bench/latency_trace.ts [writers=200] [seconds=10]
 */
import { makePki } from "../tests/helpers/pki.ts";
import { WorkerProcess } from "../tests/helpers/worker.ts";
import { clientFor } from "../tests/helpers/clients.ts";
import type { JobClient } from "../cli/client.ts";
import { JOB_LIMITS_ENV } from "./peers.ts";
import { delay, quantile } from "./rows.ts";
import { idleThenStorm } from "./storm.ts";
import { arrivingLines, TICKER } from "./streaming.ts";

const WRITERS = Number(Deno.args[0] ?? 200);
const SECONDS = Number(Deno.args[1] ?? 10);
/** A stamp as the ticker prints it: nanoseconds since the epoch, 19 digits. */
const STAMP = /^\d{19}$/;

function requireBpftrace(): void {
  if (Deno.uid() !== 0) {
    console.error("latency_trace: needs root (bpftrace)");
    Deno.exit(2);
  }
  try {
    new Deno.Command("bpftrace", { args: ["--version"], stdout: "null" }).outputSync();
  } catch {
    console.error("latency_trace: needs bpftrace (apt-get install bpftrace) and root");
    Deno.exit(2);
  }
  try {
    Deno.statSync("/sys/kernel/tracing/events");
  } catch {
    new Deno.Command("mount", { args: ["-t", "tracefs", "tracefs", "/sys/kernel/tracing"] })
      .outputSync();
  }
}

/** Descriptor numbers of `pid` whose link satisfies `match`. */
function fdsOf(pid: number, match: (link: string) => boolean): number[] {
  const fds: number[] = [];
  for (const entry of Deno.readDirSync(`/proc/${pid}/fd`)) {
    try {
      if (match(Deno.readLinkSync(`/proc/${pid}/fd/${entry.name}`))) fds.push(Number(entry.name));
    } catch { /* closed meanwhile */ }
  }
  return fds;
}

/**
 * The ticker's process and the worker's descriptor of its output pipe: the process running the
 * ticker's code whose stdout the worker holds (another bench's ticker would not be this worker's).
 */
function findTicker(worker: number): { pid: number; pipeFd: number } {
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      if (!Deno.readTextFileSync(`/proc/${entry.name}/cmdline`).includes("time.time_ns()")) {
        continue;
      }
      const stdout = Deno.readLinkSync(`/proc/${entry.name}/fd/1`);
      const [pipeFd] = fdsOf(worker, (link) => link === stdout);
      if (pipeFd !== undefined) return { pid: Number(entry.name), pipeFd };
    } catch { /* gone */ }
  }
  throw new Error("the ticker's process was not found among the worker's jobs");
}

/** A bpftrace condition true for any of `fds` (false for none). */
const anyFd = (fds: number[]) =>
  fds.length === 0 ? "0" : fds.map((fd) => `args->fd == ${fd}`).join(" || ");

function script(worker: number, ticker: number, pipeFd: number, sockets: number[], ours: number[]) {
  return `
tracepoint:syscalls:sys_enter_write /pid == ${ticker} || pid == ${worker}/ {
  if (pid == ${ticker}) { if (args->fd == 1) { printf("W %llu %s\\n", nsecs, str(args->buf, 19)); } }
  else if (${anyFd(sockets)}) { printf("X %llu\\n", nsecs); }
}
tracepoint:syscalls:sys_enter_writev /pid == ${worker} && (${
    anyFd(sockets)
  })/ { printf("X %llu\\n", nsecs); }
tracepoint:syscalls:sys_enter_sendto /pid == ${worker} && (${
    anyFd(sockets)
  })/ { printf("X %llu\\n", nsecs); }
tracepoint:syscalls:sys_enter_sendmsg /pid == ${worker} && (${
    anyFd(sockets)
  })/ { printf("X %llu\\n", nsecs); }
tracepoint:syscalls:sys_enter_read /pid == ${worker} || pid == ${Deno.pid}/ {
  if (pid == ${worker}) { if (args->fd == ${pipeFd}) { @pipe[tid] = args->buf; } }
  else if (${anyFd(ours)}) { @sock[tid] = 1; }
}
tracepoint:syscalls:sys_enter_recvfrom /pid == ${Deno.pid} && (${anyFd(ours)})/ { @sock[tid] = 1; }
tracepoint:syscalls:sys_exit_read /@pipe[tid] != 0 || @sock[tid] != 0/ {
  if (args->ret > 0) {
    if (@pipe[tid] != 0) { printf("R %llu %s\\n", nsecs, str(@pipe[tid], 19)); } else { printf("C %llu\\n", nsecs); }
  }
  delete(@pipe[tid]);
  delete(@sock[tid]);
}
tracepoint:syscalls:sys_exit_recvfrom /@sock[tid] != 0/ {
  if (args->ret > 0) { printf("C %llu\\n", nsecs); }
  delete(@sock[tid]);
}`;
}

/** The first of the sorted `times` at or after `t`. */
function next(times: number[], t: number): number | undefined {
  let lo = 0;
  let hi = times.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (times[mid]! < t) lo = mid + 1;
    else hi = mid;
  }
  return times[lo];
}

function summary(values: number[]) {
  const round = (n: number) => Math.round(n * 100) / 100;
  if (values.length === 0) return null;
  return {
    p50: round(quantile(values, 0.5)),
    p90: round(quantile(values, 0.9)),
    p99: round(quantile(values, 0.99)),
    max: round(Math.max(...values)),
  };
}

const PARTS = ["total", "ticker", "pipe", "worker", "toClient", "client"] as const;
type Part = typeof PARTS[number];

/**
 * Splits each arrived line's delay by what bpftrace printed (`text`). `arrivals` maps each line's
 * stamp to its arrival (ns since the epoch); lines stamped before `firstArrival` were stored before
 * the stream was open (replayed, not followed) and are left out.
 */
export function attribute(text: string, arrivals: Map<string, number>, firstArrival: number) {
  const written = new Map<string, number>();
  const read = new Map<string, number>();
  const sends: number[] = [];
  const receives: number[] = [];
  for (const line of text.split("\n")) {
    if (/^Lost \d+ events/.test(line)) throw new Error(`bpftrace: ${line}`);
    const [kind, at, stamp] = line.split(" ");
    if (kind === "W" && stamp) written.set(stamp, Number(at));
    else if (kind === "R" && stamp) read.set(stamp, Number(at));
    else if (kind === "X") sends.push(Number(at));
    else if (kind === "C") receives.push(Number(at));
  }
  if (written.size === 0) throw new Error("bpftrace saw none of the ticker's writes");
  // The kernel's clock (monotonic) against the ticker's (since the epoch): the ticker stamps its line
  // right before it writes it, so the least difference is the offset.
  const offset = Math.min(...[...written].map(([stamp, at]) => at - Number(stamp)));
  sends.sort((a, b) => a - b);
  receives.sort((a, b) => a - b);
  const parts = Object.fromEntries(PARTS.map((part) => [part, [] as number[]])) as {
    [part in Part]: number[];
  };
  const counts = { arrived: 0, replayed: 0, unmatched: 0 };
  for (const [stamp, arrival] of arrivals) {
    counts.arrived++;
    if (Number(stamp) < firstArrival) {
      counts.replayed++;
      continue;
    }
    const w = written.get(stamp);
    const r = read.get(stamp); // absent when a read took two lines: only the first is seen
    const x = r === undefined ? undefined : next(sends, r);
    const c = x === undefined ? undefined : next(receives, x);
    const arrived = arrival + offset; // on the kernel's clock
    if (w === undefined || r === undefined || x === undefined || c === undefined || c > arrived) {
      counts.unmatched++;
      continue;
    }
    parts.total.push((arrival - Number(stamp)) / 1e6);
    parts.ticker.push((w - offset - Number(stamp)) / 1e6);
    parts.pipe.push((r - w) / 1e6);
    parts.worker.push((x - r) / 1e6);
    parts.toClient.push((c - x) / 1e6);
    parts.client.push((arrived - c) / 1e6);
  }
  return {
    ...counts,
    matched: parts.total.length,
    ...Object.fromEntries(PARTS.map((part) => [part, summary(parts[part])])),
  };
}

async function phase(label: string, client: JobClient, ours: JobClient, worker: number) {
  const ticker = await client.createJob(TICKER);
  await delay(300);
  const { pid, pipeFd } = findTicker(worker);
  const isSocket = (link: string) => link.startsWith("socket:");
  const tracer = new Deno.Command("bpftrace", {
    args: ["-e", script(worker, pid, pipeFd, fdsOf(worker, isSocket), fdsOf(Deno.pid, isSocket))],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const traced = new Response(tracer.stdout).text();
  const errors = new Response(tracer.stderr).text();
  await delay(1500); // bpftrace attaches
  const arrivals = new Map<string, number>();
  let firstArrival = Infinity;
  const stop = AbortSignal.timeout(SECONDS * 1000);
  for await (const { line, at } of arrivingLines(ours.stream(ticker.id, { signal: stop }), stop)) {
    firstArrival = Math.min(firstArrival, at);
    if (STAMP.test(line)) arrivals.set(line, at);
  }
  try {
    tracer.kill("SIGINT");
  } catch { /* it ended: its errors say why */ }
  const [status, text] = await Promise.all([tracer.status, traced]);
  await client.stopJob(ticker.id, { force: true }).catch(() => {});
  try {
    return { phase: label, ...attribute(text, arrivals, firstArrival) };
  } catch (e) {
    throw new Error(
      `${e instanceof Error ? e.message : e} (bpftrace exit ${status.code}: ${await errors})`,
    );
  }
}

requireBpftrace();
const pki = await makePki();
const worker = await WorkerProcess.start({
  certDir: pki.dir,
  env: {
    JOB_WORKER_MAX_JOBS: "1000",
    JOB_WORKER_MAX_STREAMS_PER_CLIENT: "512",
    ...JOB_LIMITS_ENV,
  },
});
const pid = worker.process.pid;
const client = clientFor(pki.dir, worker.address);
const ours = clientFor(pki.dir, worker.address, "admin", { transport: "http2" });
try {
  await client.listJobs();
  await ours.listJobs();
  await idleThenStorm(client, WRITERS, async (which) => {
    const label = which === "idle" ? "idle" : `${WRITERS} jobs writing`;
    console.log(JSON.stringify(await phase(label, client, ours, pid)));
  });
} finally {
  client.close();
  ours.close();
  await worker.stop();
  await pki.remove();
}
