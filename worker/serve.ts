/**
 * `jobworker serve`: wires configuration, the shim, cgroups, the job manager and the gRPC server,
 * and shuts everything down gracefully on SIGTERM or SIGINT (every job stopped, exit 0).
 */
import { ConfigError, loadConfig, SERVE_HELP } from "./config.ts";
import { log, setLogFormat, setLogLevel } from "./log/logger.ts";
import { installShim } from "./runtime/shim_library.ts";
import { ShimError } from "../init/shim/ffi.ts";
import { selfCommand } from "./runtime/self_exec.ts";
import { Launcher } from "./runtime/launcher.ts";
import { Reaper } from "./runtime/reaper.ts";
import { detectCgroups } from "./cgroups/detect.ts";
import { removeCgroupDirs } from "./cgroups/remove.ts";
import { JobManager } from "./jobs/manager.ts";
import { readServerTlsFiles } from "./tls/server_credentials.ts";
import { startServer } from "./api/server.ts";
import { startMetrics } from "./metrics/operations.ts";

/** clone3 with a pidfd needs Linux 5.3, close_range(CLOSE_RANGE_CLOEXEC) 5.11. */
const MIN_KERNEL: [number, number] = [5, 11];

function checkKernel(): void {
  const [major = 0, minor = 0] = Deno.osRelease().split(".").map((n) => parseInt(n, 10));
  if (major < MIN_KERNEL[0] || (major === MIN_KERNEL[0] && minor < MIN_KERNEL[1])) {
    throw new Error(
      `Linux ${MIN_KERNEL.join(".")} or newer is needed, this is ${Deno.osRelease()}`,
    );
  }
}

/** A short stable name for this state directory, so two workers never share job cgroups. */
async function instanceName(stateDir: string): Promise<string> {
  const bytes = new TextEncoder().encode(await Deno.realPath(stateDir));
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest.slice(0, 4), (b) => b.toString(16).padStart(2, "0")).join("");
}

export async function runServe(args: string[]): Promise<number> {
  let config;
  try {
    config = loadConfig(args);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    console.error(`jobworker serve: ${e.message}`);
    return 2;
  }
  if (config === "help") {
    console.log(SERVE_HELP);
    return 0;
  }
  setLogLevel(config.logLevel);
  setLogFormat(config.logFormat);
  if (Deno.uid() !== 0) {
    console.error("jobworker serve: must run as root (it creates namespaces and cgroups)");
    return 1;
  }
  try {
    return await serve(config);
  } catch (e) {
    log.error("cannot start", { error: e instanceof Error ? e.message : String(e) });
    return 1;
  }
}

async function serve(config: Exclude<ReturnType<typeof loadConfig>, "help">): Promise<number> {
  // Listen for the stop signals first: one that arrives while starting up is then handled once
  // the server is up, instead of killing the process half set up.
  const { promise: stopSignal, resolve } = Promise.withResolvers<string>();
  const signals = ["SIGTERM", "SIGINT"] as const;
  const handlers = [
    ...signals.map((s) => [s, () => resolve(s)] as const),
    // A hang-up (a closed terminal, a stray `kill -HUP`) must not take every job down with it.
    ["SIGHUP", () => log.info("SIGHUP ignored; SIGTERM or SIGINT stops the worker")] as const,
  ];
  for (const [s, h] of handlers) Deno.addSignalListener(s, h);
  checkKernel();
  await Deno.mkdir(config.stateDir, { recursive: true, mode: 0o700 });
  // Root runs a library from here in every job: nobody else may write it.
  await Deno.chmod(config.stateDir, 0o700);
  const tls = await readServerTlsFiles(config.certPath);
  const shim = await installShim(config.stateDir);
  try {
    shim.lockFile(`${config.stateDir}/lock`);
  } catch (e) {
    if (e instanceof ShimError && e.errno === 11) {
      throw new Error(`another worker is using the state directory ${config.stateDir}`);
    }
    throw e;
  }
  // Output of a previous run's jobs: those jobs ended with that run and are not known any more.
  await Deno.remove(`${config.stateDir}/jobs`, { recursive: true }).catch(() => {});
  const reaper = new Reaper(shim);
  reaper.start();
  const cgroups = detectCgroups({
    instance: await instanceName(config.stateDir),
    ...(config.cgroupBase !== undefined ? { base: config.cgroupBase } : {}),
    ...(config.ioDevices !== undefined ? { ioDevices: config.ioDevices } : {}),
  });
  log.info("cgroups", { layout: cgroups.describe() });
  const stale = await cgroups.cleanupStale().catch((e: unknown) => {
    log.warn("cannot clean up job cgroups of a previous run", { error: String(e) });
    return 0;
  });
  if (stale > 0) log.info("removed job cgroups of a previous run", { count: stale });
  const metrics = await startMetrics(config.metricsAddr);
  const manager = new JobManager(new Launcher(shim, selfCommand()), reaper, cgroups, {
    stateDir: config.stateDir,
    stopGraceSeconds: config.stopGraceSeconds,
    maxRunningJobs: config.maxRunningJobs,
    maxEndedJobs: config.maxEndedJobs,
    maxOutputBytes: config.maxOutputBytes,
    events: metrics.jobEvents,
  });
  metrics.watch(manager);
  const { server, port, health } = await startServer(config, tls, manager, metrics.rpcObservers);
  const host = config.address.slice(0, config.address.lastIndexOf(":"));
  log.info("listening", { address: `${host}:${port}`, port, stateDir: config.stateDir });

  const signal = await stopSignal;
  log.info("shutting down", { signal, cleanupTimeout: config.cleanupTimeoutSeconds });
  health.drain();
  // No new calls from here on; streams of running jobs end as their jobs end.
  const drained = new Promise<void>((done) => server.tryShutdown(() => done()));
  await manager.shutdown(config.cleanupTimeoutSeconds);
  // The parent cgroups of this worker's jobs are empty now; leave nothing behind.
  await removeCgroupDirs(cgroups.parentDirs).catch((e: unknown) =>
    log.warn("cannot remove the job parent cgroups", { error: String(e) })
  );
  await Promise.race([drained, new Promise((done) => setTimeout(done, 5000))]);
  server.forceShutdown();
  reaper.stop();
  await metrics.stop();
  for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
  log.info("stopped");
  return 0;
}
