/**
 * `retryAcrossReload` (cli/reconnect.ts) on a fake clock: the minute of patience is counted on the
 * clock it is given, so a test (or a client whose sleeps return early) never waits a real minute.
 *
 * @module
 */
import assert from "node:assert/strict";
import { RECONNECT_PATIENCE_MS, retryAcrossReload } from "../cli/reconnect.ts";
import { RetryAbandoned, Status } from "../cli/errors.ts";
import { RpcError } from "../cli/transport/types.ts";

/** A clock that moves only when the code under test sleeps. */
function fakeTime() {
  let now = 1_000_000;
  const slept: number[] = [];
  return {
    now: () => now,
    sleep: (ms: number) => {
      slept.push(ms);
      now += ms;
      return Promise.resolve();
    },
    slept,
  };
}

const lost = () => new RpcError(Status.UNAVAILABLE, "connect ECONNREFUSED 127.0.0.1:50051");

Deno.test("retryAcrossReload: gives up after the patience, on the clock it is given", async () => {
  const time = fakeTime();
  let tries = 0;
  const started = performance.now();
  const error = await retryAcrossReload("reading job x", () => {
    tries++;
    return Promise.reject(lost());
  }, { sleep: time.sleep, now: time.now, advice: "see jobworker get x" }).catch((e) => e);
  assert.ok(error instanceof RetryAbandoned, String(error));
  assert.match(
    error.message,
    /^gave up reading job x after 6\d s of retries; see jobworker get x$/,
  );
  // 100, 250, 500, 1000 ms, then 2 s each until the minute is over.
  assert.deepEqual(time.slept.slice(0, 5), [100, 250, 500, 1000, 2000]);
  const pauses = time.slept.reduce((a, b) => a + b, 0);
  // The try after the last pause found the minute over.
  assert.ok(pauses > RECONNECT_PATIENCE_MS && pauses <= RECONNECT_PATIENCE_MS + 2000, `${pauses}`);
  assert.equal(tries, time.slept.length + 1);
  assert.ok(performance.now() - started < 5000, "it waited in real time");
});

Deno.test("retryAcrossReload: returns once the connection is back", async () => {
  const time = fakeTime();
  const retried: number[] = [];
  const value = await retryAcrossReload("reading job x", (attempt) => {
    return attempt < 3 ? Promise.reject(lost()) : Promise.resolve(`try ${attempt}`);
  }, { sleep: time.sleep, now: time.now, onRetry: (attempt) => retried.push(attempt) });
  assert.equal(value, "try 3");
  assert.deepEqual(retried, [1, 2]);
  assert.deepEqual(time.slept, [100, 250]);
});

Deno.test("retryAcrossReload: other errors are not retried", async () => {
  const time = fakeTime();
  const notFound = new RpcError(Status.NOT_FOUND, "no job x");
  const error = await retryAcrossReload("reading job x", () => Promise.reject(notFound), {
    sleep: time.sleep,
    now: time.now,
  }).catch((e) => e);
  assert.equal(error, notFound);
  assert.deepEqual(time.slept, []);
});
