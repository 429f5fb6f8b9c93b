/**
 * The bench's regression check (bench/recorded.ts, bench/rows.ts): a ratio is always "how much
 * worse than the baseline", a row fails only past 2× its recorded ratio, and rows that cannot hold
 * to a record are never recorded or checked; each kind of machine is held to its own record, and a
 * machine with none to the loosest of the others'. No server needed.
 *
 * @module
 */
import assert from "node:assert/strict";
import { loadRecords, medianRows, recordFor, verdict, writeRecord } from "../bench/recorded.ts";
import { meetsTarget, quantile, ratio, type Row, targetText } from "../bench/rows.ts";
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

Deno.test("bench target: within N of the baseline (RSS over idle), and each kind's text", () => {
  const rss = (ours: number, base: number): Row => ({ ...time("r", ours, base), unit: "MiB" });
  const within = { overBaseAtMost: 64 };
  assert.equal(meetsTarget({ ...rss(188, 124), target: within }), true);
  assert.equal(meetsTarget({ ...rss(188.5, 124), target: within }), false);
  // Below the baseline is within it; so is the idle figure itself.
  assert.equal(meetsTarget({ ...rss(100, 124), target: within }), true);
  // Not a ratio: 2x a small baseline can be within, 1.5x a large one not.
  assert.equal(meetsTarget({ ...rss(40, 20), target: within }), true);
  assert.equal(meetsTarget({ ...rss(300, 200), target: within }), false);
  // A figure that was not measured (NaN) meets no target.
  assert.equal(meetsTarget({ ...rss(NaN, 124), target: within }), false);
  assert.equal(meetsTarget({ ...time("l", NaN, 1), target: { atMost: 10 } }), false);
  assert.equal(targetText({ ...rss(1, 1), target: within }), "≤ baseline + 64 MiB");
  assert.equal(targetText({ ...rss(1, 1), target: { atMost: 200 } }), "≤ 200 MiB");
  assert.equal(targetText({ ...time("t", 1, 1), target: { ratioAtMost: 3 } }), "ratio ≤ 3");
  const tput = { ...time("s", 1, 1), unit: "MiB/s", higherIsBetter: true };
  assert.equal(targetText({ ...tput, target: { atLeast: 150 } }), "≥ 150 MiB/s");
  assert.equal(targetText(time("t", 1, 1)), "");
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
    writeRecord("quick", rows, machine, { file });
    const record = recordFor(loadRecords(file).quick, machine);
    assert.deepEqual(record?.ratios, { start: 20 });
    assert.equal(loadRecords(file).full, undefined);

    assert.deepEqual(verdict(time("start", 40, 1), record?.ratios), {
      recorded: 20,
      regressed: false,
    });
    assert.deepEqual(verdict(time("start", 41, 1), record?.ratios), {
      recorded: 20,
      regressed: true,
    });
    assert.deepEqual(verdict(time("start", 5, 1), record?.ratios), {
      recorded: 20,
      regressed: false,
    });
    assert.deepEqual(verdict({ ...time("start", 99, 1), unchecked: "noisy" }, record?.ratios), {});
    assert.deepEqual(verdict(time("new row", 99, 1), record?.ratios), {});
    assert.deepEqual(verdict(time("start", 99, 1), undefined), {});
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bench record: one per kind of machine; a machine without one is held to the loosest", async () => {
  const dir = await Deno.makeTempDir({ prefix: "jobworker-bench-record-" });
  try {
    const file = `${dir}/recorded.json`;
    const xeon = { ...machine, cpuModel: "Xeon" };
    const epyc = { ...machine, cpuModel: "EPYC" };
    writeRecord("quick", [time("burst", 17, 1), time("list", 2, 1)], xeon, { file });
    writeRecord("quick", [time("burst", 4, 1), time("list", 3, 1)], epyc, { file });
    writeRecord("quick", [time("burst", 5, 1), time("list", 3, 1)], epyc, { file, runs: 3 });
    const records = loadRecords(file).quick!;
    assert.deepEqual(records.map((r) => [r.machine.cpuModel, r.runs]), [["Xeon", 1], ["EPYC", 3]]);

    assert.deepEqual(recordFor(records, epyc)?.ratios, { burst: 5, list: 3 });
    assert.deepEqual(recordFor(records, xeon)?.ratios, { burst: 17, list: 2 });
    const other = recordFor(records, { ...machine, cpuModel: "new", cores: 4 });
    assert.deepEqual(other?.ratios, { burst: 17, list: 3 });
    assert.match(other!.from, /no record of new, 4 cores/);
    assert.equal(recordFor([], epyc), undefined);
    assert.equal(recordFor(undefined, epyc), undefined);

    // A file from before records were kept per machine: one record per mode.
    Deno.writeTextFileSync(file, JSON.stringify({ full: records[0] }));
    assert.deepEqual(loadRecords(file).full?.map((r) => r.machine.cpuModel), ["Xeon"]);
    assert.equal(loadRecords(file).quick, undefined);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bench record: each row is the run whose ratio is that row's median, a measured row", () => {
  const runs = [
    [time("a", 9, 1), time("b", 1, 1)],
    [time("a", 3, 1), time("b", 2, 1)],
    [time("a", 5, 1), time("b", 8, 1)],
  ];
  assert.deepEqual(medianRows(runs), [time("a", 5, 1), time("b", 2, 1)]);
  assert.deepEqual(medianRows(runs.slice(0, 2)), [time("a", 3, 1), time("b", 1, 1)]);
  assert.deepEqual(medianRows([runs[0]!]), runs[0]);
  assert.deepEqual(medianRows([]), []);
  // A row one run lacks: the median of the runs that have it, kept in the order first seen.
  const lacking = [[time("a", 9, 1)], [time("a", 3, 1), time("c", 4, 1)], [time("c", 6, 1)]];
  assert.deepEqual(medianRows(lacking), [time("a", 3, 1), time("c", 4, 1)]);
});
