/**
 * The cgroups the job manager sees, with the init pool in front: a job's cgroup is made from a
 * waiting init's slot when one waits there (InitPool.adopt: limits written, directory renamed, the
 * init already inside), else created as usual. Everything else goes to the cgroup manager as is.
 */
import type { CgroupManager, JobCgroup, Limits } from "../cgroups/types.ts";
import type { InitPool } from "./init_pool.ts";

export class PoolCgroups implements CgroupManager {
  constructor(private readonly cgroups: CgroupManager, private readonly pool: InitPool) {}

  get version(): 1 | 2 {
    return this.cgroups.version;
  }

  describe(): string {
    return this.cgroups.describe();
  }

  async create(jobId: string, limits: Limits): Promise<JobCgroup> {
    const adoption = await this.pool.adopt(jobId, limits);
    if (adoption.kind === "adopted") return adoption.cgroup;
    const cgroup = await this.cgroups.create(jobId, limits);
    if (adoption.kind === "failed") this.pool.adoptFailed(adoption.error);
    return cgroup;
  }

  cleanupStale(keep?: ReadonlySet<string>): Promise<number> {
    return this.cgroups.cleanupStale(keep);
  }

  open(jobId: string): JobCgroup {
    return this.cgroups.open(jobId);
  }

  prepare(): void {
    this.cgroups.prepare?.();
  }
}
