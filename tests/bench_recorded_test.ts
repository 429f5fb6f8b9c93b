/**
 * The bench's regression check (bench/recorded.ts, bench/rows.ts): a ratio is always "how much
 * worse than the baseline", a row fails only past 2× its recorded ratio, and rows that cannot hold
 * to a record are never recorded or checked. No server needed.
 *
 * @module
 */
import assert from "node:assert/strict";
import { loadRecords, verdict, writeRecord } from "../bench/recorded.ts";
import { meetsTarget, quantile, ratio, type Row } from "../bench/rows.ts";
import type { MachineInfo } from "../bench/machine.ts";

const machine: MachineInfo = {
  cpuModel: "test",
  cores: 2,
  kernel: "6.18",
  cgroup: "v1",
  deno: "2.8.3",
  commit: "0",
};
const time = (name: string, ours: number, base: number): Row => ({
  name,
  ours,
  base,
  unit: "ms",
  higherIsBetter: false,
});

Deno.test("bench quantile: nearest rank, so one outlier of 100 does not set p99", () => {
  const hundred = Array.from({ length: 100 }, (_, i) => 100 - i);
  assert.equal(quantile(hundred, 0.99), 99);
  assert.equal(quantile(hundred, 0.5), 50);
  assert.equal(quantile(hundred, 1), 100);
  assert.equal(quantile([7, 3, 5], 0.5), 5);
  assert.equal(quantile([4], 0.99), 4);
  assert.throws(() => quantile([], 0.5));
});

Deno.test("bench ratio: worse is higher for times and for throughput alike", () => {
  assert.equal(ratio(time("t", 30, 10)), 3);
  assert.equal(ratio({ ...time("s", 50, 200), unit: "MiB/s", higherIsBetter: true }), 4);
  assert.equal(meetsTarget({ ...time("t", 30, 10), target: { ratioAtMost: 3 } }), true);
  assert.equal(meetsTarget({ ...time("t", 31, 10), target: { ratioAtMost: 3 } }), false);
  assert.equal(meetsTarget({ ...time("m", 300, 1), target: { atMost: 256 } }), false);
  assert.equal(meetsTarget(time("t", 1, 1)), undefined);
});

Deno.test("bench record: fails only past 2x the recorded ratio; unchecked and infinite rows stay out", async () => {
  const dir = await Deno.makeTempDir({ prefix: "jobworker-bench-record-" });
  try {
    const file = `${dir}/recorded.json`;
    const rows: Row[] = [
      time("start", 20, 1),
      { ...time("peer", 7, 1), unchecked: "a peer's figure" },
      time("zero base", 5, 0),
    ];
    writeRecord("quick", rows, machine, file);
    const record = loadRecords(file).quick;
    assert.deepEqual(record?.ratios, { start: 20 });
    assert.equal(loadRecords(file).full, undefined);

    assert.deepEqual(verdict(time("start", 40, 1), record), { recorded: 20, regressed: false });
    assert.deepEqual(verdict(time("start", 41, 1), record), { recorded: 20, regressed: true });
    assert.deepEqual(verdict(time("start", 5, 1), record), { recorded: 20, regressed: false });
    assert.deepEqual(verdict({ ...time("start", 99, 1), unchecked: "noisy" }, record), {});
    assert.deepEqual(verdict(time("new row", 99, 1), record), {});
    assert.deepEqual(verdict(time("start", 99, 1), undefined), {});
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
