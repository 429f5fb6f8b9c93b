/** Waiting for a job to end, through the API as a client would. */
import { jobworker } from "../../proto/service.ts";
import type { JobClient } from "../../cli/client.ts";
import { waitFor } from "./host_procs.ts";

/** Resolves once job `id` has ended (any final status); fails after `ms`. */
export async function waitJobEnded(client: JobClient, id: string, ms = 60_000): Promise<void> {
  await waitFor(
    `job ${id} to end`,
    async () => (await client.getJob(id)).status >= jobworker.JobStatus.COMPLETED,
    ms,
  );
}
