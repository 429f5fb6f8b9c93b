/** Waiting for a job to end, through the API as a client would. */
import { jobworker } from "../../proto/service.ts";

/** What waiting needs of a client: the CLI's JobClient and the tests' plain ApiCalls both have it. */
export interface JobGetter {
  getJob(id: string): Promise<jobworker.Job>;
}

/**
 * Polls GetJob every `pollMs` until job `id` has ended (any final status) and returns it; fails
 * after `ms`, naming the status it was still in.
 */
export async function waitJobEnded(
  client: JobGetter,
  id: string,
  ms = 60_000,
  pollMs = 25,
): Promise<jobworker.Job> {
  const deadline = performance.now() + ms;
  for (;;) {
    const job = await client.getJob(id);
    if (job.status >= jobworker.JobStatus.COMPLETED) return job;
    if (performance.now() > deadline) {
      throw new Error(
        `timed out waiting for job ${id} to end: still ${
          jobworker.JobStatus[job.status]
        } after ${ms} ms`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}
