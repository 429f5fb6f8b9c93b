/** The connection and stream limits of `jobworker serve`: defaults, environment, flags. */
import assert from "node:assert/strict";
import { checkIoDevices, ConfigError, loadConfig, type WorkerConfig } from "../worker/config.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
import { wholeDisk } from "../worker/cgroups/io_devices.ts";

const load = (args: string[], env: Record<string, string> = {}) =>
  loadConfig(args, (name) => env[name]) as WorkerConfig;

Deno.test("connection limits have defaults, read the environment, and flags win", () => {
  const defaults = load([]);
  assert.equal(defaults.maxConnections, 4096);
  assert.equal(defaults.maxConnectionsPerPeer, 512);
  assert.equal(defaults.maxStreamsPerClient, 64);
  assert.equal(defaults.handshakeTimeoutSeconds, 5);
  assert.equal(defaults.idleTimeoutSeconds, 300);
  assert.equal(defaults.keepaliveSeconds, 60);
  assert.equal(defaults.keepaliveTimeoutSeconds, 20);
  const env = { JOB_WORKER_MAX_CONNECTIONS: "100", JOB_WORKER_MAX_STREAMS_PER_CLIENT: "3" };
  assert.equal(load([], env).maxConnections, 100);
  assert.equal(load([], env).maxStreamsPerClient, 3);
  assert.equal(load(["--max-connections", "7"], env).maxConnections, 7);
  assert.throws(() => load(["--handshake-timeout", "0"]), ConfigError);
  assert.throws(() => load([], { JOB_WORKER_MAX_CONNECTIONS_PER_PEER: "many" }), ConfigError);
});

Deno.test("addresses: a port beyond 65535 is a configuration error, not a failure to listen", () => {
  // It passed as HOST:PORT (up to five digits), and the start failed later with Node's
  // "options.port should be >= 0 and < 65536".
  for (const flag of ["--addr", "--metrics-addr"]) {
    assert.throws(
      () => load([flag, "127.0.0.1:99999"]),
      (e: Error) => e instanceof ConfigError && /port must be 0\.\.65535.*99999/.test(e.message),
    );
  }
  assert.equal(load(["--addr", "127.0.0.1:65535"]).address, "127.0.0.1:65535");
  assert.equal(load(["--addr", "[::1]:0"]).address, "[::1]:0");
});

/**
 * A fake /sys/dev/block: disk sda (8:0) with its partition sda1 (8:1), their entries absolute
 * symlinks (so the directory can also be bind-mounted over the real /sys/dev/block).
 */
function fakeSys(root: string): string {
  const sys = `${root}/sys`;
  const disk = `${sys}/devices/virtual/block/sda`;
  Deno.mkdirSync(`${disk}/sda1`, { recursive: true });
  Deno.mkdirSync(`${sys}/dev/block`, { recursive: true });
  Deno.writeTextFileSync(`${disk}/dev`, "8:0\n");
  Deno.writeTextFileSync(`${disk}/sda1/dev`, "8:1\n");
  Deno.writeTextFileSync(`${disk}/sda1/partition`, "1\n");
  Deno.symlinkSync(disk, `${sys}/dev/block/8:0`);
  Deno.symlinkSync(`${disk}/sda1`, `${sys}/dev/block/8:1`);
  return sys;
}

const decode = (b: Uint8Array) => new TextDecoder().decode(b);

/**
 * `jobworker serve [--check]` with JOB_WORKER_IO_DEVICES set; with `blockDir`, in a mount
 * namespace of its own where that directory is bind-mounted over /sys/dev/block.
 */
async function serveWithDevices(args: string[], devices: string, blockDir?: string) {
  const deno = [Deno.execPath(), "run", "-A", "--no-prompt", "--cached-only", MAIN, ...args];
  const [program, ...rest] = blockDir
    ? [
      "unshare",
      "--mount",
      "--propagation",
      "private",
      "sh",
      "-c",
      'mount --bind "$0" /sys/dev/block && exec "$@"',
      blockDir,
      ...deno,
    ]
    : deno;
  const out = await new Deno.Command(program!, {
    args: rest,
    env: { JOB_WORKER_IO_DEVICES: devices, JOB_WORKER_CERT_PATH: "/nonexistent" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, said: decode(out.stdout) + decode(out.stderr) };
}

Deno.test("io devices: one this host does not have exits 1 (a disk may appear late at boot: the unit restarts it); a partition exits 2 (no restart mends it)", async () => {
  // The form is the configuration's: exit 2, which the unit does not restart.
  assert.throws(() => load(["--io-devices", "sda"]), ConfigError);
  // Whether the host has the device is not: it may be there on the next try.
  const missing = load(["--io-devices", "999:999"]);
  assert.throws(
    () => checkIoDevices(missing),
    (e: Error) =>
      !(e instanceof ConfigError) && /^--io-devices: 999:999 is not a block device/.test(e.message),
  );
  const disk = [...Deno.readDirSync("/sys/dev/block")].map((e) => e.name).find((d) =>
    wholeDisk(d) === d
  );
  if (disk) {
    const config = load([], { JOB_WORKER_IO_DEVICES: disk });
    assert.deepEqual(config.ioDevices, [disk]);
    checkIoDevices(config);
  }
  // A partition exists: naming it for its disk is the configuration's mistake, found at the start.
  const root = Deno.makeTempDirSync({ prefix: "jobworker-io-devices-" });
  try {
    const sys = fakeSys(root);
    checkIoDevices(load(["--io-devices", "8:0"]), sys);
    assert.throws(
      () => checkIoDevices(load(["--io-devices", "8:0,8:1"]), sys),
      (e: Error) =>
        e instanceof ConfigError &&
        e.message === "--io-devices: 8:1 is a partition; IO limits apply to its disk, 8:0",
    );
    assert.throws(
      () => checkIoDevices(load(["--io-devices", "8:2"]), sys),
      (e: Error) =>
        !(e instanceof ConfigError) && /^--io-devices: 8:2 is not a block/.test(e.message),
    );
    for (const args of [["serve", "--check"], ["serve"]]) {
      const gone = await serveWithDevices(args, "999:999");
      assert.equal(gone.code, 1, `${args.join(" ")}: ${gone.said}`);
      assert.match(gone.said, /JOB_WORKER_IO_DEVICES: 999:999 is not a block device/);
      // This host has no partition (nor, maybe, a kernel that reads partition tables): the start
      // sees the fake tree as its /sys/dev/block.
      const late = await serveWithDevices(args, "8:2", `${sys}/dev/block`);
      assert.equal(late.code, 1, `${args.join(" ")}: ${late.said}`);
      assert.match(late.said, /JOB_WORKER_IO_DEVICES: 8:2 is not a block device/);
      const part = await serveWithDevices(args, "8:1", `${sys}/dev/block`);
      assert.equal(part.code, 2, `${args.join(" ")}: ${part.said}`);
      assert.match(
        part.said,
        /JOB_WORKER_IO_DEVICES: 8:1 is a partition; IO limits apply to its disk, 8:0/,
      );
    }
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

/** The ConfigError message `load` throws, or "" when it loads. */
const refusal = (args: string[], env: Record<string, string> = {}): string => {
  try {
    load(args, env);
    return "";
  } catch (e) {
    assert.ok(e instanceof ConfigError, String(e));
    return e.message;
  }
};

Deno.test("stranded-output limits: a hard limit below the soft one is a configuration error naming both", () => {
  assert.match(
    refusal(["--recycle-at-native-mib", "512", "--recycle-force-native-mib", "256"]),
    /^--recycle-force-native-mib \(256\) is below --recycle-at-native-mib \(512\): /,
  );
  assert.match(
    refusal([], {
      JOB_WORKER_RECYCLE_AT_NATIVE_MIB: "64",
      JOB_WORKER_RECYCLE_FORCE_NATIVE_MIB: "8",
    }),
    /^JOB_WORKER_RECYCLE_FORCE_NATIVE_MIB \(8\) is below JOB_WORKER_RECYCLE_AT_NATIVE_MIB \(64\): /,
  );
  // Only one of them set: the other's value is named as the default, not as something set.
  assert.match(
    refusal([], { JOB_WORKER_RECYCLE_FORCE_NATIVE_MIB: "100" }),
    /^JOB_WORKER_RECYCLE_FORCE_NATIVE_MIB \(100\) is below JOB_WORKER_RECYCLE_AT_NATIVE_MIB \(256, the default\): /,
  );
  assert.match(
    refusal(["--recycle-force-native-mib", "100"]),
    /^--recycle-force-native-mib \(100\) is below JOB_WORKER_RECYCLE_AT_NATIVE_MIB \(256, the default\): /,
  );
  assert.match(
    refusal(["--recycle-at-native-mib", "2048"]),
    /^JOB_WORKER_RECYCLE_FORCE_NATIVE_MIB \(1024, the default\) is below --recycle-at-native-mib \(2048\): /,
  );
  // Either one 0 (never) is fine, and so are equal limits.
  assert.equal(
    load(["--recycle-at-native-mib", "512", "--recycle-force-native-mib", "0"])
      .recycleForceAtNativeMiB,
    0,
  );
  assert.equal(
    load(["--recycle-at-native-mib", "0", "--recycle-force-native-mib", "8"]).recycleAtNativeMiB,
    0,
  );
  assert.equal(
    load(["--recycle-at-native-mib", "8", "--recycle-force-native-mib", "8"])
      .recycleForceAtNativeMiB,
    8,
  );
});
