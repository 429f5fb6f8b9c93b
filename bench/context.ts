/** What every bench section gets: the worker under test, a client of it, and the run's size. */
import type { JobClient } from "../cli/client.ts";
import type { WorkerProcess } from "../tests/helpers/worker.ts";

export interface BenchContext {
  /** A real `jobworker serve` (LOG_FORMAT=json), started for this run. */
  worker: WorkerProcess;
  certDir: string;
  /** An admin client of it. */
  client: JobClient;
  /** `make bench QUICK=1`: fewer rounds, smaller streams, the slowest rows left out. */
  quick: boolean;
}
