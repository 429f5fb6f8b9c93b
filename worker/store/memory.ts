/** A JobStore kept in memory: for unit tests of the job layer, and nothing else. */
import { END_STATES, JOB_STATUSES, type JobRecord, type JobStatus } from "../jobs/job.ts";
import type { JobFilter, JobPageQuery, JobStore } from "../jobs/store.ts";

function matches(r: JobRecord, filter: JobFilter, alsoIds?: readonly string[]): boolean {
  if (
    filter.statuses?.length && !filter.statuses.includes(r.status) && !alsoIds?.includes(r.id)
  ) return false;
  return !filter.owner || r.owner === filter.owner;
}

export class MemoryStore implements JobStore {
  /** Kept in seq order. */
  readonly #records = new Map<string, JobRecord>();
  #lastSeq = 0;

  insert(record: JobRecord): void {
    this.#records.set(record.id, structuredClone(record));
    this.#lastSeq = Math.max(this.#lastSeq, record.seq);
  }

  durable(): Promise<void> {
    return Promise.resolve();
  }

  update(record: JobRecord): void {
    const old = this.#records.get(record.id);
    if (old === undefined) return;
    const { seq, owner, spec, createTime } = old; // fixed at the insert, as in the SQLite store
    this.#records.set(record.id, { ...structuredClone(record), seq, owner, spec, createTime });
  }

  get(id: string): JobRecord | undefined {
    const r = this.#records.get(id);
    return r && structuredClone(r);
  }

  byRequestId(owner: string, requestId: string): JobRecord | undefined {
    for (const r of this.#records.values()) {
      if (r.owner === owner && r.spec.requestId === requestId) return structuredClone(r);
    }
    return undefined;
  }

  page(query: JobPageQuery): JobRecord[] {
    const out: JobRecord[] = [];
    for (const r of [...this.#records.values()].reverse()) {
      if (out.length >= query.limit) break;
      if (query.beforeSeq !== undefined && r.seq >= query.beforeSeq) continue;
      if (matches(r, query, query.alsoIds)) out.push(structuredClone(r));
    }
    return out;
  }

  countByStatus(filter: JobFilter): Record<JobStatus, number> {
    const counts = Object.fromEntries(JOB_STATUSES.map((s) => [s, 0])) as Record<
      JobStatus,
      number
    >;
    for (const r of this.#records.values()) if (matches(r, filter)) counts[r.status]++;
    return counts;
  }

  lastSeq(): number {
    return this.#lastSeq;
  }

  unended(): JobRecord[] {
    return [...this.#records.values()].filter((r) => !END_STATES.includes(r.status));
  }

  expired(keep: number, endedBefore: Date | undefined): string[] {
    const ended = [...this.#records.values()].filter((r) => END_STATES.includes(r.status));
    const beyond = ended.length - keep;
    return ended
      .filter((r, i) => i < beyond || (endedBefore && r.endTime! < endedBefore))
      .map((r) => r.id);
  }

  delete(id: string): void {
    this.#records.delete(id);
  }

  close(): void {}
}
