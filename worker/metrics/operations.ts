/**
 * The worker's optional metrics, wired up in one place for `serve`: nothing runs unless
 * JOB_WORKER_METRICS_ADDR is set.
 */
import { log } from "../log/logger.ts";
import type { JobEvents } from "../jobs/events.ts";
import type { RpcObserver } from "../api/instrument.ts";
import {
  type Http2SessionsView,
  type InitPoolView,
  type JobTable,
  WorkerMetrics,
} from "./metrics.ts";
import type { InitPoolEvents } from "../runtime/init_pool.ts";
import { serveMetrics } from "./http.ts";
import { watchEventLoop } from "./event_loop.ts";

export interface Metrics {
  /** For the job manager's options (undefined: metrics are off). */
  jobEvents: JobEvents | undefined;
  /** For the gRPC server's handlers. */
  rpcObservers: RpcObserver[];
  /** For the init pool (undefined: metrics are off). */
  poolEvents: InitPoolEvents | undefined;
  watch(jobs: JobTable): void;
  watchPool(pool: InitPoolView): void;
  watchSessions(sessions: Http2SessionsView): void;
  stop(): Promise<void>;
}

export async function startMetrics(address: string | undefined): Promise<Metrics> {
  if (address === undefined) {
    return {
      jobEvents: undefined,
      rpcObservers: [],
      poolEvents: undefined,
      watch: () => {},
      watchPool: () => {},
      watchSessions: () => {},
      stop: async () => {},
    };
  }
  const metrics = new WorkerMetrics();
  const endpoint = await serveMetrics(address, metrics);
  const stopWatching = watchEventLoop((s) => metrics.loopDelayed(s));
  const host = address.slice(0, address.lastIndexOf(":"));
  log.info("metrics listening", { address: `${host}:${endpoint.port}`, port: endpoint.port });
  return {
    jobEvents: metrics,
    rpcObservers: [metrics],
    poolEvents: metrics,
    watch: (jobs) => metrics.watch(jobs),
    watchPool: (pool) => metrics.watchPool(pool),
    watchSessions: (sessions) => metrics.watchSessions(sessions),
    stop: async () => {
      stopWatching();
      await endpoint.stop();
    },
  };
}
