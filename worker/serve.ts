/**
 * `jobworker serve`: wires configuration, the shim, cgroups, the job manager and the gRPC server,
 * and shuts everything down gracefully on SIGTERM or SIGINT (every job stopped, exit 0).
 */
import { checkIoDevices, ConfigError, loadConfig, SERVE_HELP } from "./config.ts";
import { log, setLogFormat, setLogLevel } from "./log/logger.ts";
import {
  checkEmbedded,
  installMinimalInit,
  installShim,
  installStarter,
} from "./runtime/shim_library.ts";
import { ShimError } from "../init/shim/ffi.ts";
import { programPaths, selfCommand } from "./runtime/self_exec.ts";
import { Launcher, type WorkerPaths } from "./runtime/launcher.ts";
import { InitPool } from "./runtime/init_pool.ts";
import { PoolCgroups } from "./runtime/pool_cgroups.ts";
import { resolveUser } from "./runtime/users.ts";
import { RevocationList } from "./auth/revocation.ts";
import { Reaper } from "./runtime/reaper.ts";
import { detectCgroups } from "./cgroups/detect.ts";
import { shimFileBatch } from "./cgroups/file_batch.ts";
import type { CgroupManager } from "./cgroups/types.ts";
import { removeCgroupDirs } from "./cgroups/remove.ts";
import { instanceName } from "./cgroups/paths.ts";
import { JobManager } from "./jobs/manager.ts";
import { readServerTlsFiles } from "./tls/server_credentials.ts";
import { startServer } from "./api/server.ts";
import { SqliteStore, StoreOpenError } from "./store/sqlite.ts";
import { recover } from "./jobs/recovery.ts";
import { unsavedJob } from "./jobs/handover.ts";
import { adoptedProcess } from "./runtime/reexec.ts";
import { OutputPump } from "./runtime/output_pump.ts";
import { ControlSignals, serveUntilStopped, takeHandover } from "./runtime/reload.ts";
import { ISOLATION } from "./runtime/isolation.ts";
import { VERSION } from "./version.ts";
import { startMetrics } from "./metrics/operations.ts";
import { retryMs, SessionRecycler } from "./tls/session_recycle.ts";
import { reportStrandedTo } from "./api/http2_unsent.ts";
import { checkInternals } from "./tls/internals.ts";
import { warmUpTlsCrypto } from "./tls/warm_up.ts";

/**
 * Exit status when the state cannot be used as it is (a damaged database, a state directory
 * that cannot be written): restarting will not help, so a service manager should not
 * (systemd: RestartPreventExitStatus=78). 78 is EX_CONFIG of sysexits.h.
 */
export const EXIT_STATE_UNUSABLE = 78;
/** A setting that is wrong (malformed, or an IO device that is a partition): fix it, then start. */
export const EXIT_BAD_SETTING = 2;

/** How often the retention limits are applied besides at every job's end. */
const RETENTION_INTERVAL_MS = 60_000;

/**
 * clone3 with a pidfd needs Linux 5.3, close_range(CLOSE_RANGE_CLOEXEC) 5.11, mount_setattr (the
 * jobs' read-only /sys and program) 5.12.
 */
const MIN_KERNEL: [number, number] = [5, 12];

function checkKernel(): void {
  const [major = 0, minor = 0] = Deno.osRelease().split(".").map((n) => parseInt(n, 10));
  if (major < MIN_KERNEL[0] || (major === MIN_KERNEL[0] && minor < MIN_KERNEL[1])) {
    throw new Error(
      `Linux ${MIN_KERNEL.join(".")} or newer is needed, this is ${Deno.osRelease()}`,
    );
  }
}

/** Absolute, with symlinks resolved when the path exists (a mask must cover the real place). */
async function realOrAbsolute(path: string): Promise<string> {
  try {
    return await Deno.realPath(path);
  } catch {
    return path.startsWith("/") ? path : `${Deno.cwd()}/${path}`;
  }
}

/** The worker's own paths as every job's profile sees them (see init/profile.ts). */
async function workerPaths(
  config: Exclude<ReturnType<typeof loadConfig>, "help">,
  minimalInit: string,
): Promise<WorkerPaths> {
  const all = (paths: string[]) => Promise.all(paths.map(realOrAbsolute));
  const maskPaths = (await all([config.stateDir, config.certPath, ...config.maskPaths]))
    .filter((p) => p !== "/");
  return { maskPaths, readonlyPaths: await all(programPaths()), minimalInit };
}

export async function runServe(args: string[]): Promise<number> {
  const check = args.includes("--check");
  let config;
  try {
    config = loadConfig(args.filter((a) => a !== "--check"));
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    console.error(`jobworker serve: ${e.message}`);
    return EXIT_BAD_SETTING;
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
  if (check) return await checkOnly(config);
  try {
    return await serve(config);
  } catch (e) {
    log.error("cannot start", { error: e instanceof Error ? e.message : String(e) });
    // A setting found wrong against the host (an IO device that is a partition) is exit 2 like a
    // malformed one: restarting will not mend it (the unit's RestartPreventExitStatus).
    return e instanceof StateError
      ? EXIT_STATE_UNUSABLE
      : e instanceof ConfigError
      ? EXIT_BAD_SETTING
      : 1;
  }
}

type Config = Exclude<ReturnType<typeof loadConfig>, "help">;

/**
 * `serve --check`: what a reload runs first with the program as it is on disk now. Loads the
 * configuration, the certificates, the default user and the revocation list, checks the job
 * database can be read and the program carries its C files, then exits 0; 2 for a setting that
 * is wrong (malformed, or an IO device that is a partition), 1 for anything else.
 */
async function checkOnly(config: Config): Promise<number> {
  try {
    checkIoDevices(config);
    await readServerTlsFiles(config.certPath);
    readUserAndRevocations(config);
    SqliteStore.check(`${config.stateDir}/jobs.db`);
    await checkEmbedded(config.directStart);
    return 0;
  } catch (e) {
    console.error(`jobworker serve --check: ${e instanceof Error ? e.message : e}`);
    return e instanceof ConfigError ? EXIT_BAD_SETTING : 1;
  }
}

/**
 * What the start reads from files other than the certificates and the database: the default
 * user (from /etc/passwd and /etc/group) and the revocation list. Shared with `serve --check`:
 * a file gone bad since the start (the list removed or mangled, the user deleted) must make a
 * reload refused, not the new process fail to start and take the running jobs with it.
 */
function readUserAndRevocations(config: Config): RevocationList | undefined {
  try {
    resolveUser(config.defaultUser);
  } catch (e) {
    throw new Error(`JOB_WORKER_DEFAULT_USER: ${(e as Error).message}`);
  }
  return config.revokedFile ? new RevocationList(config.revokedFile) : undefined;
}

async function serve(config: Config): Promise<number> {
  const handover = takeHandover();
  const startTime = handover ? new Date(handover.startTime) : new Date();
  // Listen for the signals first: one that arrives while starting up is then handled once the
  // server is up, instead of killing the process half set up.
  const signals = new ControlSignals();
  // On another thread while the worker starts, so the first client's handshake does not pay it.
  warmUpTlsCrypto();
  checkKernel();
  checkIoDevices(config);
  await prepareStateDir(config.stateDir);
  const tls = await readServerTlsFiles(config.certPath);
  const revoked = readUserAndRevocations(config);
  const shim = await installShim(config.stateDir);
  const paths = await workerPaths(config, await installMinimalInit(config.stateDir));
  const starter = config.directStart ? await installStarter(config.stateDir) : undefined;
  try {
    shim.lockFile(`${config.stateDir}/lock`);
  } catch (e) {
    if (e instanceof ShimError && e.errno === 11) {
      throw new Error(`another worker is using the state directory ${config.stateDir}`);
    }
    throw e;
  }
  let store: SqliteStore;
  try {
    store = SqliteStore.open(`${config.stateDir}/jobs.db`);
  } catch (e) {
    if (e instanceof StoreOpenError) {
      // SQLite creates the database's -wal and -shm files at the open (they are gone after a
      // clean stop): on a full disk that fails like a damaged database would. Not exit 78, and
      // not "move it aside": the operator would throw away a sound history.
      if (await diskIsFull(config.stateDir)) {
        throw new Error(
          `cannot open the job database ${config.stateDir}/jobs.db: the disk is full ` +
            `(SQLite: ${
              e.cause instanceof Error ? e.cause.message : String(e.cause)
            }). Free space on the state directory's filesystem and start again`,
        );
      }
      throw new StateError(e.message);
    }
    throw e;
  }
  if (!handover) {
    // Left by a reload whose new process never started: its jobs died with the old process.
    await Deno.remove(`${config.stateDir}/handover.json`).catch(() => {});
  }
  const handedIds = new Set(handover?.jobs.map((j) => j.id) ?? []);
  // Ended before the reload, their end not in the database yet (a full disk): written from here.
  const handedUnsaved = (handover?.unsaved ?? []).map(unsavedJob);
  const recovered = await recover(
    store,
    config.stateDir,
    new Date(),
    new Set([...handedIds, ...handedUnsaved.map((job) => job.id)]),
  );
  const reaper = new Reaper(shim);
  reaper.start();
  // Reads every job's output pipes, launched here or handed over by a reload.
  const pump = new OutputPump(shim);
  // Cgroup files, and each job's output directory and file, are made off the event loop in batches.
  const files = shimFileBatch(shim);
  const cgroups = detectCgroups({
    instance: await instanceName(config.stateDir),
    files,
    ...(config.cgroupBase !== undefined ? { base: config.cgroupBase } : {}),
    ...(config.ioDevices !== undefined ? { ioDevices: config.ioDevices } : {}),
  });
  log.info("cgroups", { layout: cgroups.describe() });
  const stale = await cgroups.cleanupStale(handedIds).catch((e: unknown) => {
    log.warn("cannot clean up job cgroups of a previous run", { error: String(e) });
    return 0;
  });
  if (stale > 0) log.info("removed job cgroups of a previous run", { count: stale });
  const metrics = await startMetrics(config.metricsAddr);
  const self = selfCommand();
  const pool = new InitPool(
    shim,
    self,
    reaper,
    config.initPool,
    metrics.poolEvents,
    config.initSlots ? cgroups.slots : undefined,
  );
  metrics.watchPool(pool);
  const manager = new JobManager(
    new Launcher(shim, pump, self, paths, reaper, pool, starter),
    reaper,
    new PoolCgroups(cgroups, pool),
    store,
    {
      stateDir: config.stateDir,
      stopGraceSeconds: config.stopGraceSeconds,
      maxRunningJobs: config.maxRunningJobs,
      maxStarting: config.maxStarting,
      maxEndedJobs: config.maxEndedJobs,
      retentionMs: config.retentionMs,
      maxOutputBytes: config.maxOutputBytes,
      events: metrics.jobEvents,
      files,
    },
  );
  metrics.watch(manager);
  // Interrupted jobs whose FAILED state the database could not take (a full disk): kept and
  // written again like any final state that could not be written.
  manager.keepUnsaved([...recovered.unsaved, ...handedUnsaved]);
  let jobsKept = 0;
  for (const job of handover?.jobs ?? []) {
    const kept = manager.adopt(
      job,
      (sinks) => adoptedProcess(job, sinks, shim, pump),
    );
    if (kept) jobsKept++;
  }
  const facts = {
    version: VERSION,
    startTime,
    reloadTime: handover ? new Date(handover.reloadTime) : undefined,
    cgroupVersion: cgroups.version,
    limits: ["cpu", "memory", ...(cgroups.ioDevices.length > 0 ? ["io"] : []), "pids"],
    isolation: ISOLATION,
    maxRunningJobs: config.maxRunningJobs,
  };
  if (handover && /:0$/.test(config.address)) {
    // An ephemeral port stays the same across reloads, so clients find the worker again.
    config = { ...config, address: config.address.replace(/:0$/, `:${handover.port}`) };
  }
  const recycler = new SessionRecycler(
    config.recycleAfterSessions,
    () => signals.requestReload("recycle"),
    retryMs((n) => Deno.env.get(n)),
    {
      soft: config.recycleAtNativeMiB * 1024 * 1024,
      hard: config.recycleForceAtNativeMiB * 1024 * 1024,
    },
  );
  reportStrandedTo(recycler);
  metrics.watchSessions(recycler);
  const listen = async (again = false) => {
    await testOnlyListenDelay();
    const running = await startServer(
      config,
      tls,
      manager,
      facts,
      revoked,
      metrics.rpcObservers,
      again,
    );
    checkInternals(running.server);
    recycler.attach(running.server);
    return running;
  };
  let { server, port, health } = await listen();
  const host = config.address.slice(0, config.address.lastIndexOf(":"));
  startPool(pool, cgroups);
  manager.applyRetention();
  const retentionTimer = setInterval(() => manager.applyRetention(), RETENTION_INTERVAL_MS);
  log.info("listening", {
    address: `${host}:${port}`,
    port,
    stateDir: config.stateDir,
    jobsInterrupted: recovered.failed.length,
    ...(handover
      ? {
        reloaded: true,
        jobsKept,
        notListeningMs: Date.now() - new Date(handover.reloadTime).getTime(),
      }
      : {}),
  });

  // After start (a first start or a reload): everything is up and serving from here on.
  let failure: unknown;
  const signal: string | undefined = await serveUntilStopped({
    stateDir: config.stateDir,
    startTime,
    jobs: manager,
    parking: shim,
    signals,
    port: () => port,
    stopServing: () => server.forceShutdown(),
    // Waiting inits are not handed over: the new process fills its own pool.
    beforeExec: () => pool.drain(),
    // A recycle (and only a recycle: never a SIGHUP) is called off if a client connected.
    lastCheck: () => {
      if (signals.recycleOnly) recycler.checkStillIdle();
    },
    afterNoReload: () => {
      startPool(pool, cgroups);
      recycler.notRecycled();
    },
    serveAgain: async () => {
      ({ server, port, health } = await listen(true));
      log.info("listening", { address: `${host}:${port}`, port, stateDir: config.stateDir });
    },
  }).catch((error: unknown) => {
    // Serving cannot go on (a reload's exec failed, then listening again failed too): shut down
    // as for a signal, so no waiting init, job or cgroup of this worker outlives it.
    failure = error;
    log.error("cannot serve any more: shutting down", { error: String(error) });
    return undefined;
  });
  // Streams cut and clients gone in this shutdown are not a reason to recycle (nor to warn).
  reportStrandedTo(undefined);
  recycler.stop();
  log.info("shutting down", {
    ...(signal === undefined ? { reason: "serving failed" } : { signal }),
    cleanupTimeout: config.cleanupTimeoutSeconds,
  });
  health.drain();
  // No new calls from here on; streams of running jobs end as their jobs end.
  const drained = new Promise<void>((done) => server.tryShutdown(() => done()));
  clearInterval(retentionTimer);
  await pool.drain();
  await manager.shutdown(config.cleanupTimeoutSeconds);
  store.close();
  // The parent cgroups of this worker's jobs are empty now; leave nothing behind.
  await removeCgroupDirs(cgroups.parentDirs).catch((e: unknown) =>
    log.warn("cannot remove the job parent cgroups", { error: String(e) })
  );
  await Promise.race([drained, new Promise((done) => setTimeout(done, 5000))]);
  server.forceShutdown();
  reaper.stop();
  await metrics.stop();
  signals.close();
  log.info(failure === undefined ? "stopped" : "stopped after serving failed");
  return failure === undefined ? 0 : 1;
}

/** Fills the init pool once the cgroups can take processes beside the worker; else leaves it off. */
function startPool(pool: InitPool, cgroups: CgroupManager): void {
  if (pool.size === 0) return;
  try {
    cgroups.prepare?.();
  } catch (e) {
    log.warn("the init pool stays empty: the cgroups are not ready for it", {
      error: e instanceof Error ? e.message : String(e),
    });
    return;
  }
  pool.start();
  log.info("init pool filling", { size: pool.size });
}

/** The state cannot be used as it is; restarting will not help. */
class StateError extends Error {}

/** The write failed for want of space (ENOSPC) or quota (EDQUOT), not because it is not allowed. */
function isDiskFull(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return code === "ENOSPC" || code === "EDQUOT";
}

/**
 * True when the state directory's filesystem has no room for what opening the job database
 * writes (its -shm file is 32 KiB): a probe of that size cannot be written for want of space.
 */
async function diskIsFull(dir: string): Promise<boolean> {
  const probe = `${dir}/.space-check`;
  try {
    await Deno.writeFile(probe, new Uint8Array(64 * 1024));
    return false;
  } catch (e) {
    return isDiskFull(e);
  } finally {
    await Deno.remove(probe).catch(() => {});
  }
}

/** Makes the state directory if needed and checks that the worker can write it. */
async function prepareStateDir(dir: string): Promise<void> {
  try {
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    // Root runs a library from here in every job: nobody else may write it.
    await Deno.chmod(dir, 0o700);
    const probe = `${dir}/.write-check`;
    try {
      await Deno.writeTextFile(probe, "ok");
    } catch (e) {
      // A full disk is no reason to stay down (nor for exit 78, after which systemd would not
      // start the worker again once space is freed): the worker serves what it has, refuses
      // creates (RESOURCE_EXHAUSTED) and writes what it could not once there is room again.
      if (!isDiskFull(e)) throw e;
      log.warn(
        "the state directory's filesystem is full: jobs cannot be created until space is freed",
        {
          stateDir: dir,
          error: e instanceof Error ? e.message : String(e),
        },
      );
    }
    await Deno.remove(probe).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    });
  } catch (e) {
    throw new StateError(
      `the state directory ${dir} cannot be used: ${e instanceof Error ? e.message : e}. ` +
        `It must be a writable directory on a writable filesystem (JOB_WORKER_STATE_DIR)`,
    );
  }
}

/**
 * TEST ONLY (tests/cli_reload_test.ts), never set in a deployment: when the environment variable
 * JOB_WORKER_TEST_LISTEN_DELAY_FILE names a file that exists, wait the milliseconds it holds before
 * listening, as a loaded host can hold a reloading worker back, longer than a client's retries.
 * A file, not a number, so that a test can make one reload of a running worker slow.
 */
async function testOnlyListenDelay(): Promise<void> {
  const file = Deno.env.get("JOB_WORKER_TEST_LISTEN_DELAY_FILE");
  if (!file) return;
  const ms = await Deno.readTextFile(file).then(Number, () => 0);
  if (ms > 0) await new Promise((resolve) => setTimeout(resolve, ms));
}
