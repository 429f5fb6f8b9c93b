/**
 * Starts a real `jobworker serve` process for tests: its own state directory, port 0, the given
 * certificates; waits for its "listening" line and reports the port.
 */
import { TextLineStream } from "./lines.ts";
import { parseLogLine } from "./log_lines.ts";
import { cgroupDirsNamed, isAlive, processId, readOrNull } from "./host_procs.ts";
import { instanceDirName, instanceName } from "../../worker/cgroups/paths.ts";
import { listPids, signalPids } from "../../worker/cgroups/kill.ts";
import { removeCgroupDirs } from "../../worker/cgroups/remove.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/**
 * Every worker gets SIGTERM when the test process ends, however it ends (util-linux setpriv sets
 * its parent-death signal, which survives the execs after it, a reload's included). A worker stops
 * cleanly on SIGTERM and removes its cgroups; without this, a test run ended by a signal to the
 * test process alone (`kill -INT`, a timeout) left its workers running on, their init pools and
 * cgroup trees with them (`deno test` exits on SIGINT without running a test's cleanup). The test
 * process spawns from its main thread, which lives as long as it does.
 *
 * The worker is spawned `detached` for the same reason: Deno gives every other child tokio's
 * kill_on_drop, and `deno test` drops its runtime when a file's tests end, so a worker no test
 * stopped (a `--filter` that skips the test stopping it, a test failing before its stop) was
 * SIGKILLed by the test process itself, before its exit could send the SIGTERM: its cgroup trees
 * stayed behind. Detached also means a session of its own (a terminal's Ctrl-C reaches the test
 * process only, whose exit then sends the SIGTERM). Such workers are stopped at unload, below.
 */
const PARENT_DEATH = ["setpriv", "--pdeathsig", "TERM", "--"];

/** How long the unload listener waits for the workers no test stopped to stop on SIGTERM. */
const UNLOAD_STOP_MS = 30_000;

/** Workers started and not stopped yet. */
const running = new Set<WorkerProcess>();

export interface WorkerOptions {
  certDir: string;
  env?: Record<string, string>;
  args?: string[];
  /** Use this state directory (kept at stop) instead of a fresh temporary one (removed). */
  stateDir?: string;
  /** Run this jobworker executable (e.g. the compiled bin/jobworker) instead of main.ts. */
  program?: string;
  /** Run main.ts with this deno executable (e.g. a copy a test replaces) instead of the test's. */
  deno?: string;
  /** A command (and its arguments) that execs the worker's command line appended to it. */
  wrapper?: string[];
}

export class WorkerProcess {
  #exited: Promise<Deno.CommandStatus>;
  /** Set once the exit status is in: the pid may belong to another process after that. */
  #ended = false;

  private constructor(
    readonly process: Deno.ChildProcess,
    readonly stateDir: string,
    readonly port: number,
    exited: Promise<Deno.CommandStatus>,
    /** Every line the worker logged so far. */
    readonly logs: string[],
    private readonly ownsStateDir: boolean,
    /** The worker's instance name (its cgroups are `jobworker-<instance>`), "" if unknown. */
    private readonly instance: string,
  ) {
    this.#exited = exited;
    exited.finally(() => this.#ended = true).catch(() => {});
    running.add(this);
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  static async start(options: WorkerOptions): Promise<WorkerProcess> {
    const stateDir = options.stateDir ??
      await Deno.makeTempDir({ prefix: "jobworker-test-state-" });
    const launch = options.program !== undefined ? [options.program] : [
      options.deno ?? Deno.execPath(),
      "run",
      "--allow-all",
      "--no-prompt",
      "--cached-only",
      MAIN,
    ];
    launch.unshift(...PARENT_DEATH, ...options.wrapper ?? []);
    const process = new Deno.Command(launch[0]!, {
      args: [...launch.slice(1), "serve", ...options.args ?? []],
      env: {
        JOB_WORKER_ADDR: "127.0.0.1:0",
        JOB_WORKER_CERT_PATH: options.certDir,
        JOB_WORKER_STATE_DIR: stateDir,
        LOG_LEVEL: "info",
        NO_COLOR: "1",
        ...options.env,
      },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      detached: true,
    }).spawn();
    const logs: string[] = [];
    const lines = process.stderr.pipeThrough(new TextDecoderStream()).pipeThrough(
      new TextLineStream(),
    );
    const reader = lines.getReader();
    let port = 0;
    // A worker that neither listens nor exits within two minutes (User-mode Linux is slow) is a
    // failure, not a hang.
    const timer = setTimeout(() => process.kill("SIGKILL"), 120_000);
    try {
      while (port === 0) {
        const { value, done } = await reader.read();
        if (done) {
          const status = await process.status;
          await process.stdout.cancel();
          throw new Error(
            `the worker exited (${status.code}) before listening:\n${logs.join("\n")}`,
          );
        }
        logs.push(value);
        // The "listening" line in any LOG_FORMAT: logfmt, JSON or text.
        const line = parseLogLine(value);
        if (line?.msg === "listening") port = Number(line.fields.port);
      }
    } catch (e) {
      if (options.stateDir === undefined) {
        await Deno.remove(stateDir, { recursive: true }).catch(() => {});
      }
      throw e;
    } finally {
      clearTimeout(timer);
    }
    // Keep draining the worker's output so it never blocks on a full pipe.
    (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        logs.push(value);
      }
    })();
    process.stdout.pipeTo(new WritableStream()).catch(() => {});
    return new WorkerProcess(
      process,
      stateDir,
      port,
      process.status,
      logs,
      options.stateDir === undefined,
      await instanceName(stateDir).catch(() => ""),
    );
  }

  /**
   * SIGTERM, then waits for exit; returns the exit status. A worker that did not stop cleanly on a
   * state directory of its own (no later worker will clean up after it) has its cgroups removed.
   */
  async stop(signal: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    try {
      this.process.kill(signal);
    } catch { /* already exited */ }
    const status = await this.#exited;
    running.delete(this);
    if (this.ownsStateDir) {
      if (!status.success && this.instance) await removeInstanceCgroups(this.instance);
      await Deno.remove(this.stateDir, { recursive: true }).catch(() => {});
    }
    return status;
  }

  get exited(): Promise<Deno.CommandStatus> {
    return this.#exited;
  }

  /**
   * The workers no test stopped (a filtered run, a test that failed before its stop) are stopped
   * when the test file unloads, before its runtime goes: SIGTERM, a wait (synchronous: an unload
   * listener cannot await) for all of them to exit, SIGKILL for any still running after
   * UNLOAD_STOP_MS; then whatever cgroups of theirs are left are removed (their processes killed)
   * and the state directories of their own with them. The listener is registered when this module
   * loads, so it runs before any test file's own.
   */
  static stopLeftSync(): void {
    // Workers that exited by themselves (a test killed one, and stopped no later) leave their
    // cgroups and state directory too: only the signals and the wait are for running ones.
    const unstopped = [...running];
    running.clear();
    const left = unstopped.filter((w) => !w.#ended);
    const ids = left.map((w) => processId(w.process.pid));
    for (const w of left) {
      try {
        w.process.kill("SIGTERM");
      } catch { /* already exited */ }
    }
    const pause = new Int32Array(new SharedArrayBuffer(4));
    const deadline = Date.now() + UNLOAD_STOP_MS;
    const alive = () => ids.filter((id) => id !== null && isAlive(id));
    while (alive().length > 0 && Date.now() < deadline) Atomics.wait(pause, 0, 0, 50);
    left.forEach((w, i) => {
      const id = ids[i];
      if (id === null || id === undefined || !isAlive(id)) return;
      try {
        w.process.kill("SIGKILL");
      } catch { /* already exited */ }
    });
    const instances = unstopped.map((w) => w.instance).filter(Boolean).map(instanceDirName);
    removeCgroupTreesSync(cgroupDirsNamed(instances), 10_000);
    for (const w of unstopped) {
      if (!w.ownsStateDir) continue;
      try {
        Deno.removeSync(w.stateDir, { recursive: true });
      } catch { /* removed */ }
    }
  }
}

/** Kills what is left in a dead worker instance's cgroups (pool slots, jobs) and removes them. */
async function removeInstanceCgroups(instance: string): Promise<void> {
  const dirs = cgroupDirsNamed([instanceDirName(instance)]);
  const all = dirs.flatMap(function below(dir: string): string[] {
    const children = [...Deno.readDirSync(dir)].filter((e) => e.isDirectory);
    return [dir, ...children.flatMap((c) => below(`${dir}/${c.name}`))];
  });
  signalPids(listPids(all), "SIGKILL");
  await removeCgroupDirs(dirs, 10_000).catch((e) => console.error(`test cleanup: ${e}`));
}

globalThis.addEventListener("unload", () => WorkerProcess.stopLeftSync());

/** SIGKILLs what is in the trees and removes them bottom-up, retrying for up to `ms`. */
function removeCgroupTreesSync(trees: string[], ms: number): void {
  const pause = new Int32Array(new SharedArrayBuffer(4));
  const deadline = Date.now() + ms;
  for (let dirs = treeDirs(trees); dirs.length > 0; dirs = treeDirs(trees)) {
    for (const dir of dirs) {
      for (const pid of (readOrNull(`${dir}/cgroup.procs`) ?? "").split("\n").filter(Boolean)) {
        try {
          Deno.kill(Number(pid), "SIGKILL");
        } catch { /* gone */ }
      }
      try {
        Deno.removeSync(dir); // rmdir: a cgroup directory holds only the kernel's files
      } catch { /* not empty yet: its processes are still dying, or a child is left */ }
    }
    if (Date.now() > deadline) {
      console.error(`test cleanup: cgroups left behind: ${dirs.join(" ")}`);
      return;
    }
    Atomics.wait(pause, 0, 0, 20);
  }
}

/** Every directory of the trees that still exists, deepest first. */
function treeDirs(trees: string[]): string[] {
  const below = (dir: string): string[] => {
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(dir)];
    } catch {
      return []; // removed
    }
    return [...entries.filter((e) => e.isDirectory).flatMap((e) => below(`${dir}/${e.name}`)), dir];
  };
  return trees.flatMap(below);
}
