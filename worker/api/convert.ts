/** Domain job → protobuf Job. */
import { google, jobworker } from "../../proto/service.ts";
import type { Usage } from "../cgroups/types.ts";
import { END_STATES, type Job } from "../jobs/job.ts";

export function timestamp(date: Date | undefined): google.protobuf.Timestamp | null {
  if (!date) return null;
  const ms = date.getTime();
  return google.protobuf.Timestamp.create({
    seconds: Math.floor(ms / 1000),
    nanos: (ms % 1000) * 1_000_000,
  });
}

export function toProtoJob(job: Job, usage: Usage): jobworker.Job {
  const ended = END_STATES.includes(job.status);
  return jobworker.Job.create({
    id: job.id,
    command: job.spec.command,
    args: job.spec.args,
    status: jobworker.JobStatus[job.status],
    maxCPU: job.spec.limits.cpuPercent,
    maxMemory: job.spec.limits.memoryMiB,
    maxIOBPS: job.spec.limits.ioBps,
    maxPids: job.spec.limits.pids,
    exitCode: ended ? job.exit?.exitCode ?? -1 : 0,
    signal: job.exit?.signal ?? 0,
    oomKilled: job.oomKilled,
    reason: job.reason,
    owner: job.owner,
    createTime: timestamp(job.createTime),
    startTime: timestamp(job.startTime),
    endTime: timestamp(job.endTime),
    usage: jobworker.ResourceUsage.create({
      cpuUsec: usage.cpuUsec,
      memoryBytes: usage.memoryBytes,
      memoryPeakBytes: usage.memoryPeakBytes,
      ioReadBytes: usage.ioReadBytes,
      ioWriteBytes: usage.ioWriteBytes,
      pids: usage.pids,
      cpuThrottledCount: usage.cpuThrottledCount ?? 0,
      cpuThrottledUsec: usage.cpuThrottledUsec ?? 0,
    }),
    outputBytes: job.outputBytes,
    outputTruncated: job.outputTruncated,
    env: job.spec.env,
    workDir: job.spec.workDir,
    timeoutSeconds: job.spec.timeoutSeconds,
    requestId: job.spec.requestId,
  });
}
