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

Deno.test("io devices: one this host does not have stops the start with exit 1, not 2 (a disk may appear late at boot: the unit restarts it)", async () => {
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
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  for (const args of [["serve", "--check"], ["serve"]]) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-prompt", "--cached-only", MAIN, ...args],
      env: { JOB_WORKER_IO_DEVICES: "999:999", JOB_WORKER_CERT_PATH: "/nonexistent" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const said = decode(out.stdout) + decode(out.stderr);
    assert.equal(out.code, 1, `${args.join(" ")}: ${said}`);
    assert.match(said, /JOB_WORKER_IO_DEVICES: 999:999 is not a block device/);
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
