/**
 * The Jobs page built from entries encoded once (proto/encoded_jobs.ts) decodes, through the
 * generated decoder, to what protobufjs would have encoded; the cache of ended jobs' entries
 * (worker/api/list_jobs.ts) keeps at most its byte bound, dropping the least recently used first.
 */
import assert from "node:assert/strict";
import { EncodedJobs, jobEntryBytes, jobworker } from "../proto/service.ts";
import { EntryCache } from "../worker/api/list_jobs.ts";

function job(i: number, argBytes: number): jobworker.Job {
  return jobworker.Job.create({
    id: `job-${i}`,
    command: "/bin/sh",
    args: ["-c", "x".repeat(argBytes)],
    status: jobworker.JobStatus.COMPLETED,
    owner: "alice",
    env: ["A=1"],
    outputBytes: i * 1000,
  });
}

Deno.test("an EncodedJobs page decodes to its jobs, counts and token", () => {
  // Entries of 1-, 2- and 3-byte lengths, and no entries at all.
  for (const sizes of [[], [0], [10, 200], [20_000, 5, 130]]) {
    const jobs = sizes.map((n, i) => job(i, n));
    const entries = jobs.map((j) => jobworker.Job.encode(j).finish());
    const countByStatus = { COMPLETED: sizes.length, RUNNING: 3 };
    const page = EncodedJobs.of(entries, countByStatus, sizes.length ? "token" : "");
    const expected = jobworker.Jobs.create({
      jobs,
      countByStatus,
      nextPageToken: sizes.length ? "token" : "",
    });
    const decoded = jobworker.Jobs.decode(page.wire);
    assert.deepEqual(jobworker.Jobs.toObject(decoded), jobworker.Jobs.toObject(expected));
    const framing = entries.reduce((n, e) => n + jobEntryBytes(e.length) - e.length, 0);
    assert.equal(
      page.wire.length,
      jobworker.Jobs.encode(expected).finish().length,
      `sizes ${sizes}: the same length as protobufjs's encoding (${framing} framing bytes)`,
    );
  }
});

Deno.test("the GetJobs and ListJobs serializers send an EncodedJobs as it is", async () => {
  const { jobServiceDefinition } = await import("../proto/service.ts");
  const entries = [jobworker.Job.encode(job(1, 5)).finish()];
  const page = EncodedJobs.of(entries, { COMPLETED: 1 }, "");
  assert.equal(jobServiceDefinition.GetJobs.responseSerialize(page), page.wire);
  assert.equal(jobServiceDefinition.ListJobs.responseSerialize(page), page.wire);
  const plain = jobworker.Jobs.create({
    jobs: [job(1, 5)],
    countByStatus: { COMPLETED: 1 },
    nextPageToken: "",
  });
  const decoded = (bytes: Uint8Array) => jobworker.Jobs.toObject(jobworker.Jobs.decode(bytes));
  assert.deepEqual(
    decoded(jobServiceDefinition.GetJobs.responseSerialize(plain)),
    decoded(page.wire),
  );
});

Deno.test("the entry cache keeps its byte bound, dropping the least recently used", () => {
  const cache = new EntryCache(300);
  const entry = (n: number) => new Uint8Array(100).fill(n);
  cache.set("a", entry(1));
  cache.set("b", entry(2));
  cache.set("c", entry(3));
  assert.equal(cache.size, 3);
  assert.equal(cache.get("a")?.[0], 1, "a is used again: b is now the oldest");
  cache.set("d", entry(4));
  assert.equal(cache.size, 3);
  assert.equal(cache.get("b"), undefined);
  assert.deepEqual(["a", "c", "d"].map((k) => cache.get(k)?.[0]), [1, 3, 4]);
  cache.set("c", new Uint8Array(250));
  assert.equal(cache.get("c")?.length, 250, "a replaced entry counts with its new size");
  assert.deepEqual(["a", "d"].map((k) => cache.get(k)), [undefined, undefined]);
  cache.set("huge", new Uint8Array(301));
  assert.equal(cache.get("huge"), undefined, "an entry larger than the bound is not kept");
  assert.equal(cache.get("c")?.length, 250);
});
