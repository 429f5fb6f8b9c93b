/**
 * What the cgroup of one job is on both versions: a set of directories (v2: one; v1: one per
 * hierarchy), whose processes are listed, signalled and removed the same way, and whose usage is
 * read live, then once more off the event loop at the job's end and kept as final, with the highest
 * memory charge seen. Which files hold the numbers, and how everything is killed at once, is each
 * version's own (v1.ts, v2.ts).
 */
import { type FileReader, readAhead, readText } from "./files.ts";
import { listPids, signalPids } from "./kill.ts";
import { removeCgroupDirs, rmdirDone } from "./remove.ts";
import type { FileBatch } from "./file_batch.ts";
import type { JobCgroup, Usage } from "./types.ts";

export abstract class JobCgroupDirs implements JobCgroup {
  readonly procsFiles: string[];
  readonly #dirs: readonly string[];
  readonly #files: FileBatch;
  #peak = 0;
  #final: Usage | undefined;
  /** Directories final({ thenRemove: true }) already removed: remove() leaves them out. */
  #removed = new Set<string>();

  /**
   * `dirs`: every directory of the job's cgroup, each once; `files`: how the job's end reads and
   * removes them (file_batch.ts).
   */
  protected constructor(dirs: readonly string[], files: FileBatch) {
    this.#dirs = dirs;
    this.#files = files;
    this.procsFiles = dirs.map((dir) => `${dir}/cgroup.procs`);
  }

  /**
   * The usage the version's files show through `read` (which may find nothing); its
   * memoryPeakBytes is the kernel's own peak (0 where it keeps none).
   */
  protected abstract readUsage(read: FileReader): Usage;

  /** Whether the version's files show an OOM kill, through `read`. */
  protected abstract readOomKilled(read: FileReader): boolean;

  abstract killAll(): Promise<void>;

  pids(): number[] {
    return listPids(this.#dirs);
  }

  /** One small read for a job's end, where pids() would read every hierarchy and list children. */
  isEmpty(): boolean {
    return this.kernelCountsNone() || this.pids().length === 0;
  }

  /** Whether the kernel's own count of the job's processes (with its child cgroups') reads 0. */
  protected abstract kernelCountsNone(): boolean;

  signalAll(signal: Deno.Signal): number {
    return signalPids(this.pids(), signal);
  }

  usage(): Usage {
    if (this.#final) return { ...this.#final };
    return this.#usage(readText);
  }

  oomKilled(): boolean {
    return this.readOomKilled(readText);
  }

  async final(
    options: { thenRemove?: boolean } = {},
  ): Promise<{ usage: Usage; oomKilled: boolean }> {
    if (this.#final) return { usage: { ...this.#final }, oomKilled: this.oomKilled() };
    // Removed in the same batch, right after the reads: a job's end does both, and each batch is
    // a wake-up of a thread of Deno's blocking pool and a round of the event loop.
    const rmdirs = options.thenRemove
      ? this.#dirs.map((path) => ({ kind: "rmdir", path }) as const)
      : [];
    const { read, after } = await readAhead(
      (read) => {
        this.readUsage(read);
        this.readOomKilled(read);
      },
      this.#files,
      rmdirs,
    );
    // Those still busy (or failing otherwise) are left to remove(), its retries and its errors.
    this.#removed = new Set(
      this.#dirs.filter((_, i) => i < after.length && rmdirDone(after[i]!.error)),
    );
    this.#final = this.#usage(read);
    return { usage: { ...this.#final }, oomKilled: this.readOomKilled(read) };
  }

  async remove(): Promise<void> {
    if (!this.#final) this.#final = this.usage();
    const left = this.#dirs.filter((dir) => !this.#removed.has(dir));
    if (left.length > 0) await removeCgroupDirs(left, undefined, this.#files);
  }

  #usage(read: FileReader): Usage {
    const usage = this.readUsage(read);
    this.#peak = Math.max(this.#peak, usage.memoryBytes, usage.memoryPeakBytes);
    return { ...usage, memoryPeakBytes: this.#peak };
  }
}
