/**
 * When the init pool turns its cgroup slots off and on again (worker/runtime/slot_health.ts), on a
 * fake clock: repeated failures of one step turn them off, a back-off later they are tried
 * again, a retry that fails turns them off for longer, a success puts everything back.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  FAILURES_TO_TURN_OFF,
  FIRST_BACKOFF_MS,
  MAX_BACKOFF_MS,
  SlotHealth,
} from "../worker/runtime/slot_health.ts";
import { setLogLevel } from "../worker/log/logger.ts";

setLogLevel("error");

function clocked() {
  const clock = { now: 1_000_000 };
  return { clock, health: new SlotHealth(() => clock.now) };
}

Deno.test("slot health: failures of either kind in a row turn slots off; one alone does not", () => {
  const { health } = clocked();
  health.failed("make", "EROFS");
  assert.equal(health.on, true, "one failure to make a slot no longer turns slots off for good");
  health.failed("join", "died");
  assert.equal(health.on, true);
  health.failed("make", "EROFS");
  assert.equal(FAILURES_TO_TURN_OFF, 3);
  assert.equal(health.on, false, "three in a row, of both kinds, do");
});

Deno.test("slot health: a success between failures starts the count again", () => {
  const { health } = clocked();
  for (let i = 0; i < 10; i++) {
    health.failed("join", "died");
    health.failed("make", "EMFILE");
    health.worked("ready");
  }
  assert.equal(health.on, true);
});

Deno.test("slot health: off for a back-off, then tried again; a failed retry doubles it", () => {
  const { clock, health } = clocked();
  for (let i = 0; i < FAILURES_TO_TURN_OFF; i++) health.failed("make", "EROFS");
  clock.now += FIRST_BACKOFF_MS - 1;
  assert.equal(health.on, false);
  // Failures of slots made before they went off are not held against the retry.
  health.failed("join", "died");
  clock.now += 1;
  assert.equal(health.on, true, "tried again after the back-off");
  health.failed("make", "EROFS");
  assert.equal(health.on, false, "the first failure of a retry turns them off again");
  clock.now += FIRST_BACKOFF_MS;
  assert.equal(health.on, false, "for twice as long");
  clock.now += FIRST_BACKOFF_MS;
  assert.equal(health.on, true);
  // The back-off stops growing at its maximum.
  for (let i = 0; i < 10; i++) {
    health.failed("make", "EROFS");
    clock.now += MAX_BACKOFF_MS;
    assert.equal(health.on, true);
  }
  health.failed("make", "EROFS");
  clock.now += MAX_BACKOFF_MS - 1;
  assert.equal(health.on, false);
  clock.now += 1;
  assert.equal(health.on, true);
});

Deno.test("slot health: a success puts slots back on with the first back-off", () => {
  const { clock, health } = clocked();
  for (let i = 0; i < FAILURES_TO_TURN_OFF; i++) health.failed("make", "EROFS");
  clock.now += FIRST_BACKOFF_MS;
  health.failed("make", "EROFS");
  assert.equal(health.on, false);
  health.worked("ready"); // a member made before got ready in its slot
  assert.equal(health.on, true);
  // Back to the first state: it takes a full run of failures again, then the first back-off.
  health.failed("make", "EROFS");
  assert.equal(health.on, true);
  for (let i = 1; i < FAILURES_TO_TURN_OFF; i++) health.failed("make", "EROFS");
  assert.equal(health.on, false);
  clock.now += FIRST_BACKOFF_MS;
  assert.equal(health.on, true);
});

Deno.test("slot health: adopts that keep failing turn slots off, though members get ready between", () => {
  const { clock, health } = clocked();
  // Slots that are made and joined fine but never become a job's cgroup: each claim's adopt fails
  // and the member waiting next is ready in its slot meanwhile.
  for (let i = 0; i < FAILURES_TO_TURN_OFF - 1; i++) {
    health.failed("adopt", "EBUSY");
    health.worked("ready");
  }
  assert.equal(health.on, true);
  health.failed("adopt", "EBUSY");
  assert.equal(health.on, false, "three adopts in a row failed");
  clock.now += FIRST_BACKOFF_MS;
  assert.equal(health.on, true, "tried again after the back-off");
  health.worked("ready");
  health.failed("adopt", "EBUSY");
  assert.equal(health.on, false, "a member ready is no success of the adopt that turned them off");
  clock.now += 2 * FIRST_BACKOFF_MS;
  health.worked("adopt");
  health.failed("adopt", "EBUSY");
  assert.equal(health.on, true, "an adopt that worked starts everything again");
});
