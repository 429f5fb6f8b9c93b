/**
 * Starts a real `jobworker serve` process for tests: its own state directory, port 0, the given
 * certificates; waits for its "listening" line and reports the port.
 */
import { TextLineStream } from "./lines.ts";
import { parseLogLine } from "./log_lines.ts";
import { cgroupDirsNamed } from "./host_procs.ts";
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
 */
const PARENT_DEATH = ["setpriv", "--pdeathsig", "TERM", "--"];

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

  private constructor(
    readonly process: Deno.ChildProcess,
    readonly stateDir: string,
    readonly port: number,
    exited: Promise<Deno.CommandStatus>,
    /** Every line the worker logged so far. */
    readonly logs: string[],
    private readonly ownsStateDir: boolean,
  ) {
    this.#exited = exited;
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
    );
  }

  /**
   * SIGTERM, then waits for exit; returns the exit status. A worker that did not stop cleanly on a
   * state directory of its own (no later worker will clean up after it) has its cgroups removed.
   */
  async stop(signal: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    const instance = this.ownsStateDir ? await instanceName(this.stateDir).catch(() => "") : "";
    try {
      this.process.kill(signal);
    } catch { /* already exited */ }
    const status = await this.#exited;
    if (this.ownsStateDir) {
      if (!status.success && instance) await removeInstanceCgroups(instance);
      await Deno.remove(this.stateDir, { recursive: true }).catch(() => {});
    }
    return status;
  }

  get exited(): Promise<Deno.CommandStatus> {
    return this.#exited;
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
