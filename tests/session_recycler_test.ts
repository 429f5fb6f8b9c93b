/**
 * SessionRecycler's decisions (worker/tls/session_recycle.ts) with a real grpc-js server and real
 * connections: what counts toward which limit, and how long a call-off or a refusal holds the
 * next recycle back. `recycle` only records the call here; the reload itself is tested end to
 * end in session_recycle_test.ts and stranded_recycle_test.ts.
 *
 * @module
 */
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { FORCED_RETRY_MS, SessionRecycler } from "../worker/tls/session_recycle.ts";
import { http2ServersOf } from "../worker/tls/internals.ts";
import { waitFor } from "./helpers/host_procs.ts";

const MIB = 1024 * 1024;

/** A grpc-js server watched by a recycler built with `make`, and a way to connect to it. */
async function served(make: (recycle: () => void) => SessionRecycler) {
  const server = new grpc.Server();
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      "127.0.0.1:0",
      grpc.ServerCredentials.createInsecure(),
      (error, port) => error ? reject(error) : resolve(port),
    )
  );
  let recycles = 0;
  const recycler = make(() => recycles++);
  assert.ok(recycler.attach(server));
  // Counted a turn after the socket's close: by then the recycler has counted it closed too.
  let closed = 0;
  for (const s of http2ServersOf(server)) {
    s.prependListener(
      "connection",
      (socket) => socket.once("close", () => setTimeout(() => closed++, 0)),
    );
  }
  return {
    recycler,
    recycles: () => recycles,
    /** Connects (one HTTP/2 session); `leave()` closes it and resolves once the worker saw it. */
    async connect() {
      // A subchannel of its own: one connection per client, even beside one still connected.
      const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
        "grpc.use_local_subchannel_pool": 1,
      });
      await new Promise<void>((resolve, reject) =>
        client.waitForReady(Date.now() + 10_000, (e) => e ? reject(e) : resolve())
      );
      const before = closed;
      return {
        leave: async () => {
          client.close();
          await waitFor("the worker to see the connection close", () => closed > before);
        },
      };
    },
    close: () => server.forceShutdown(),
  };
}

Deno.test({
  name: "sessions do not count toward the soft limit: with JOB_WORKER_RECYCLE_AFTER_SESSIONS=0 " +
    "and no hard limit no number of sessions recycles",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    // The smallest soft limit there is: one byte.
    const w = await served((recycle) =>
      new SessionRecycler(0, recycle, 600_000, { soft: 1, hard: 0 })
    );
    try {
      for (let i = 0; i < 3; i++) await (await w.connect()).leave();
      assert.equal(w.recycler.served, 3);
      assert.equal(w.recycler.strandedEstimate, 0);
      assert.equal(w.recycles(), 0, "sessions recycled the worker");
    } finally {
      w.close();
    }
  },
});

Deno.test({
  name: "sessions count toward the hard limit: a client that stays connected while others come " +
    "and go does not keep the worker from recycling for good",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    // Never for sessions alone at an idle moment; forced past 1 MiB: 57 sessions at 18 KiB.
    const w = await served((recycle) =>
      new SessionRecycler(0, recycle, 600_000, { soft: 0, hard: 1 * MIB })
    );
    try {
      const holder = await w.connect();
      for (let i = 0; i < 55; i++) await (await w.connect()).leave(); // 56 sessions with the holder
      assert.equal(w.recycles(), 0, "forced below the hard limit");
      await (await w.connect()).leave();
      assert.ok(w.recycler.nativeEstimate > 1 * MIB);
      assert.equal(w.recycles(), 1, "not forced past the hard limit with a client connected");
      w.recycler.checkStillIdle(); // forced: the client connected does not call it off
      await holder.leave();
    } finally {
      w.close();
    }
  },
});

Deno.test({
  name: "a hard limit of 0 never forces a recycle: past the soft one it waits for the clients " +
    "to leave",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const w = await served((recycle) =>
      new SessionRecycler(0, recycle, 600_000, { soft: 1 * MIB, hard: 0 })
    );
    try {
      const client = await w.connect();
      w.recycler.strand(100 * MIB);
      assert.equal(w.recycler.strandedEstimate, 200 * MIB);
      assert.equal(w.recycles(), 0, "forced with a hard limit of 0");
      await client.leave();
      assert.equal(w.recycles(), 1, "no idle recycle past the soft limit");
    } finally {
      w.close();
    }
  },
});

Deno.test({
  name: "a call-off holds the forced recycle back about a second, a refusal the whole retry " +
    "delay, and the idle recycle the whole retry delay either way",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    // Due after one session; forced past 1 MiB of estimate; the retry delay is ten minutes.
    const w = await served((recycle) =>
      new SessionRecycler(1, recycle, 600_000, { soft: 0, hard: 1 * MIB })
    );
    try {
      await (await w.connect()).leave();
      assert.equal(w.recycles(), 1, "no idle recycle after the session limit");

      // A client connects while it gets ready: called off.
      const client = await w.connect();
      assert.throws(() => w.recycler.checkStillIdle(), /a client connected/);
      w.recycler.notRecycled();
      // It strands past the hard limit at once: held back a moment, then forced anyway.
      w.recycler.strand(1 * MIB);
      assert.equal(w.recycles(), 1, "not held back at all after the call-off");
      const start = performance.now();
      await waitFor("the forced recycle", () => w.recycles() === 2, 30_000);
      console.log(
        `forced ${Math.round(performance.now() - start)} ms after the call-off ` +
          `(FORCED_RETRY_MS ${FORCED_RETRY_MS})`,
      );
      // Forced: a client connected now does not call it off.
      w.recycler.checkStillIdle();

      // Refused (not called off): even the forced one waits the retry delay.
      w.recycler.notRecycled();
      w.recycler.strand(1 * MIB);
      await new Promise((resolve) => setTimeout(resolve, 2 * FORCED_RETRY_MS));
      assert.equal(w.recycles(), 2, "a refused recycle retried before the retry delay");
      await client.leave();
      assert.equal(w.recycles(), 2, "a refused recycle retried before the retry delay");
    } finally {
      w.close();
    }
  },
});

Deno.test({
  name: "a stopped recycler (the worker shutting down) recycles nothing: not past the hard limit " +
    "with a client connected, not when the last client leaves",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const w = await served((recycle) =>
      new SessionRecycler(1, recycle, 600_000, { soft: 1 * MIB, hard: 2 * MIB })
    );
    try {
      const client = await w.connect();
      w.recycler.stop();
      w.recycler.strand(100 * MIB);
      await client.leave();
      assert.equal(w.recycles(), 0, "recycled while shutting down");
    } finally {
      w.close();
    }
  },
});
