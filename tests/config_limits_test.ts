/** The connection and stream limits of `jobworker serve`: defaults, environment, flags. */
import assert from "node:assert/strict";
import { ConfigError, loadConfig, type WorkerConfig } from "../worker/config.ts";
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

Deno.test("io devices: one this host does not have is a configuration error, not a failure of every IO-limited job", () => {
  assert.throws(
    () => load(["--io-devices", "999:999"]),
    (e: Error) => e instanceof ConfigError && /999:999 is not a block device/.test(e.message),
  );
  const disk = [...Deno.readDirSync("/sys/dev/block")].map((e) => e.name).find((d) =>
    wholeDisk(d) === d
  );
  if (disk) assert.deepEqual(load([], { JOB_WORKER_IO_DEVICES: disk }).ioDevices, [disk]);
});

Deno.test("stranded-output limits: a hard limit below the soft one is a configuration error naming both", () => {
  assert.throws(
    () => load(["--recycle-at-native-mib", "512", "--recycle-force-native-mib", "256"]),
    (e: Error) =>
      e instanceof ConfigError &&
      /--recycle-force-native-mib \(256\) must be at least --recycle-at-native-mib \(512\)/.test(
        e.message,
      ),
  );
  assert.throws(
    () =>
      load([], {
        JOB_WORKER_RECYCLE_AT_NATIVE_MIB: "64",
        JOB_WORKER_RECYCLE_FORCE_NATIVE_MIB: "8",
      }),
    (e: Error) =>
      e instanceof ConfigError &&
      /JOB_WORKER_RECYCLE_FORCE_NATIVE_MIB.*JOB_WORKER_RECYCLE_AT_NATIVE_MIB/.test(e.message),
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
