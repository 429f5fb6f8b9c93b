/** Unit tests of the job start admission (worker/jobs/start_gate.ts). */
import assert from "node:assert/strict";
import { StartGate } from "../worker/jobs/start_gate.ts";

Deno.test("the start gate lets `limit` in at once, then the waiting in order", async () => {
  const gate = new StartGate(2);
  const order: number[] = [];
  const leaves: (() => void)[] = [];
  const entered = Array.from({ length: 5 }, (_, i) =>
    gate.enter().then((leave) => {
      order.push(i);
      leaves.push(leave);
    }));
  await Promise.resolve();
  await Promise.resolve();
  assert.deepEqual(order, [0, 1]);
  assert.equal(gate.starting, 2);
  assert.equal(gate.waiting, 3);
  leaves[0]!();
  leaves[0]!(); // leaving twice frees one slot only
  await entered[2];
  assert.deepEqual(order, [0, 1, 2]);
  assert.equal(gate.starting, 2);
  assert.equal(gate.waiting, 2);
  leaves[1]!();
  leaves[2]!();
  await Promise.all(entered);
  assert.deepEqual(order, [0, 1, 2, 3, 4]);
  leaves[3]!();
  leaves[4]!();
  assert.equal(gate.starting, 0);
  assert.equal(gate.waiting, 0);
});
