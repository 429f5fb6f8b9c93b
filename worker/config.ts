/**
 * The worker's configuration: the only module that reads the environment and `serve`'s flags.
 * Flags override environment variables, which override the defaults.
 */
import { parseArgs } from "node:util";
import { isLogFormat, isLogLevel, type LogFormat, type LogLevel } from "./log/logger.ts";
import { wholeDisk } from "./cgroups/io_devices.ts";

export interface WorkerConfig {
  /** host:port to listen on. */
  address: string;
  /** Directory holding ca-cert.pem, server-cert.pem, server-key.pem. */
  certPath: string;
  /** Where job output and the installed shim live. */
  stateDir: string;
  logLevel: LogLevel;
  logFormat: LogFormat;
  /** host:port of the plain-HTTP Prometheus endpoint; undefined: no metrics. */
  metricsAddr: string | undefined;
  maxRecvMsgSize: number;
  maxSendMsgSize: number;
  maxHeaderListSize: number;
  /** Seconds jobs get to end after SIGTERM when the worker shuts down. */
  cleanupTimeoutSeconds: number;
  /** Default StopJob grace period, seconds. */
  stopGraceSeconds: number;
  /** Most jobs running at once; CreateJob answers RESOURCE_EXHAUSTED beyond it. */
  maxRunningJobs: number;
  /** Most jobs starting at once (until their command exec'd); further creates wait their turn. */
  maxStarting: number;
  /** `init` processes kept started ahead of demand (0: every job clones its own). */
  initPool: number;
  /** cgroup v1: each waiting init waits in a cgroup of its own, renamed to its job's at a claim. */
  initSlots: boolean;
  /** Without a waiting init, jobs start through jwstart, which takes init's steps (no Deno start). */
  directStart: boolean;
  /** Ended jobs kept with their output; the oldest are forgotten beyond it. */
  maxEndedJobs: number;
  /** Ended jobs are forgotten this many milliseconds after they ended; 0 = no age limit. */
  retentionMs: number;
  /** Most GetJobsStream calls at once (each may hold a few MiB for a slow client). */
  maxStreams: number;
  /** Most GetJobsStream calls at once of one client identity (certificate CN). */
  maxStreamsPerClient: number;
  /** Most connections at once, in total and from one IP address. */
  maxConnections: number;
  maxConnectionsPerPeer: number;
  /**
   * HTTP/2 sessions served before the worker recycles itself in place when idle; 0 = never when
   * idle (the sessions still count toward recycleForceAtNativeMiB).
   */
  recycleAfterSessions: number;
  /**
   * MiB of native memory Deno 2.8.3 never frees for the unsent output of streams that ended early
   * (estimated as 2x those bytes) past which the worker recycles itself when idle; 0 = never.
   */
  recycleAtNativeMiB: number;
  /**
   * MiB of that memory and of the sessions served (18 KiB each) past which the worker recycles
   * even with clients connected; 0 = never.
   */
  recycleForceAtNativeMiB: number;
  /** Seconds a client gets to complete its TLS handshake. */
  handshakeTimeoutSeconds: number;
  /** Seconds a connection with no call in progress is kept. */
  idleTimeoutSeconds: number;
  /** Seconds between HTTP/2 pings to a client, and how long its answer may take. */
  keepaliveSeconds: number;
  keepaliveTimeoutSeconds: number;
  /** Most output bytes stored per job; 0 = no limit. */
  maxOutputBytes: number;
  defaults: { cpuPercent: number; memoryMiB: number; ioBps: number; pids: number };
  /** JOB_WORKER_CGROUP_BASE, when set. */
  cgroupBase: string | undefined;
  /** JOB_WORKER_IO_DEVICES ("major:minor" list), when set; see checkIoDevices. */
  ioDevices: string[] | undefined;
  /** How the IO devices were set (the variable or the flag), for checkIoDevices' messages. */
  ioDevicesSetting: string;
  /** Who jobs run as when they do not say ("root", a name, "uid[:gid]"). */
  defaultUser: string;
  /** Whether CreateJob may ask for `privileged: true`. */
  allowPrivileged: boolean;
  /** More paths to cover inside jobs, beside the state and certificate directories. */
  maskPaths: string[];
  /** File of revoked certificate serials (hex, one a line), when set. */
  revokedFile: string | undefined;
  /** "own": a viewer sees only its own jobs, without env values. */
  viewersSee: "all" | "own";
}

export const SERVE_HELP = `Usage: jobworker serve [options]

Runs the job worker: a gRPC server over mutual TLS 1.3 that runs jobs isolated in namespaces and
cgroups. Every option can also be given by the environment variable shown.

Options:
  --addr HOST:PORT        listen address            JOB_WORKER_ADDR (127.0.0.1:50051)
  --cert-path DIR         ca-cert.pem, server-cert.pem, server-key.pem
                                                    JOB_WORKER_CERT_PATH (./certs)
  --state-dir DIR         job output, runtime files JOB_WORKER_STATE_DIR (/var/lib/jobworker)
  --log-level LEVEL       debug|info|warn|error     LOG_LEVEL (info)
  --log-format FORMAT     text|logfmt|json          LOG_FORMAT (logfmt)
  --metrics-addr HOST:PORT Prometheus /metrics over plain HTTP, off when empty
                                                    JOB_WORKER_METRICS_ADDR ()
  --max-recv-msg-size N   bytes                     MAX_RECV_MSG_SIZE (4194304)
  --max-send-msg-size N   bytes, >= 65536           MAX_SEND_MSG_SIZE (4194304)
  --max-header-list-size N bytes                    MAX_HEADER_LIST_SIZE (16384)
  --cleanup-timeout S     grace for jobs at shutdown CLEANUP_TIMEOUT (10)
  --stop-grace S          default StopJob grace     JOB_WORKER_STOP_GRACE (10)
  --max-jobs N            most running jobs         JOB_WORKER_MAX_JOBS (1000)
  --max-starting N        jobs starting at once     JOB_WORKER_MAX_STARTING (2 per CPU, >= 2)
  --init-pool N           inits started ahead of jobs JOB_WORKER_INIT_POOL (0: off)
                          (each waiting init costs about 20 MiB of memory)
  --init-slots 0|1        cgroup v1: waiting inits wait in cgroups renamed to their job's
                                                    JOB_WORKER_INIT_SLOTS (1)
  --direct-start 0|1      start jobs through jwstart (a small C program), not jobworker init
                                                    JOB_WORKER_DIRECT_START (1)
  --max-ended-jobs N      ended jobs kept           JOB_WORKER_MAX_ENDED_JOBS (1000)
  --retention AGE         ended jobs kept this long JOB_WORKER_RETENTION (7d; 0 = no limit)
                          (a number with s, m, h or d; both limits apply)
  --max-streams N         output streams at once    JOB_WORKER_MAX_STREAMS (512)
  --max-streams-per-client N  streams of one client JOB_WORKER_MAX_STREAMS_PER_CLIENT (64)
  --max-connections N     connections at once       JOB_WORKER_MAX_CONNECTIONS (4096)
  --max-connections-per-peer N  from one address    JOB_WORKER_MAX_CONNECTIONS_PER_PEER (512)
  --recycle-after-sessions N  after N HTTP/2 sessions JOB_WORKER_RECYCLE_AFTER_SESSIONS (10000; 0 = never
                          when idle: they still count toward --recycle-force-native-mib)
                          (reload in place once no client is connected: Deno 2.8.3 keeps
                          about 18 KiB of every session until the process image is replaced)
  --recycle-at-native-mib N  or past N MiB stranded JOB_WORKER_RECYCLE_AT_NATIVE_MIB (256; 0 = never)
                          (the unsent output of streams cancelled or cut off, which Deno 2.8.3
                          never frees; estimated as 2x the stranded bytes, measured 1.2-3x;
                          sessions do not count toward it)
  --recycle-force-native-mib N  past N MiB of that and of the sessions' 18 KiB each, recycle
                          even with clients connected (their calls are cut)
                          JOB_WORKER_RECYCLE_FORCE_NATIVE_MIB (1024; 0 = never; at least
                          --recycle-at-native-mib)
  --handshake-timeout S   TLS handshake deadline    JOB_WORKER_HANDSHAKE_TIMEOUT (5)
  --idle-timeout S        close idle connections    JOB_WORKER_IDLE_TIMEOUT (300)
  --keepalive S           ping clients this often   JOB_WORKER_KEEPALIVE (60)
  --keepalive-timeout S   drop if no ping answer    JOB_WORKER_KEEPALIVE_TIMEOUT (20)
  --max-output-bytes N    output kept per job       JOB_WORKER_MAX_OUTPUT_BYTES (1073741824)
  --default-cpu PCT       default maxCPU            JOB_WORKER_DEFAULT_CPU (100)
  --default-memory MIB    default maxMemory         JOB_WORKER_DEFAULT_MEMORY (512)
  --default-io BPS        default maxIOBPS          JOB_WORKER_DEFAULT_IO (0 = unlimited)
  --default-pids N        default maxPids           JOB_WORKER_DEFAULT_PIDS (1024)
  --cgroup-base PATH      parent cgroup for jobs    JOB_WORKER_CGROUP_BASE (the worker's own)
  --io-devices LIST       MAJ:MIN,... for IO limits JOB_WORKER_IO_DEVICES (detected)
  --default-user USER     jobs' user by default     JOB_WORKER_DEFAULT_USER (root)
  --allow-privileged 0|1  allow privileged jobs     JOB_WORKER_ALLOW_PRIVILEGED (0)
  --mask PATHS            more paths hidden from jobs (comma-separated)
                                                    JOB_WORKER_MASK (none)
  --revoked FILE          revoked certificate serials, hex, one a line
                                                    JOB_WORKER_REVOKED (none)
  --viewers-see all|own   jobs a viewer sees        JOB_WORKER_VIEWERS_SEE (all)
  -h, --help              show this help
`;

/**
 * A configuration value of the wrong form; the message names it. Exit status 2, which the unit
 * does not restart: only for what no retry can mend. What depends on the host's state (a device
 * that may appear later at boot, a user, a file) throws a plain Error instead: exit 1.
 */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

const FLAGS = {
  "addr": { env: "JOB_WORKER_ADDR", fallback: "127.0.0.1:50051" },
  "cert-path": { env: "JOB_WORKER_CERT_PATH", fallback: "certs" },
  "state-dir": { env: "JOB_WORKER_STATE_DIR", fallback: "/var/lib/jobworker" },
  "log-level": { env: "LOG_LEVEL", fallback: "info" },
  "log-format": { env: "LOG_FORMAT", fallback: "logfmt" },
  "metrics-addr": { env: "JOB_WORKER_METRICS_ADDR", fallback: "" },
  "max-recv-msg-size": { env: "MAX_RECV_MSG_SIZE", fallback: "4194304" },
  "max-send-msg-size": { env: "MAX_SEND_MSG_SIZE", fallback: "4194304" },
  "max-header-list-size": { env: "MAX_HEADER_LIST_SIZE", fallback: "16384" },
  "cleanup-timeout": { env: "CLEANUP_TIMEOUT", fallback: "10" },
  "stop-grace": { env: "JOB_WORKER_STOP_GRACE", fallback: "10" },
  "max-jobs": { env: "JOB_WORKER_MAX_JOBS", fallback: "1000" },
  "max-starting": {
    env: "JOB_WORKER_MAX_STARTING",
    fallback: String(Math.max(2, 2 * (navigator.hardwareConcurrency || 1))),
  },
  "init-pool": { env: "JOB_WORKER_INIT_POOL", fallback: "0" },
  "init-slots": { env: "JOB_WORKER_INIT_SLOTS", fallback: "1" },
  "direct-start": { env: "JOB_WORKER_DIRECT_START", fallback: "1" },
  "max-ended-jobs": { env: "JOB_WORKER_MAX_ENDED_JOBS", fallback: "1000" },
  "retention": { env: "JOB_WORKER_RETENTION", fallback: "7d" },
  "max-streams": { env: "JOB_WORKER_MAX_STREAMS", fallback: "512" },
  "max-streams-per-client": { env: "JOB_WORKER_MAX_STREAMS_PER_CLIENT", fallback: "64" },
  "max-connections": { env: "JOB_WORKER_MAX_CONNECTIONS", fallback: "4096" },
  "max-connections-per-peer": { env: "JOB_WORKER_MAX_CONNECTIONS_PER_PEER", fallback: "512" },
  "recycle-after-sessions": { env: "JOB_WORKER_RECYCLE_AFTER_SESSIONS", fallback: "10000" },
  "recycle-at-native-mib": { env: "JOB_WORKER_RECYCLE_AT_NATIVE_MIB", fallback: "256" },
  "recycle-force-native-mib": {
    env: "JOB_WORKER_RECYCLE_FORCE_NATIVE_MIB",
    fallback: "1024",
  },
  "handshake-timeout": { env: "JOB_WORKER_HANDSHAKE_TIMEOUT", fallback: "5" },
  "idle-timeout": { env: "JOB_WORKER_IDLE_TIMEOUT", fallback: "300" },
  "keepalive": { env: "JOB_WORKER_KEEPALIVE", fallback: "60" },
  "keepalive-timeout": { env: "JOB_WORKER_KEEPALIVE_TIMEOUT", fallback: "20" },
  "max-output-bytes": { env: "JOB_WORKER_MAX_OUTPUT_BYTES", fallback: "1073741824" },
  "default-cpu": { env: "JOB_WORKER_DEFAULT_CPU", fallback: "100" },
  "default-memory": { env: "JOB_WORKER_DEFAULT_MEMORY", fallback: "512" },
  "default-io": { env: "JOB_WORKER_DEFAULT_IO", fallback: "0" },
  "default-pids": { env: "JOB_WORKER_DEFAULT_PIDS", fallback: "1024" },
  "cgroup-base": { env: "JOB_WORKER_CGROUP_BASE", fallback: "" },
  "io-devices": { env: "JOB_WORKER_IO_DEVICES", fallback: "" },
  "default-user": { env: "JOB_WORKER_DEFAULT_USER", fallback: "root" },
  "allow-privileged": { env: "JOB_WORKER_ALLOW_PRIVILEGED", fallback: "0" },
  "mask": { env: "JOB_WORKER_MASK", fallback: "" },
  "revoked": { env: "JOB_WORKER_REVOKED", fallback: "" },
  "viewers-see": { env: "JOB_WORKER_VIEWERS_SEE", fallback: "all" },
} as const;
type Flag = keyof typeof FLAGS;

function integer(name: string, text: string, min: number): number {
  const value = Number(text.trim());
  if (!/^\s*\d+\s*$/.test(text) || !Number.isSafeInteger(value) || value < min) {
    throw new ConfigError(`${name} must be an integer >= ${min}, got "${text}"`);
  }
  return value;
}

/** Waiting inits cost memory each (see README): a few are enough for the start path. */
const MAX_INIT_POOL = 256;

function poolSize([name, text]: [string, string]): number {
  const size = integer(name, text, 0);
  if (size > MAX_INIT_POOL) {
    throw new ConfigError(`${name} must be at most ${MAX_INIT_POOL}, got ${size}`);
  }
  return size;
}

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** "7d", "12h", "30m", "90s" (or "0") → milliseconds. */
export function parseDuration(name: string, text: string): number {
  const match = /^\s*(\d+)\s*([smhd]?)\s*$/.exec(text);
  const ms = match ? Number(match[1]) * (UNIT_MS[match[2] || "s"] ?? 1000) : NaN;
  if (!match || !Number.isSafeInteger(ms) || (match[2] === "" && match[1] !== "0")) {
    throw new ConfigError(
      `${name} must be a duration like 7d, 12h, 30m or 90s (0 = no limit), got "${text}"`,
    );
  }
  return ms;
}

/** Reads the configuration; returns "help" when --help was asked for. Throws ConfigError. */
export function loadConfig(
  args: string[],
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
): WorkerConfig | "help" {
  const options = Object.fromEntries(
    Object.keys(FLAGS).map((k) => [k, { type: "string" as const }]),
  );
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: { ...options, help: { type: "boolean", short: "h" } },
      strict: true,
      allowPositionals: false,
    });
  } catch (e) {
    throw new ConfigError(`${e instanceof Error ? e.message : e} (see jobworker serve --help)`);
  }
  if (parsed.values.help) return "help";
  const values = parsed.values as Record<string, string | boolean | undefined>;
  const get = (flag: Flag): [string, string] => {
    const { env: name, fallback } = FLAGS[flag];
    const fromFlag = values[flag];
    if (typeof fromFlag === "string") return [`--${flag}`, fromFlag];
    return [name, env(name) ?? fallback];
  };
  const num = (flag: Flag, min = 0) => integer(...get(flag), min);

  const [levelName, level] = get("log-level");
  const logLevel = level.toLowerCase();
  if (!isLogLevel(logLevel)) {
    throw new ConfigError(`${levelName} must be debug, info, warn or error, got "${level}"`);
  }
  const [formatName, format] = get("log-format");
  const logFormat = format.toLowerCase();
  if (!isLogFormat(logFormat)) {
    throw new ConfigError(`${formatName} must be text, logfmt or json, got "${format}"`);
  }
  const hostPort = (flag: Flag): string => {
    const [name, address] = get(flag);
    if (!/^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/.test(address)) {
      throw new ConfigError(`${name} must be HOST:PORT, got "${address}"`);
    }
    if (Number(address.slice(address.lastIndexOf(":") + 1)) > 65535) {
      throw new ConfigError(`${name}: the port must be 0..65535, got "${address}"`);
    }
    return address;
  };
  const address = hostPort("addr");
  const metricsAddr = get("metrics-addr")[1] === "" ? undefined : hostPort("metrics-addr");
  const cgroupBase = get("cgroup-base")[1];
  const [devName, devices] = get("io-devices");
  const ioDevices = devices ? devices.split(",").map((d) => d.trim()).filter(Boolean) : undefined;
  for (const d of ioDevices ?? []) {
    if (!/^\d+:\d+$/.test(d)) throw new ConfigError(`${devName}: "${d}" is not MAJOR:MINOR`);
  }
  const [privName, priv] = get("allow-privileged");
  if (priv !== "0" && priv !== "1") {
    throw new ConfigError(`${privName} must be 0 or 1, got "${priv}"`);
  }
  const [slotsName, slots] = get("init-slots");
  if (slots !== "0" && slots !== "1") {
    throw new ConfigError(`${slotsName} must be 0 or 1, got "${slots}"`);
  }
  const [directName, direct] = get("direct-start");
  if (direct !== "0" && direct !== "1") {
    throw new ConfigError(`${directName} must be 0 or 1, got "${direct}"`);
  }
  const [maskName, masks] = get("mask");
  const maskPaths = masks.split(",").map((p) => p.trim()).filter(Boolean);
  for (const p of maskPaths) {
    if (!p.startsWith("/") || p === "/") {
      throw new ConfigError(`${maskName}: "${p}" must be an absolute path other than /`);
    }
  }
  const [seeName, see] = get("viewers-see");
  if (see !== "all" && see !== "own") {
    throw new ConfigError(`${seeName} must be "all" or "own", got "${see}"`);
  }
  const [soft, hard] = [num("recycle-at-native-mib"), num("recycle-force-native-mib")];
  if (soft > 0 && hard > 0 && hard < soft) {
    // Name what the operator set as set, and a default as the default: with only the hard limit
    // set, the soft one's 256 is nothing they wrote.
    const said = (flag: Flag, value: number) => {
      const isDefault = typeof values[flag] !== "string" && env(FLAGS[flag].env) === undefined;
      return `${get(flag)[0]} (${value}${isDefault ? ", the default" : ""})`;
    };
    throw new ConfigError(
      `${said("recycle-force-native-mib", hard)} is below ` +
        `${said("recycle-at-native-mib", soft)}: the hard limit must be at least the soft one, ` +
        `or either 0 (never)`,
    );
  }
  const defaultUser = get("default-user")[1].trim() || "root";
  const revokedFile = get("revoked")[1];
  return {
    address,
    certPath: get("cert-path")[1],
    stateDir: get("state-dir")[1],
    logLevel,
    logFormat,
    metricsAddr,
    maxRecvMsgSize: num("max-recv-msg-size", 1024),
    maxSendMsgSize: num("max-send-msg-size", 65536),
    maxHeaderListSize: num("max-header-list-size", 1024),
    cleanupTimeoutSeconds: num("cleanup-timeout"),
    stopGraceSeconds: num("stop-grace"),
    maxRunningJobs: num("max-jobs", 1),
    maxStarting: num("max-starting", 1),
    initPool: poolSize(get("init-pool")),
    initSlots: slots === "1",
    directStart: direct === "1",
    maxEndedJobs: num("max-ended-jobs"),
    retentionMs: parseDuration(...get("retention")),
    maxStreams: num("max-streams", 1),
    maxStreamsPerClient: num("max-streams-per-client", 1),
    maxConnections: num("max-connections", 1),
    maxConnectionsPerPeer: num("max-connections-per-peer", 1),
    recycleAfterSessions: num("recycle-after-sessions"),
    recycleAtNativeMiB: soft,
    recycleForceAtNativeMiB: hard,
    handshakeTimeoutSeconds: num("handshake-timeout", 1),
    idleTimeoutSeconds: num("idle-timeout", 1),
    keepaliveSeconds: num("keepalive", 1),
    keepaliveTimeoutSeconds: num("keepalive-timeout", 1),
    maxOutputBytes: num("max-output-bytes"),
    defaults: {
      cpuPercent: num("default-cpu"),
      memoryMiB: num("default-memory"),
      ioBps: num("default-io"),
      pids: num("default-pids"),
    },
    cgroupBase: cgroupBase || undefined,
    ioDevices,
    ioDevicesSetting: devName,
    defaultUser,
    allowPrivileged: priv === "1",
    maskPaths,
    revokedFile: revokedFile || undefined,
    viewersSee: see,
  };
}

/**
 * Checks that the IO devices set in the configuration are whole disks on this host: unchecked, a
 * wrong one would be accepted at the start and refused by the kernel at every job with an IO
 * limit. A device this host does not have is a plain Error (exit 1, restarted): a disk that
 * appears late at boot is there on a restart. A partition is a ConfigError (exit 2, not
 * restarted): it exists, and no retry makes it a disk.
 */
export function checkIoDevices(
  config: Pick<WorkerConfig, "ioDevices" | "ioDevicesSetting">,
  sysRoot = "/sys",
): void {
  for (const d of config.ioDevices ?? []) {
    const disk = wholeDisk(d, sysRoot);
    if (disk === undefined) {
      throw new Error(
        `${config.ioDevicesSetting}: ${d} is not a block device on this host (/sys/dev/block)`,
      );
    }
    if (disk !== d) {
      throw new ConfigError(
        `${config.ioDevicesSetting}: ${d} is a partition; IO limits apply to its disk, ${disk}`,
      );
    }
  }
}
